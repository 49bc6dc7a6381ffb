// Which CPU binary decodes fastest on this node, measured rather than assumed. The rule "one thread:
// the prebuilt; two or more: the native build" came from one AMX machine; on a CPU without AMX the
// native build was 1.5× faster at one thread. So on a CPU-only node the hive decodes a few dozen
// tokens of a generated model with every CPU binary the node can run — each CPU variant of
// node-llama-cpp's prebuilt (worker/cpu-variants.ts) and the node's own build when there is one — at
// the thread count CPU workers get by default, and CPU workers started at that count load the winner.
//
// How it measures (docs/gpu-nodes.md, "CPU calibration"):
// - each run is its own process (`hive-agent calibrate-run`) at the lowest priority: a variant that
//   crashes or dies of SIGILL is recorded as unusable and the hive carries on;
// - candidates are interleaved over a few rounds and each gets the median of its runs, so a burst of
//   other load hurts all of them alike rather than one;
// - never next to a generating (or loading) worker: a run that sees one starts is killed and done
//   again once the workers are idle; workers started before the result use loadLlama's rule;
// - the result is kept in the hive home, keyed by node-llama-cpp's version, the candidates (the
//   native build's stamp included), the CPU's flags, the thread count and the measurement itself; a
//   missing, corrupt or stale file is measured again. A finished native build changes the candidates,
//   so it is measured against the others as soon as it is ready;
// - then the winner runs once more per round with one stream, two streams batched and two streams
//   one at a time (each round starting one run further along): where the two streams' aggregate is
//   clearly higher decoded one at a time than batched (llama.cpp's
//   small-batch kernels lose on some CPUs), CPU workers decode their streams one at a time
//   (worker/decode-batching.ts).
// GPU workers are out of scope: their speed is the GPU's, and their binary is the GPU backend's.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { setPriority } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import path from "node:path";
import { type CalibrationResult, type CpuCalibration, type DecodeBatching, type NodeHardware } from "../protocol";
import type { Logger } from "../util/log";
import { childEnv } from "../util/env";
import { CALIBRATION_MODEL_VERSION } from "../calibration/model";
import { CALIBRATION_RESULT_PREFIX } from "../calibration/measure";
import { prebuiltCpuVariants } from "../worker/cpu-variants";
import { decideDecodeBatching } from "../worker/decode-batching";
import { cpuFlags } from "../worker/cpu-features";
import { checkNativeBuild, installedPackageDir, isCpuBinary, type CpuBinary } from "../worker/native-build";

export type CalibrationMode = "auto" | "off";
export const CALIBRATION_MODES: readonly CalibrationMode[] = ["auto", "off"];

/** The result file in the hive home. */
export const CALIBRATION_FILE = "cpu-calibration.json";

export interface CalibratorOptions {
  home: string;
  mode: CalibrationMode;
  /** The hive-agent program (runs `calibrate-run`). */
  agentScript: string;
  nativeDir: string;
  variantsDir: string;
  /** Only these prebuilt CPU variants (default: all the prebuilt ships; those this CPU cannot run fail their first run). */
  variants?: string[];
  /** Rounds over all candidates (median of them), tokens timed per run. */
  rounds: number;
  tokens: number;
  /** A worker that is generating or loading right now, in words; undefined when all are idle. */
  busy: () => Promise<string | undefined>;
  log: Logger;
}

export const DEFAULT_CALIBRATION = { rounds: 3, tokens: 48 };
const WARMUP_TOKENS = 4;
const RUN_TIMEOUT_MS = 180_000;
const BUSY_POLL_MS = 250;
const IDLE_POLL_MS = 1000;

interface CacheFile {
  key: string;
  threads: number;
  measured_at: number;
  winner?: string;
  results: CalibrationResult[];
  /** The winner's one-stream and two-stream figures from the streams check (the decision follows from them). */
  streams_check?: StreamsCheck;
}

/** The winner's medians: one stream, and two streams batched (together) and one at a time. */
interface StreamsCheck {
  single_tokens_per_second: number;
  two_streams_tokens_per_second: number;
  two_streams_one_at_a_time_tokens_per_second: number;
}

/** The runs of the streams check: streams, and how two share decodes. */
const STREAM_RUNS = [
  { streams: 1 },
  { streams: 2, decodeBatching: "together" },
  { streams: 2, decodeBatching: "one-at-a-time" },
] as const;
type StreamRun = (typeof STREAM_RUNS)[number];

type RunOutcome = { ok: true; tokensPerSecond: number } | { ok: false; error: string } | { interrupted: string };

export class Calibrator {
  private current: CpuCalibration = { state: "skipped", detail: "not checked yet" };
  /** The last finished measurement: workers keep using its winner while a new one runs. */
  private done?: CacheFile;
  private key?: string;
  private abort?: AbortController;
  private running?: Promise<void>;

  constructor(private readonly opts: CalibratorOptions) {}

  status(): CpuCalibration {
    return this.current;
  }

  /** The binary a CPU worker of `threads` threads should load, when calibration measured that thread count. */
  binaryFor(threads: number): CpuBinary | undefined {
    const winner = this.done?.winner;
    return this.done && this.done.threads === threads && winner && isCpuBinary(winner) ? winner : undefined;
  }

  /** How CPU workers of `threads` threads share decodes between streams, when calibration measured that thread count. */
  decodeBatchingFor(threads: number): DecodeBatching | undefined {
    return this.binaryFor(threads) ? decodeBatchingOf(this.done!) : undefined;
  }

  /** The candidates on this node now: the prebuilt's CPU variants (as filtered), and the native build when it is ready. */
  candidates(): CpuBinary[] {
    const shipped = prebuiltCpuVariants(installedPackageDir());
    const wanted = this.opts.variants;
    const variants = wanted ? shipped.filter((v) => wanted.includes(v)) : shipped;
    return [
      ...variants.map((v): CpuBinary => `prebuilt:${v}`),
      ...(checkNativeBuild(this.opts.nativeDir).ok ? (["native"] as const) : []),
    ];
  }

  /**
   * Decides, from the node's hardware and the workers' default thread count, whether a measurement is
   * due, and starts it in the background. Cheap when nothing changed; call it again whenever the
   * candidates may have changed (a native build finished).
   */
  ensure(hardware: Pick<NodeHardware, "backends">, threads: number): void {
    const skip = (detail: string) => {
      this.stopRun();
      this.key = undefined;
      this.current = { state: "skipped", detail };
    };
    if (this.opts.mode === "off")
      return skip(
        "turned off (--calibrate off); CPU workers use the built-in rule (prebuilt at 1 thread, the native build from 2)",
      );
    const gpus = hardware.backends.filter((b) => b !== "cpu");
    if (gpus.length) return skip(`workers run on the GPU (${gpus.join(", ")}); calibration measures CPU binaries only`);
    let candidates: CpuBinary[];
    let key: string;
    try {
      candidates = this.candidates();
      key = calibrationKey(candidates, threads, this.opts);
    } catch (e) {
      return skip(`cannot list the CPU binaries: ${(e as Error).message}`);
    }
    if (candidates.length < 2)
      return skip(`only ${candidates[0] ?? "no binary"} can run CPU workers here: nothing to choose`);
    if (key === this.key) return;
    this.stopRun();
    this.key = key;
    const cached = readCache(path.join(this.opts.home, CALIBRATION_FILE));
    if (cached && cached.key === key) {
      this.done = cached;
      this.current = statusOf(cached);
      this.opts.log.info(
        `cached result for ${threads} thread(s) from ${new Date(cached.measured_at).toISOString()}: ${summary(cached)}`,
      );
      return;
    }
    if (cached)
      this.opts.log.info(
        "the cached result is for another node-llama-cpp version, binary set, CPU or thread count; measuring again",
      );
    const abort = new AbortController();
    this.abort = abort;
    this.current = {
      state: "measuring",
      detail: `measuring ${candidates.length} CPU binaries at ${threads} thread(s) in the background`,
      threads,
    };
    this.opts.log.info(
      `measuring ${candidates.join(", ")} at ${threads} thread(s), ${this.opts.rounds} rounds of ${this.opts.tokens} tokens`,
    );
    this.running = this.measure(key, candidates, threads, abort.signal).catch((e) => {
      if (abort.signal.aborted) return;
      this.current = {
        state: "failed",
        detail: `calibration failed: ${(e as Error).message}; CPU workers use the built-in rule`,
      };
      this.opts.log.warn(`calibration failed: ${(e as Error).message}`);
    });
  }

  /** Stops a measurement in progress (the hive is shutting down); the next start measures again. */
  async stop(): Promise<void> {
    this.stopRun();
    await this.running;
  }

  private stopRun(): void {
    this.abort?.abort();
    this.abort = undefined;
  }

  private async measure(key: string, candidates: CpuBinary[], threads: number, signal: AbortSignal): Promise<void> {
    const runs = new Map<CpuBinary, number[]>(candidates.map((c) => [c, []]));
    const errors = new Map<CpuBinary, string>();
    for (let round = 0; round < this.opts.rounds; round++) {
      // Interleaved, each round starting one further along: no candidate always runs first or last.
      const order = candidates.map((_, i) => candidates[(i + round) % candidates.length]).filter((c) => !errors.has(c));
      for (const binary of order) {
        const outcome = await this.runWhenIdle(binary, threads, signal);
        if (!outcome) return;
        if (outcome.ok) runs.get(binary)!.push(outcome.tokensPerSecond);
        else {
          errors.set(binary, outcome.error);
          this.opts.log.info(`${binary} is unusable here: ${outcome.error}`);
        }
      }
    }
    const results: CalibrationResult[] = candidates.map((binary) => {
      const error = errors.get(binary);
      const r = runs.get(binary)!;
      return error ? { binary, error } : { binary, tokens_per_second: median(r), runs: r };
    });
    const best = results
      .filter((r) => r.tokens_per_second !== undefined)
      .sort((a, b) => b.tokens_per_second! - a.tokens_per_second!)[0];
    const streamsCheck = best ? await this.measureStreams(best.binary as CpuBinary, threads, signal) : undefined;
    if (signal.aborted) return;
    const file: CacheFile = {
      key,
      threads,
      measured_at: Date.now(),
      ...(best ? { winner: best.binary } : {}),
      results,
      ...(streamsCheck ? { streams_check: streamsCheck } : {}),
    };
    writeCache(path.join(this.opts.home, CALIBRATION_FILE), file);
    this.done = file;
    this.current = statusOf(file);
    if (best)
      this.opts.log.info(
        `${best.binary} wins at ${threads} thread(s): ${summary(file)}; CPU workers of ${threads} thread(s) load it from now on`,
      );
    else this.opts.log.warn(`no CPU binary ran (${summary(file)}); CPU workers use the built-in rule`);
  }

  /**
   * The winner with one stream, and with two streams batched and one at a time, in rounds (each round
   * starting one run further along, so other load hits all three alike); undefined when a run fails
   * (workers then batch).
   */
  private async measureStreams(
    binary: CpuBinary,
    threads: number,
    signal: AbortSignal,
  ): Promise<StreamsCheck | undefined> {
    const figures = STREAM_RUNS.map(() => [] as number[]);
    for (let round = 0; round < this.opts.rounds; round++) {
      for (let k = 0; k < STREAM_RUNS.length; k++) {
        const i = (k + round) % STREAM_RUNS.length;
        const run: StreamRun = STREAM_RUNS[i];
        const outcome = await this.runWhenIdle(binary, threads, signal, run);
        if (!outcome) return undefined;
        if (!outcome.ok) {
          this.opts.log.warn(
            `${binary} with ${run.streams} stream(s) did not run (${outcome.error}); workers batch their streams`,
          );
          return undefined;
        }
        figures[i].push(outcome.tokensPerSecond);
      }
    }
    return {
      single_tokens_per_second: median(figures[0]),
      two_streams_tokens_per_second: median(figures[1]),
      two_streams_one_at_a_time_tokens_per_second: median(figures[2]),
    };
  }

  /**
   * One run, started once the workers are idle and started again when a worker got busy during it;
   * undefined when the measurement was aborted.
   */
  private async runWhenIdle(
    binary: CpuBinary,
    threads: number,
    signal: AbortSignal,
    run?: StreamRun,
  ): Promise<Exclude<RunOutcome, { interrupted: string }> | undefined> {
    for (;;) {
      await this.waitIdle(signal);
      if (signal.aborted) return undefined;
      const outcome = await this.runOnce(binary, threads, signal, run);
      if (signal.aborted) return undefined;
      if (!("interrupted" in outcome)) return outcome;
      this.opts.log.info(`run of ${binary} stopped (${outcome.interrupted}); it runs again once workers are idle`);
    }
  }

  /** Returns once no worker is generating or loading (or on abort), checking every IDLE_POLL_MS. */
  private async waitIdle(signal: AbortSignal): Promise<void> {
    for (;;) {
      if (signal.aborted) return;
      const busy = await this.opts.busy();
      if (!busy) {
        if (this.current.state === "waiting")
          this.current = {
            ...this.current,
            state: "measuring",
            detail: this.current.detail.replace(/^waiting[^;]*; /, ""),
          };
        return;
      }
      if (this.current.state !== "waiting") {
        this.current = { ...this.current, state: "waiting", detail: `waiting: ${busy}; ${this.current.detail}` };
        this.opts.log.info(`waiting: ${busy}; runs resume once workers are idle`);
      }
      // An abort (hive stopping, key changed) ends the wait at once; the loop then returns.
      await sleep(IDLE_POLL_MS, undefined, { signal }).catch(() => undefined);
    }
  }

  /** One run of one binary in its own process at the lowest priority; killed when a worker gets busy meanwhile. */
  private runOnce(
    binary: CpuBinary,
    threads: number,
    signal: AbortSignal,
    run: StreamRun = STREAM_RUNS[0],
  ): Promise<RunOutcome> {
    return new Promise((resolve) => {
      const args = [
        this.opts.agentScript,
        "calibrate-run",
        "--binary",
        binary,
        "--threads",
        String(threads),
        "--tokens",
        String(this.opts.tokens),
        "--warmup",
        String(WARMUP_TOKENS),
        "--streams",
        String(run.streams),
        ...("decodeBatching" in run ? ["--decode-batching", run.decodeBatching] : []),
        "--model-dir",
        this.opts.home,
        "--variants-dir",
        this.opts.variantsDir,
        "--native-dir",
        this.opts.nativeDir,
      ];
      // As a worker runs: one libuv thread (test/bench/FINDINGS.md §2a), the same environment basics.
      const child = spawn(process.execPath, args, {
        env: childEnv(process.env, { UV_THREADPOOL_SIZE: "1" }),
        stdio: ["ignore", "pipe", "pipe"],
      });
      try {
        if (child.pid) setPriority(child.pid, 19);
      } catch {
        // not allowed here: the run still measures, at normal priority
      }
      let out = "";
      let interrupted: string | undefined;
      let timedOut = false;
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      child.stderr.on("data", (d: Buffer) => (out += d.toString()));
      const kill = () => child.kill("SIGKILL");
      signal.addEventListener("abort", kill, { once: true });
      const timer = setTimeout(() => {
        timedOut = true;
        kill();
      }, RUN_TIMEOUT_MS);
      // A worker that starts generating meanwhile makes the figure wrong (both would share the cores).
      let polling = false;
      const poll = setInterval(() => {
        if (polling) return;
        polling = true;
        void this.opts.busy().then((busy) => {
          polling = false;
          if (busy && child.exitCode === null) {
            interrupted = busy;
            kill();
          }
        });
      }, BUSY_POLL_MS);
      child.on("error", (e) => finish({ ok: false, error: e.message }));
      child.on("close", (code, sig) => {
        if (interrupted) return finish({ interrupted });
        const line = out.split("\n").find((l) => l.startsWith(CALIBRATION_RESULT_PREFIX));
        if (code === 0 && line) {
          try {
            const r = JSON.parse(line.slice(CALIBRATION_RESULT_PREFIX.length)) as { tokens_per_second: number };
            if (r.tokens_per_second > 0) return finish({ ok: true, tokensPerSecond: r.tokens_per_second });
          } catch {
            // falls through: an unreadable result is a failed run
          }
        }
        if (timedOut) return finish({ ok: false, error: `did not finish within ${RUN_TIMEOUT_MS / 1000} s` });
        const why = sig
          ? `killed by ${sig}${sig === "SIGILL" ? " (an instruction this CPU does not have)" : ""}`
          : `exit ${code}`;
        finish({ ok: false, error: `${why}: ${lastLines(out)}` });
      });
      let finished = false;
      function finish(o: RunOutcome) {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        clearInterval(poll);
        signal.removeEventListener("abort", kill);
        resolve(o);
      }
    });
  }
}

/** What must match for a stored result to be used: the binaries, the CPU, the thread count and the method. */
export function calibrationKey(
  candidates: CpuBinary[],
  threads: number,
  opts: Pick<CalibratorOptions, "nativeDir" | "rounds" | "tokens">,
): string {
  const version = (
    JSON.parse(readFileSync(path.join(installedPackageDir(), "package.json"), "utf8")) as { version: string }
  ).version;
  const cpu = createHash("sha256")
    .update([...cpuFlags()].sort().join(" "))
    .digest("hex")
    .slice(0, 16);
  // The native build's own stamp: a rebuild with other options is another candidate.
  let native: string | undefined;
  if (candidates.includes("native")) {
    const check = checkNativeBuild(opts.nativeDir);
    native = check.ok
      ? createHash("sha256").update(JSON.stringify(check.cmakeOptions)).digest("hex").slice(0, 16)
      : undefined;
  }
  return JSON.stringify({
    node_llama_cpp: version,
    candidates: [...candidates].sort(),
    native,
    cpu,
    threads,
    model: CALIBRATION_MODEL_VERSION,
    // 3: the winner's two-stream check, batched and one at a time (a result from before it has no streams_check).
    method: 3,
    rounds: opts.rounds,
    tokens: opts.tokens,
  });
}

function readCache(file: string): CacheFile | undefined {
  try {
    const x = JSON.parse(readFileSync(file, "utf8")) as Partial<CacheFile>;
    const resultsOk =
      Array.isArray(x.results) &&
      x.results.every(
        (r) =>
          typeof r?.binary === "string" && (typeof r.tokens_per_second === "number" || typeof r.error === "string"),
      );
    if (typeof x.key !== "string" || typeof x.threads !== "number" || typeof x.measured_at !== "number" || !resultsOk)
      return undefined;
    if (x.winner !== undefined && !x.results!.some((r) => r.binary === x.winner && r.tokens_per_second !== undefined))
      return undefined;
    const check = x.streams_check;
    if (
      check !== undefined &&
      ![
        check?.single_tokens_per_second,
        check?.two_streams_tokens_per_second,
        check?.two_streams_one_at_a_time_tokens_per_second,
      ].every((n) => typeof n === "number")
    )
      return undefined;
    return x as CacheFile;
  } catch {
    return undefined; // missing or corrupt: measured again
  }
}

function writeCache(file: string, data: CacheFile): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(data, null, 2) + "\n", { mode: 0o600 });
  renameSync(tmp, file);
}

/** How CPU workers share decodes by this result: the faster way in its streams check; none measured: undefined. */
function decodeBatchingOf(f: CacheFile): DecodeBatching | undefined {
  const check = f.streams_check;
  return check
    ? decideDecodeBatching(check.two_streams_tokens_per_second, check.two_streams_one_at_a_time_tokens_per_second)
    : undefined;
}

function statusOf(f: CacheFile): CpuCalibration {
  const winner = f.results.find((r) => r.binary === f.winner);
  const base = { threads: f.threads, results: f.results, measured_at: f.measured_at };
  if (!winner)
    return {
      state: "failed",
      detail: `no CPU binary ran here (${summary(f)}); CPU workers use the built-in rule`,
      ...base,
    };
  const check = f.streams_check;
  const streams = check
    ? decodeBatchingOf(f) === "one-at-a-time"
      ? `; 2 streams give ${check.two_streams_one_at_a_time_tokens_per_second} tok/s decoded one at a time against ${check.two_streams_tokens_per_second} batched (one stream: ${check.single_tokens_per_second}), so they decode one at a time`
      : `; 2 streams decode together (${check.two_streams_tokens_per_second} tok/s against ${check.two_streams_one_at_a_time_tokens_per_second} one at a time; one stream: ${check.single_tokens_per_second})`
    : "";
  return {
    state: "ready",
    detail: `${winner.binary} is fastest at ${f.threads} thread(s) (${winner.tokens_per_second} tok/s); CPU workers of ${f.threads} thread(s) use it${streams}`,
    winner: winner.binary,
    winner_tokens_per_second: winner.tokens_per_second,
    ...(check
      ? {
          two_streams_tokens_per_second: check.two_streams_tokens_per_second,
          two_streams_one_at_a_time_tokens_per_second: check.two_streams_one_at_a_time_tokens_per_second,
        }
      : {}),
    ...(check ? { decode_batching: decodeBatchingOf(f) } : {}),
    ...base,
  };
}

/** "prebuilt:zen4 412 tok/s, native 388 tok/s, prebuilt:x64 unusable; 2 streams: 530 tok/s, together". */
function summary(f: CacheFile): string {
  const binaries = f.results
    .map((r) =>
      r.tokens_per_second !== undefined ? `${r.binary} ${r.tokens_per_second} tok/s` : `${r.binary} unusable`,
    )
    .join(", ");
  const check = f.streams_check;
  return check
    ? `${binaries}; 2 streams: ${check.two_streams_tokens_per_second} tok/s together, ${check.two_streams_one_at_a_time_tokens_per_second} one at a time (1 stream ${check.single_tokens_per_second}): ${decodeBatchingOf(f)}`
    : binaries;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : Math.round(((s[m - 1] + s[m]) / 2) * 10) / 10;
}

/** The last few lines a failed run printed, for the log and the result (node-llama-cpp says why it did not load). */
function lastLines(out: string): string {
  const lines = out
    .replace(/\x1b\[[0-9;]*[A-Za-z]/g, "")
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
  return lines.slice(-3).join(" | ").slice(0, 500) || "no output";
}
