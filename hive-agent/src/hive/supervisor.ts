// Worker supervision: spawns one `hive-agent worker` process per model, follows it from loading to
// ready, keeps its state fresh (health monitor), stops idle ones, and reports crashes.

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import {
  RbeeError,
  WORKER_PATHS,
  WorkerHealthSchema,
  parseReply,
  type ErrorCode,
  type LoadFailedCallback,
  type ReadyCallback,
  type WorkerInfo,
  type WorkerState,
  type DecodeBatching,
} from "../protocol";
import type { Logger } from "../util/log";
import { callJson } from "../util/http";
import { childEnv } from "../util/env";
import type { Reservation } from "./placement";
import { LISTENING_PREFIX, type SpawnPlan } from "../worker/spawn-plan";
import { DEVICE_ENV } from "./capabilities";

/** "vulkan:0", "cuda:0+1", "cpu" — for log lines. */
function where(plan: SpawnPlan): string {
  return plan.backend === "cpu" ? "cpu" : `${plan.backend}:${plan.placement.devices.join("+")}`;
}

export interface SupervisorOptions {
  /** Path of the hive-agent program to run as `worker` (the bundle itself). */
  agentScript: string;
  /** The hive's own address, which workers call back on. */
  hiveUrl: () => string;
  /** The address a new worker listens on: its socket in the hive home (TCP port 0 without sockets). */
  workerAddress: (id: string) => string;
  healthIntervalMs: number;
  /** Removes a worker after this many failed health checks in a row. */
  maxHealthFailures: number;
  gracefulShutdownMs: number;
  loadTimeoutMs: number;
  /** A busy worker whose last token is older than this counts as a failed health check. */
  stallLimitMs?: number;
}

export const DEFAULT_STALL_LIMIT_MS = 60_000;

interface Worker {
  id: string;
  plan: SpawnPlan;
  apiKey: string;
  /** The worker's own secret for its ready/load-failed callbacks (never the hive token). */
  callbackKey: string;
  proc: ChildProcess;
  url: string;
  state: WorkerState;
  progress: number;
  slotsBusy: number;
  lastActivity: number;
  lastTokensPerSecond?: number;
  healthFailures: number;
  startedAt: number;
  /** When the worker reported ready (its memory is allocated from then on). */
  readyAt?: number;
  gpuDevices?: string[];
  /** The CPU binary the worker loaded, as it reported (CPU workers). */
  cpuBinary?: string;
  /** How its concurrent streams share decodes, as it reported. */
  decodeBatching?: DecodeBatching;
  exited: Promise<void>;
}

/** Why a worker is gone, kept so a keeper asking about it learns what happened. */
export interface WorkerFailure {
  code: ErrorCode;
  message: string;
  at: number;
}

export class Supervisor {
  private workers = new Map<string, Worker>();
  private failures = new Map<string, WorkerFailure>();
  private monitor?: NodeJS.Timeout;

  constructor(
    private readonly opts: SupervisorOptions,
    private readonly log: Logger,
  ) {}

  start() {
    this.monitor = setInterval(() => void this.checkAll(), this.opts.healthIntervalMs);
    this.monitor.unref();
  }

  /** Starts a worker process; resolves once it listens (its URL is known), before the model is loaded. */
  async spawn(plan: SpawnPlan): Promise<WorkerInfo> {
    const id = `w-${randomUUID().slice(0, 8)}`;
    const apiKey = randomBytes(24).toString("base64url");
    const callbackKey = randomBytes(24).toString("base64url");
    const address = this.opts.workerAddress(id);
    // UV_THREADPOOL_SIZE=1: node-llama-cpp runs every decode and sampling step as a libuv job; with one
    // pool thread they stay on one OS thread instead of hopping (test/bench/FINDINGS.md: 1.3x at 1 thread).
    // Only what the worker needs from the hive's environment (util/env.ts): no HF_TOKEN, no hive token.
    const env: NodeJS.ProcessEnv = childEnv(process.env, {
      UV_THREADPOOL_SIZE: "1",
      RBEE_WORKER_KEY: apiKey,
      RBEE_WORKER_CALLBACK_KEY: callbackKey,
    });
    // One process per GPU: the worker sees only the device(s) it was placed on, so it never spills
    // onto another user's GPU. CUDA numbers GPUs as nvidia-smi does (PCI order) only when asked.
    const pins = plan.placement.pins;
    if (plan.backend === "cuda") env.CUDA_DEVICE_ORDER = "PCI_BUS_ID";
    const pinVar = DEVICE_ENV[plan.backend];
    if (pinVar && pins.length && pins.every((p) => p !== undefined)) env[pinVar] = pins.join(",");
    const args = [
      this.opts.agentScript,
      "worker",
      "--id",
      id,
      "--model-path",
      plan.modelPath,
      "--model-ref",
      plan.modelRef,
      "--backend",
      plan.backend,
      "--device",
      String(plan.placement.devices[0] ?? 0),
      "--context-size",
      String(plan.contextSize),
      "--slots",
      String(plan.slots),
      "--threads",
      String(plan.threads),
      "--hive-url",
      this.opts.hiveUrl(),
      "--listen",
      address,
      ...(plan.batchSize ? ["--batch-size", String(plan.batchSize)] : []),
      ...(plan.nativeDir ? ["--native-dir", plan.nativeDir] : []),
      ...(plan.cpuBinary ? ["--cpu-binary", plan.cpuBinary] : []),
      ...(plan.decodeBatching ? ["--decode-batching", plan.decodeBatching] : []),
      ...(plan.variantsDir ? ["--variants-dir", plan.variantsDir] : []),
    ];
    // stdin is a pipe the worker watches: if the hive dies, the worker sees EOF and exits.
    const proc = spawn(process.execPath, args, { env, stdio: ["pipe", "pipe", "inherit"] });
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    const w: Worker = {
      id,
      plan,
      apiKey,
      callbackKey,
      proc,
      url: "",
      state: "loading",
      progress: 0,
      slotsBusy: 0,
      lastActivity: Date.now(),
      healthFailures: 0,
      startedAt: Date.now(),
      exited,
    };
    this.workers.set(id, w);

    proc.once("exit", (code, signal) => this.onExit(w, code, signal));
    const listening = await new Promise<string>((resolve, reject) => {
      const lines = createInterface({ input: proc.stdout! });
      lines.on("line", (line) => {
        if (line.startsWith(LISTENING_PREFIX)) resolve(line.slice(LISTENING_PREFIX.length));
      });
      proc.once("exit", () =>
        reject(
          this.failures.get(id)
            ? new RbeeError(this.failures.get(id)!.code, this.failures.get(id)!.message)
            : new RbeeError("LOADING_FAILED", "the worker exited before it listened"),
        ),
      );
    });
    // The worker listens where it was told; on TCP only the port is its choice.
    if (
      listening !== address &&
      !(address.startsWith("http://127.0.0.1:") && /^http:\/\/127\.0\.0\.1:\d+$/.test(listening))
    ) {
      w.state = "stopping";
      proc.kill("SIGKILL");
      throw new RbeeError("LOADING_FAILED", `worker ${id} announced ${listening} instead of ${address}`);
    }
    w.url = listening;
    this.log.info(
      `worker ${id} started (pid ${proc.pid}) for ${plan.modelRef} on ${where(plan)}, listening on ${w.url}`,
    );
    return this.info(w);
  }

  /** The secret a worker's callbacks must carry; undefined for an unknown worker. */
  callbackKey(id: string): string | undefined {
    return this.workers.get(id)?.callbackKey;
  }

  /** A worker's callback, already authenticated with its callbackKey. Its address never changes. */
  onReady(cb: ReadyCallback) {
    const w = this.workers.get(cb.worker_id);
    if (!w) throw new RbeeError("WORKER_NOT_FOUND", `no worker ${cb.worker_id} on this hive`);
    if (w.state === "loading") w.state = "idle";
    w.progress = 1;
    w.lastActivity = Date.now();
    w.readyAt = Date.now();
    w.gpuDevices = cb.gpu_devices;
    w.cpuBinary = cb.cpu_binary;
    w.decodeBatching = cb.decode_batching;
    // What the load really took replaces the estimate, spread over the devices as the estimate was.
    const used = cb.vram_used_bytes;
    if (used && w.plan.backend !== "cpu") {
      const est = w.plan.placement.bytes.reduce((a, b) => a + b, 0) || 1;
      w.plan.placement.bytes = w.plan.placement.bytes.map((b) => Math.ceil((used * b) / est));
    }
    this.log.info(
      `worker ${w.id} ready after ${Date.now() - w.startedAt} ms${cb.cpu_binary ? ` on the ${cb.cpu_binary} binary` : ""}${
        cb.decode_batching === "one-at-a-time" ? ", decoding its streams one at a time" : ""
      }`,
    );
  }

  onLoadFailed(cb: LoadFailedCallback) {
    const w = this.workers.get(cb.worker_id);
    if (!w) throw new RbeeError("WORKER_NOT_FOUND", `no worker ${cb.worker_id} on this hive`);
    this.failures.set(w.id, { code: cb.code, message: cb.message, at: Date.now() });
    this.log.warn(`worker ${w.id} failed to load: ${cb.message}`);
  }

  /**
   * What every live worker holds or has reserved. `snapshotAt` is when the hardware figures were read:
   * a worker that was ready before then is already counted in the driver's free memory.
   */
  reservations(snapshotAt: number): Reservation[] {
    return [...this.workers.values()].map((w) => ({
      workerId: w.id,
      backend: w.plan.backend,
      devices: w.plan.placement.devices,
      bytes: w.plan.placement.bytes,
      seenByDriver: w.readyAt !== undefined && w.readyAt < snapshotAt,
    }));
  }

  /** RAM reserved by CPU workers: all of them, and those still loading (what the OS does not count as used yet). */
  ramReserved(): { all: number; loading: number } {
    let all = 0;
    let loading = 0;
    for (const w of this.workers.values()) {
      if (w.plan.backend !== "cpu") continue;
      all += w.plan.placement.bytes[0] ?? 0;
      if (w.readyAt === undefined) loading += w.plan.placement.bytes[0] ?? 0;
    }
    return { all, loading };
  }

  list(): WorkerInfo[] {
    return [...this.workers.values()].map((w) => this.info(w));
  }

  /** A worker by id; a gone one answers with why it is gone (WORKER_CRASHED, LOADING_FAILED…). */
  get(id: string): WorkerInfo {
    const w = this.workers.get(id);
    if (w) return this.info(w);
    const f = this.failures.get(id);
    if (f) throw new RbeeError(f.code, f.message, { worker_id: id, at: f.at });
    throw new RbeeError("WORKER_NOT_FOUND", `no worker ${id} on this hive`);
  }

  /** Asks every ready worker for its state now, so a listing is never stale. */
  async refresh(): Promise<void> {
    await Promise.all(
      [...this.workers.values()]
        .filter((w) => w.state !== "loading" && w.state !== "stopping")
        .map((w) => this.checkHealth(w, 1000)),
    );
  }

  /**
   * A worker that is loading or generating right now, in words (undefined when all are idle). Asks
   * each worker without counting failed answers against it: calibration polls this several times a
   * second, and the health monitor alone decides when a worker is gone. One that does not answer
   * counts as busy (a measurement next to it could be wrong).
   */
  async busyWorker(): Promise<string | undefined> {
    const answers = await Promise.all(
      [...this.workers.values()].map(async (w) => {
        if (w.state === "stopping") return undefined;
        if (w.state === "loading") return `worker ${w.id} is loading`;
        try {
          const res = await callJson(w.url, "GET", WORKER_PATHS.health, w.apiKey, undefined, 1000);
          const h = parseReply(WorkerHealthSchema, res.json, `worker ${w.id} (health)`);
          return h.state === "busy" || h.state === "loading" ? `worker ${w.id} is ${h.state}` : undefined;
        } catch {
          return `worker ${w.id} does not answer`;
        }
      }),
    );
    return answers.find((a) => a !== undefined);
  }

  /** SIGTERM, then SIGKILL after the grace period. Resolves once the process is gone. */
  async shutdown(id: string, reason = "requested"): Promise<void> {
    const w = this.workers.get(id);
    if (!w) return void this.get(id);
    if (w.state !== "stopping") {
      w.state = "stopping";
      this.log.info(`stopping worker ${id} (${reason})`);
      w.proc.kill("SIGTERM");
    }
    const timer = setTimeout(() => {
      this.log.warn(`worker ${id} did not stop within ${this.opts.gracefulShutdownMs} ms; killing it`);
      w.proc.kill("SIGKILL");
    }, this.opts.gracefulShutdownMs);
    await w.exited;
    clearTimeout(timer);
  }

  async shutdownAll(): Promise<void> {
    if (this.monitor) clearInterval(this.monitor);
    await Promise.all([...this.workers.keys()].map((id) => this.shutdown(id, "hive stopping")));
  }

  private info(w: Worker): WorkerInfo {
    return {
      id: w.id,
      url: w.url,
      model_ref: w.plan.modelRef,
      backend: w.plan.backend,
      device: w.plan.placement.devices[0] ?? 0,
      devices: w.plan.placement.devices,
      ...(w.gpuDevices ? { gpu_devices: w.gpuDevices } : {}),
      ...(w.cpuBinary ? { cpu_binary: w.cpuBinary } : {}),
      ...(w.decodeBatching ? { decode_batching: w.decodeBatching } : {}),
      memory_bytes: w.plan.placement.bytes.reduce((a, b) => a + b, 0),
      keep_alive_s: Math.round(w.plan.keepAliveMs / 1000),
      state: w.state,
      slots_total: w.plan.slots,
      slots_busy: w.slotsBusy,
      context_size: w.plan.contextSize,
      threads: w.plan.threads,
      last_activity: w.lastActivity,
      ...(w.state === "loading" ? { progress: w.progress } : {}),
      ...(w.lastTokensPerSecond !== undefined ? { last_tokens_per_second: w.lastTokensPerSecond } : {}),
      pid: w.proc.pid ?? 0,
      api_key: w.apiKey,
    };
  }

  private onExit(w: Worker, code: number | null, signal: NodeJS.Signals | null) {
    this.workers.delete(w.id);
    if (w.state === "stopping") {
      this.log.info(`worker ${w.id} stopped`);
      return;
    }
    if (this.failures.has(w.id)) return; // load failure already reported by the worker itself
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    const message = `worker ${w.id} (${w.plan.modelRef}) ${how} while ${w.state}`;
    this.failures.set(w.id, {
      code: w.state === "loading" ? "LOADING_FAILED" : "WORKER_CRASHED",
      message,
      at: Date.now(),
    });
    this.log.error(message);
  }

  private async checkAll() {
    const now = Date.now();
    for (const w of this.workers.values()) {
      if (w.state === "stopping") continue;
      if (w.state === "loading") {
        if (now - w.startedAt > this.opts.loadTimeoutMs) {
          this.failures.set(w.id, {
            code: "LOADING_TIMEOUT",
            message: `worker ${w.id} did not finish loading ${w.plan.modelRef} within ${Math.round(this.opts.loadTimeoutMs / 1000)} s (reached ${Math.round(w.progress * 100)}%)`,
            at: now,
          });
          void this.shutdown(w.id, "loading timed out");
        }
        continue;
      }
      await this.checkHealth(w, Math.min(5000, this.opts.healthIntervalMs));
      const keepAlive = w.plan.keepAliveMs;
      if (keepAlive > 0 && w.state === "idle" && w.slotsBusy === 0 && Date.now() - w.lastActivity > keepAlive)
        void this.shutdown(w.id, `idle for ${Math.round(keepAlive / 1000)} s`);
    }
  }

  private async checkHealth(w: Worker, timeoutMs: number) {
    try {
      const res = await callJson(w.url, "GET", WORKER_PATHS.health, w.apiKey, undefined, timeoutMs);
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
      const h = parseReply(WorkerHealthSchema, res.json, `worker ${w.id} (health)`);
      // Busy without a token for the stall limit: stuck mid-decode, however politely it answers.
      const stallMs = this.opts.stallLimitMs ?? DEFAULT_STALL_LIMIT_MS;
      if (h.state === "busy" && typeof h.last_progress === "number" && Date.now() - h.last_progress > stallMs)
        throw new Error(
          `busy with no progress for ${Math.round((Date.now() - h.last_progress) / 1000)} s (stall limit ${Math.round(stallMs / 1000)} s)`,
        );
      if (w.state !== "stopping") w.state = h.state;
      w.slotsBusy = h.slots_busy;
      w.lastActivity = h.last_activity;
      w.lastTokensPerSecond = h.last_tokens_per_second;
      w.healthFailures = 0;
    } catch (e) {
      if (w.state === "stopping" || !this.workers.has(w.id)) return;
      w.healthFailures++;
      this.log.warn(
        `worker ${w.id} health check failed (${w.healthFailures}/${this.opts.maxHealthFailures}): ${(e as Error).message}`,
      );
      if (w.healthFailures >= this.opts.maxHealthFailures) {
        this.failures.set(w.id, {
          code: "WORKER_CRASHED",
          message: `worker ${w.id} failed ${w.healthFailures} health checks in a row (last: ${(e as Error).message})`,
          at: Date.now(),
        });
        w.state = "stopping";
        w.proc.kill("SIGKILL");
      }
    }
  }
}
