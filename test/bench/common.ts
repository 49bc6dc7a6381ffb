// Shared measuring for the benchmarks: a streamed generation timed on the client side, the same
// generation in-process with node-llama-cpp (the baseline every ratio divides by), and statistics.
// Each figure is measured side by side with its baseline in the same run, interleaved.

import { symlinkSync } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { StreamEvent } from "../../hive-agent/src/protocol";
import { nativeBuildDir } from "../../hive-agent/src/hive/daemon";
import { buildNativeLlama, loadLlama } from "../../hive-agent/src/worker/native-build";
import { REPO_ROOT } from "../fixtures/models";

export const PROMPT = "def fibonacci(n):";

export interface Run {
  tokens: number;
  /** Decode rate between the first and the last token. */
  tokensPerSecond: number;
  /** From the request (or call) to the first token. */
  firstTokenMs: number;
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
export const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

/** Times a stream of worker events (SSE through any transport). */
export async function timeStream(start: () => AsyncIterable<StreamEvent>, expectTokens: number): Promise<Run> {
  const t0 = performance.now();
  let first = 0;
  let last = 0;
  let n = 0;
  for await (const e of start()) {
    if (e.type === "token") {
      last = performance.now();
      if (!n) first = last;
      n++;
    } else if (e.type === "error") throw new Error(`${e.code}: ${e.message}`);
  }
  if (n !== expectTokens) throw new Error(`expected ${expectTokens} tokens, got ${n}`);
  return { tokens: n, tokensPerSecond: (n - 1) / ((last - first) / 1000), firstTokenMs: first - t0 };
}

export interface InProcessOptions {
  modelPath: string;
  threads: number;
  contextSize?: number;
  sequences?: number;
  /** GPU backend for a GPU machine's run; default CPU only. */
  gpu?: "cuda" | "vulkan" | "metal";
  /** A native build's folder (see nativeBuildForBench), used as a worker would: from 2 threads. */
  nativeDir?: string;
}

/** Where the benchmarks keep their native build (git-ignored; made once, minutes). */
const NATIVE_CACHE = path.join(REPO_ROOT, ".cache", "native-omp");

/**
 * From 2 threads on, workers are measured as recommended: on the node's native build, which the
 * bench makes once into .cache/ and links where the hive finds it. Returns its folder, or undefined
 * (1 thread, or the build failed: then everything runs on the prebuilt, and the log says why).
 */
export async function nativeBuildForBench(hiveHome: string, threads: number): Promise<string | undefined> {
  if (threads < 2) return undefined;
  const built = await buildNativeLlama({ dir: NATIVE_CACHE, log: (l) => console.error(l) });
  if (!built.ok) {
    console.error(`native build unavailable (${built.error}); measuring the prebuilt`);
    return undefined;
  }
  symlinkSync(NATIVE_CACHE, nativeBuildDir(hiveHome));
  return NATIVE_CACHE;
}

/** The worker's generation without the worker: node-llama-cpp in this process, same settings. */
export async function inProcessEngine(opts: InProcessOptions) {
  if (process.env.UV_THREADPOOL_SIZE !== "1")
    console.error(
      "note: UV_THREADPOOL_SIZE is not 1 here (workers run with 1; npm run bench sets it): the in-process baseline is slower than a worker, much so with the native build",
    );
  const nlc = await import("node-llama-cpp");
  // The same binary a worker with these threads loads (native build from 2 threads, when given).
  const llama =
    opts.nativeDir && !opts.gpu
      ? (
          await loadLlama({
            dir: opts.nativeDir,
            threads: opts.threads,
            llamaOptions: { logLevel: nlc.LlamaLogLevel.error },
          })
        ).llama
      : await nlc.getLlama({ gpu: opts.gpu ?? false, build: "never", logLevel: nlc.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: opts.modelPath, gpuLayers: opts.gpu ? "max" : 0 });
  const context = await model.createContext({
    contextSize: opts.contextSize ?? 4096,
    sequences: opts.sequences ?? 1,
    threads: { ideal: opts.threads, min: 1 },
  });
  const bos = model.tokens.bos != null && model.tokens.shouldPrependBosToken ? [model.tokens.bos] : [];
  return {
    async run(tokens: number, seed = 7): Promise<Run> {
      const seq = context.getSequence();
      const t0 = performance.now();
      const input = [...bos, ...model.tokenize(PROMPT)];
      let first = 0;
      let last = 0;
      let n = 0;
      for await (const token of seq.evaluate(input, { temperature: 0.8, topK: 40, topP: 0.95, seed })) {
        model.detokenize([token]);
        last = performance.now();
        if (!n) first = last;
        if (++n >= tokens) break;
      }
      seq.dispose();
      return { tokens: n, tokensPerSecond: (n - 1) / ((last - first) / 1000), firstTokenMs: first - t0 };
    },
    async dispose() {
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    },
  };
}
