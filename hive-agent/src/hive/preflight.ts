// Checks made before a worker is spawned (docs/architecture.md, phase 4; docs/edge-cases.md, EC3 and
// EC10): the model is present, the backend exists, and the model plus its KV cache fit in RAM (VRAM:
// placement.ts) — so a spawn fails in milliseconds
// with a clear reason instead of minutes later with an out-of-memory crash.

import { statSync } from "node:fs";
import { RbeeError, type Backend, type NodeHardware } from "../protocol";

export interface ModelShape {
  layers: number;
  embdKv: number;
  trainContext: number;
}

/** Reads the few GGUF fields the memory estimate needs. */
export async function readModelShape(modelPath: string): Promise<ModelShape> {
  const nlc = await import("node-llama-cpp");
  const info = await nlc.readGgufFileInfo(modelPath, { readTensorInfo: false });
  const arch = info.metadata.general.architecture as string;
  const a = ((info.metadata as any)[arch] ?? {}) as Record<string, any>;
  const heads = Number(a.attention?.head_count ?? 1);
  const headsKv = Number(a.attention?.head_count_kv ?? heads);
  const embd = Number(a.embedding_length ?? 0);
  const headDim = Number(a.attention?.key_length ?? embd / heads);
  return {
    layers: Number(a.block_count ?? 0),
    embdKv: headDim * headsKv,
    trainContext: Number(a.context_length ?? 4096),
  };
}

/** Bytes a worker needs: weights × 1.2 (compute buffers, fragmentation) + an f16 KV cache per slot. */
export function estimateBytes(modelBytes: number, shape: ModelShape, contextSize: number, slots: number): number {
  const kv = 2 /* K and V */ * shape.layers * shape.embdKv * contextSize * slots * 2; /* f16 */
  return Math.ceil(modelBytes * 1.2 + kv);
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

export function checkBackend(caps: Pick<NodeHardware, "backends">, backend: Backend) {
  if (!caps.backends.includes(backend))
    throw new RbeeError(
      "BACKEND_UNAVAILABLE",
      `backend ${backend} is not available on this node; available: ${caps.backends.join(", ")}`,
      {
        requested: backend,
        available: caps.backends,
      },
    );
}

/** RAM for a CPU worker; `available` already excludes what workers still loading have reserved. */
export function checkRam(available: number, modelPath: string, needed: number) {
  if (needed > available)
    throw new RbeeError(
      "INSUFFICIENT_RAM",
      `not enough RAM: the model needs about ${gib(needed)}, ${gib(available)} is available; use a smaller quantization (e.g. Q4_K_M), a smaller context_size or fewer slots`,
      { needed_bytes: needed, available_bytes: available, model_bytes: statSync(modelPath).size },
    );
}
