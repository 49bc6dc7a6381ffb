// `hive-agent worker …`: one process per loaded model, spawned by the hive.
// It listens first (so loading progress can be followed), announces its port on stdout for the hive,
// loads the model, then calls the hive back with /v1/workers/ready (or /v1/workers/load-failed).

import {
  HIVE_PATHS,
  RbeeError,
  BACKENDS,
  WORKER_ID_HEADER,
  type LoadFailedCallback,
  type ReadyCallback,
} from "../protocol";
import { createLogger, registerSecret } from "../util/log";
import { callJson } from "../util/http";
import { LISTENING_PREFIX, type WorkerArgs } from "./spawn-plan";
import { Engine } from "./engine";
import { WorkerServer } from "./server";

export async function runWorker(args: WorkerArgs): Promise<void> {
  const log = createLogger(`worker ${args.id}`);
  const apiKey = process.env.RBEE_WORKER_KEY ?? "";
  // Its own secret for calling the hive back: a worker never holds the hive token.
  const callbackKey = process.env.RBEE_WORKER_CALLBACK_KEY ?? "";
  if (apiKey.length < 16 || callbackKey.length < 16)
    throw new Error("RBEE_WORKER_KEY and RBEE_WORKER_CALLBACK_KEY must be set by the hive");
  delete process.env.RBEE_WORKER_KEY;
  delete process.env.RBEE_WORKER_CALLBACK_KEY;
  registerSecret(apiKey);
  registerSecret(callbackKey);
  if (!BACKENDS.includes(args.backend)) throw new Error(`unknown backend ${args.backend}`);

  const server = new WorkerServer(apiKey, args.modelRef, log);
  const url = await server.listen(args.listen);
  process.stdout.write(`${LISTENING_PREFIX}${url}\n`);

  const callHive = async (path: string, body: ReadyCallback | LoadFailedCallback) => {
    const res = await callJson(args.hiveUrl, "POST", path, callbackKey, body, 30_000, { [WORKER_ID_HEADER]: args.id });
    if (res.status !== 200) throw new Error(`hive refused ${path}: HTTP ${res.status} ${JSON.stringify(res.json)}`);
  };

  let engine: Engine | undefined;
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info(`${signal}: stopping`);
    await server.stop();
    await engine?.dispose();
    process.exit(0);
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
  // The hive holds our stdin open; EOF means the hive is gone, and an orphan worker must not linger.
  process.stdin.on("end", () => void shutdown("hive gone"));
  process.stdin.on("error", () => void shutdown("hive gone"));
  process.stdin.resume();

  try {
    const t0 = Date.now();
    engine = await Engine.load({
      modelPath: args.modelPath,
      backend: args.backend,
      contextSize: args.contextSize,
      slots: args.slots,
      threads: args.threads,
      batchSize: args.batchSize,
      nativeDir: args.nativeDir,
      cpuBinary: args.cpuBinary,
      variantsDir: args.variantsDir,
      decodeBatching: args.decodeBatching,
      onLoadProgress: (p) => server.setProgress(p),
    });
    if (stopping) return;
    server.setReady(engine);
    log.info(
      `loaded ${args.modelRef} in ${Date.now() - t0} ms (${args.backend}, ${engine.build}, ${args.slots} slots, ${args.threads} threads, context ${engine.context.contextSize}) on ${url}`,
    );
    if (engine.gpuDevices.length) log.info(`running on ${engine.gpuDevices.join(", ")}`);
    await callHive(HIVE_PATHS.ready, {
      worker_id: args.id,
      url,
      model_ref: args.modelRef,
      backend: args.backend,
      device: args.device,
      gpu_devices: engine.gpuDevices,
      ...(engine.cpuBinary ? { cpu_binary: engine.cpuBinary } : {}),
      decode_batching: engine.decodeBatching,
      ...(engine.vramUsedBytes !== undefined ? { vram_used_bytes: engine.vramUsedBytes } : {}),
    });
  } catch (e) {
    const err =
      e instanceof RbeeError
        ? e
        : new RbeeError("LOADING_FAILED", `loading ${args.modelRef} failed: ${(e as Error).message}`);
    log.error(err.message);
    server.setLoadFailed(err);
    await callHive(HIVE_PATHS.loadFailed, { worker_id: args.id, code: err.code, message: err.message }).catch((c) =>
      log.error(String(c)),
    );
    await server.stop();
    process.exit(1);
  }
}
