// Shared measuring for the benchmarks: a streamed generation timed on the client side, the same
// generation in-process with node-llama-cpp (the baseline every ratio divides by), and statistics.
// Each figure is measured side by side with its baseline in the same run, interleaved.

import { performance } from "node:perf_hooks";
import type { StreamEvent } from "../../hive-agent/src/protocol";

export const PROMPT = "def fibonacci(n):";

export interface Run {
  tokens: number;
  /** Decode rate between the first and the last token. */
  tokensPerSecond: number;
  /** From the request (or call) to the first token. */
  firstTokenMs: number;
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
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
}

/** The worker's generation without the worker: node-llama-cpp in this process, same settings. */
export async function inProcessEngine(opts: InProcessOptions) {
  const nlc = await import("node-llama-cpp");
  const llama = await nlc.getLlama({ gpu: opts.gpu ?? false, build: "never", logLevel: nlc.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: opts.modelPath, gpuLayers: opts.gpu ? "max" : 0 });
  const context = await model.createContext({ contextSize: opts.contextSize ?? 4096, sequences: opts.sequences ?? 1, threads: { ideal: opts.threads, min: 1 } });
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
