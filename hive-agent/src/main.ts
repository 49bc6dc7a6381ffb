// `hive-agent daemon | worker | detect | version`: the program deployed to every node.

import { execFile } from "node:child_process";
import { parseArgs } from "node:util";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { AGENT_VERSION, DECODE_BATCHING, type Backend } from "./protocol";
import { isDecodeBatching } from "./worker/decode-batching";
import { DEFAULT_DAEMON_OPTIONS, HiveDaemon, defaultHiveAddress, nativeBuildDir } from "./hive/daemon";
import { buildNativeLlama, isCpuBinary } from "./worker/native-build";
import { CALIBRATION_RESULT_PREFIX, measureBinary } from "./calibration/measure";
import { NATIVE_BUILD_MODES, type NativeBuildMode } from "./hive/native-builder";
import { CALIBRATION_MODES, type CalibrationMode } from "./hive/calibrator";
import { DEVICE_ENV, detectCapabilities, probeBackend, type BackendProbe } from "./hive/capabilities";
import { runWorker } from "./worker/main";

const USAGE = `usage: hive-agent <command> [options]

commands:
  daemon   run the node's hive (HTTP API on a Unix socket in its home, mode 0700)
             --token-file FILE --home DIR [--listen unix:PATH | http://127.0.0.1:PORT]
             (default unix:DIR/hive.sock; loopback TCP only where there are no Unix sockets)
             [--idle-timeout-ms N (0 = never)] [--health-interval-ms N] [--grace-ms N] [--load-timeout-ms N]
             [--stall-ms N]  a busy worker with no new token for N ms is unhealthy (default 60000)
             [--request-timeout-ms N] [--max-connections N]  slow-client limits (30000, 256)
             [--download-attempts N] [--download-backoff-ms N] [--download-stall-ms N] [--download-header-ms N]
             [--download-max-bytes N]  refuse models larger than N bytes (default 256 GiB)
             [--download-retain-ms N]  forget a finished download's progress after N ms (default 600000)
             [--vram-limit-mib N] [--ram-limit-mib N]  the most rbee's workers may take on each GPU /
                                     of RAM (nodes shared with others; default: all that is free)
             [--native-build auto|off]  auto (default; env RBEE_NATIVE_BUILD): build llama.cpp for
             this CPU in the background where CPU workers may use it (no GPU, cmake + C++ + npm;
             with calibration off only where workers get 2+ threads)
             [--calibrate auto|off]  auto (default; env RBEE_CALIBRATE): on a CPU-only node, measure
             which CPU binary (each prebuilt CPU variant, the native build) decodes fastest at the
             workers' thread count, in the background, once per node-llama-cpp version, binaries,
             CPU and thread count (kept in DIR/cpu-calibration.json); CPU workers then load the winner
             [--calibrate-variants a,b]  only these prebuilt CPU variants (env RBEE_CALIBRATE_VARIANTS)
             [--calibrate-rounds N] [--calibrate-tokens N]  rounds (median) and tokens per run (3, 48)
             [--decode-batching auto|together|one-at-a-time]  how a CPU worker's concurrent
             streams share decodes: auto (default; env RBEE_DECODE_BATCHING) follows calibration,
             which measures whether two batched streams beat one on this CPU
             [--worker-threads N]  decode threads of a CPU worker whose spawn does not say (default:
                                   the usable cores less one, at least 1); calibration measures at it
  worker   one model process (started by the daemon, not by hand)
  detect   print this node's GPU backends, devices and memory as JSON [--notes: what the GPU
           libraries said, on stderr]
  build-native --home DIR
           build llama.cpp for this node's CPU (OpenMP, its instruction sets) once; the hive's
           calibration then measures it against the prebuilt (with calibration off, CPU workers of
           2+ threads use it, the prebuilt otherwise) (minutes; safe to re-run)
  version  print the version
`;

function fail(message: string, code = 2): never {
  process.stderr.write(`hive-agent: ${message}\n`);
  process.exit(code);
}

function int(value: string | undefined, name: string, fallback?: number): number {
  if (value === undefined) {
    if (fallback === undefined) fail(`--${name} is required\n\n${USAGE}`);
    return fallback;
  }
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) fail(`--${name} must be a non-negative integer, got "${value}"`);
  return n;
}

async function main() {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case "version":
    case "--version":
      console.log(AGENT_VERSION);
      return;
    case "detect": {
      // stdout carries the JSON only; what the GPU libraries said goes to stderr with --notes (the
      // hive logs it) and nowhere otherwise.
      const notes: string[] = [];
      const hardware = await detectCapabilities(probeDeviceInChild, notes);
      if (rest.includes("--notes")) for (const n of notes) process.stderr.write(`${n}\n`);
      console.log(JSON.stringify(hardware));
      // node-llama-cpp may keep native handles alive; detection is a one-shot process.
      process.exit(0);
    }
    case "probe-device": {
      // Internal: run by `detect` with the backend's device variable set to one device.
      const notes: string[] = [];
      console.log(JSON.stringify((await probeBackend("vulkan", notes)) ?? null));
      process.exit(0);
    }
    case "daemon":
      return daemon(rest);
    case "worker":
      return worker(rest);
    case "build-native":
      return buildNative(rest);
    case "calibrate-run":
      return calibrateRun(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return;
    default:
      fail(`unknown command "${command}"\n\n${USAGE}`);
  }
}

async function daemon(argv: string[]) {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      listen: { type: "string" },
      "token-file": { type: "string" },
      home: { type: "string" },
      "idle-timeout-ms": { type: "string" },
      "health-interval-ms": { type: "string" },
      "grace-ms": { type: "string" },
      "load-timeout-ms": { type: "string" },
      "stall-ms": { type: "string" },
      "request-timeout-ms": { type: "string" },
      "max-connections": { type: "string" },
      "download-attempts": { type: "string" },
      "download-backoff-ms": { type: "string" },
      "download-stall-ms": { type: "string" },
      "download-max-bytes": { type: "string" },
      "download-retain-ms": { type: "string" },
      "download-header-ms": { type: "string" },
      "native-build": { type: "string", default: process.env.RBEE_NATIVE_BUILD || "auto" },
      calibrate: { type: "string", default: process.env.RBEE_CALIBRATE || "auto" },
      "calibrate-variants": { type: "string", default: process.env.RBEE_CALIBRATE_VARIANTS },
      "calibrate-rounds": { type: "string" },
      "calibrate-tokens": { type: "string" },
      "worker-threads": { type: "string" },
      "decode-batching": { type: "string", default: process.env.RBEE_DECODE_BATCHING || "auto" },
      "vram-limit-mib": { type: "string" },
      "ram-limit-mib": { type: "string" },
    },
    strict: true,
  });
  if (!v["token-file"]) fail(`--token-file is required\n\n${USAGE}`);
  if (!v.home) fail(`--home is required\n\n${USAGE}`);
  const nativeBuild = v["native-build"] as NativeBuildMode;
  if (!NATIVE_BUILD_MODES.includes(nativeBuild))
    fail(`--native-build must be one of ${NATIVE_BUILD_MODES.join(", ")}, got "${nativeBuild}"`);
  const calibrate = v.calibrate as CalibrationMode;
  if (!CALIBRATION_MODES.includes(calibrate))
    fail(`--calibrate must be one of ${CALIBRATION_MODES.join(", ")}, got "${calibrate}"`);
  const decodeBatching = v["decode-batching"];
  if (decodeBatching !== "auto" && !isDecodeBatching(decodeBatching))
    fail(`--decode-batching must be one of auto, ${DECODE_BATCHING.join(", ")}, got "${decodeBatching}"`);
  const calibrateVariants = v["calibrate-variants"]
    ?.split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const positive = (value: string | undefined, name: string) => {
    if (value === undefined) return undefined;
    const n = int(value, name);
    if (n < 1) fail(`--${name} must be at least 1`);
    return n;
  };
  const home = path.resolve(v.home);
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const download: Record<string, number> = {};
  if (v["download-attempts"]) download.maxAttempts = int(v["download-attempts"], "download-attempts");
  if (v["download-backoff-ms"]) download.backoffBaseMs = int(v["download-backoff-ms"], "download-backoff-ms");
  if (v["download-stall-ms"]) download.stallTimeoutMs = int(v["download-stall-ms"], "download-stall-ms");
  if (v["download-header-ms"]) download.headerTimeoutMs = int(v["download-header-ms"], "download-header-ms");
  if (v["download-max-bytes"]) download.maxBytes = int(v["download-max-bytes"], "download-max-bytes");
  if (v["download-retain-ms"]) download.retainFinishedMs = int(v["download-retain-ms"], "download-retain-ms");
  const listen = v.listen ?? defaultHiveAddress(home);
  let hive: HiveDaemon;
  try {
    hive = new HiveDaemon({
      listen,
      tokenFile: path.resolve(v["token-file"]),
      home,
      idleTimeoutMs: int(v["idle-timeout-ms"], "idle-timeout-ms", DEFAULT_DAEMON_OPTIONS.idleTimeoutMs),
      healthIntervalMs: int(v["health-interval-ms"], "health-interval-ms", DEFAULT_DAEMON_OPTIONS.healthIntervalMs),
      gracefulShutdownMs: int(v["grace-ms"], "grace-ms", DEFAULT_DAEMON_OPTIONS.gracefulShutdownMs),
      loadTimeoutMs: int(v["load-timeout-ms"], "load-timeout-ms", DEFAULT_DAEMON_OPTIONS.loadTimeoutMs),
      stallLimitMs: int(v["stall-ms"], "stall-ms", DEFAULT_DAEMON_OPTIONS.stallLimitMs),
      limits: {
        ...(v["request-timeout-ms"] ? { requestTimeoutMs: int(v["request-timeout-ms"], "request-timeout-ms") } : {}),
        ...(v["max-connections"] ? { maxConnections: int(v["max-connections"], "max-connections") } : {}),
      },
      download,
      nativeBuild,
      calibrate,
      calibrateVariants: calibrateVariants?.length ? calibrateVariants : undefined,
      calibrateRounds: positive(v["calibrate-rounds"], "calibrate-rounds"),
      calibrateTokens: positive(v["calibrate-tokens"], "calibrate-tokens"),
      workerThreads: positive(v["worker-threads"], "worker-threads"),
      ...(decodeBatching !== "auto" ? { decodeBatching } : {}),
      ...(v["vram-limit-mib"] ? { vramLimitBytes: int(v["vram-limit-mib"], "vram-limit-mib") * 2 ** 20 } : {}),
      ...(v["ram-limit-mib"] ? { ramLimitBytes: int(v["ram-limit-mib"], "ram-limit-mib") * 2 ** 20 } : {}),
    });
  } catch (e) {
    fail((e as Error).message, 1);
  }
  const address = await hive.start().catch((e) => fail(`cannot listen on ${listen}: ${(e as Error).message}`, 1));
  console.log(`rbee hive listening on ${address}`);
  const stop = (signal: string) => {
    process.stderr.write(`hive-agent: ${signal} received, stopping\n`);
    hive.stop().then(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

async function buildNative(argv: string[]) {
  const { values: v } = parseArgs({ args: argv, options: { home: { type: "string" } }, strict: true });
  if (!v.home) fail(`--home is required\n\n${USAGE}`);
  const dir = nativeBuildDir(path.resolve(v.home));
  const r = await buildNativeLlama({ dir, log: (line) => process.stderr.write(`${line}\n`) });
  if (!r.ok) fail(`native build failed: ${r.error}; workers keep using the prebuilt binaries`, 1);
  console.log(JSON.stringify({ dir, duration_ms: r.durationMs, cmake_options: r.cmakeOptions }));
}

async function worker(argv: string[]) {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      id: { type: "string" },
      "model-path": { type: "string" },
      "model-ref": { type: "string" },
      backend: { type: "string", default: "cpu" },
      device: { type: "string", default: "0" },
      "context-size": { type: "string", default: "4096" },
      slots: { type: "string", default: "1" },
      threads: { type: "string" },
      "batch-size": { type: "string" },
      "native-dir": { type: "string" },
      "cpu-binary": { type: "string" },
      "variants-dir": { type: "string" },
      "decode-batching": { type: "string" },
      "hive-url": { type: "string" },
      listen: { type: "string" },
    },
    strict: true,
  });
  if (!v.id || !v["model-path"] || !v["hive-url"] || !v.listen)
    fail("worker needs --id, --model-path, --hive-url and --listen (it is started by the hive daemon)");
  const cpuBinary = v["cpu-binary"];
  if (cpuBinary !== undefined && !isCpuBinary(cpuBinary))
    fail(`--cpu-binary must be native, prebuilt or prebuilt:<variant>, got "${cpuBinary}"`);
  const decodeBatching = v["decode-batching"];
  if (decodeBatching !== undefined && !isDecodeBatching(decodeBatching))
    fail(`--decode-batching must be one of ${DECODE_BATCHING.join(", ")}, got "${decodeBatching}"`);
  await runWorker({
    id: v.id,
    modelPath: v["model-path"],
    modelRef: v["model-ref"] ?? v["model-path"],
    backend: v.backend as Backend,
    device: int(v.device, "device"),
    contextSize: int(v["context-size"], "context-size"),
    slots: int(v.slots, "slots"),
    threads: int(v.threads, "threads"),
    batchSize: v["batch-size"] ? int(v["batch-size"], "batch-size") : undefined,
    nativeDir: v["native-dir"],
    cpuBinary,
    variantsDir: v["variants-dir"],
    decodeBatching,
    hiveUrl: v["hive-url"],
    listen: v.listen,
  });
}

/** Internal: one calibration run of one CPU binary (hive/calibrator.ts starts it; its result goes to stdout). */
async function calibrateRun(argv: string[]) {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      binary: { type: "string" },
      threads: { type: "string" },
      tokens: { type: "string" },
      warmup: { type: "string" },
      streams: { type: "string" },
      "decode-batching": { type: "string" },
      "model-dir": { type: "string" },
      "native-dir": { type: "string" },
      "variants-dir": { type: "string" },
    },
    strict: true,
  });
  if (!v.binary || !isCpuBinary(v.binary) || !v["model-dir"] || !v["variants-dir"])
    fail("calibrate-run needs --binary, --model-dir and --variants-dir (it is started by the hive daemon)");
  const r = await measureBinary({
    binary: v.binary,
    threads: int(v.threads, "threads"),
    tokens: int(v.tokens, "tokens", 48),
    warmup: Math.max(1, int(v.warmup, "warmup", 4)),
    streams: Math.min(2, Math.max(1, int(v.streams, "streams", 1))),
    decodeBatching: isDecodeBatching(v["decode-batching"]) ? v["decode-batching"] : undefined,
    modelDir: v["model-dir"],
    nativeDir: v["native-dir"],
    variantsDir: v["variants-dir"],
  }).catch((e) => fail((e as Error).message, 1)); // the hive keeps the last lines as the reason: the message, not a stack
  process.stdout.write(`${CALIBRATION_RESULT_PREFIX}${JSON.stringify(r)}\n`);
  // node-llama-cpp may keep native handles alive; a run is a one-shot process.
  process.exit(0);
}

/** Probes one Vulkan device alone, in a child whose GGML_VK_VISIBLE_DEVICES names only it. */
function probeDeviceInChild(gpu: "vulkan", pinId: string): Promise<BackendProbe | undefined> {
  return new Promise((resolve) => {
    const env = { ...process.env, [DEVICE_ENV[gpu]!]: pinId };
    execFile(
      process.execPath,
      [process.argv[1], "probe-device"],
      { env, timeout: 30_000, maxBuffer: 1 << 20 },
      (err, stdout) => {
        if (err) return resolve(undefined);
        try {
          resolve((JSON.parse(stdout) as BackendProbe | null) ?? undefined);
        } catch {
          resolve(undefined);
        }
      },
    );
  });
}

main().catch((e) => fail((e as Error).stack ?? String(e), 1));
