// One calibration run, in its own process (`hive-agent calibrate-run`, started by hive/calibrator.ts):
// loads one CPU binary the way a worker would (loadLlama, same thread count, UV_THREADPOOL_SIZE=1 from
// the hive), decodes a fixed number of tokens of the calibration model and prints its speed. With two
// streams, both decode at once as a worker's concurrent requests do — together (lined up by the
// worker's step gate, so each decode carries a token of each) or one at a time
// (worker/decode-batching.ts) — and the speed is their aggregate. A binary
// that does not load, crashes or dies of SIGILL takes only this process down, and the hive records it
// as unusable.

import type { Token } from "node-llama-cpp";
import { installedPackageDir, loadLlama, type CpuBinary } from "../worker/native-build";
import { prepareVariant } from "../worker/cpu-variants";
import { StepGate } from "../worker/step-gate";
import { linesUpStreams, prioritizationFor } from "../worker/decode-batching";
import type { DecodeBatching } from "../protocol";
import { CALIBRATION_TOKENS, ensureCalibrationModel } from "./model";

/** The line the run prints its result on (the hive ignores everything else the libraries print). */
export const CALIBRATION_RESULT_PREFIX = "RBEE_CALIBRATION_RESULT ";

export interface MeasureOptions {
  binary: CpuBinary;
  threads: number;
  /** Tokens timed per stream, after `warmup` untimed ones. */
  tokens: number;
  /** Concurrent streams (1 or 2); the result is their aggregate tokens/s. */
  streams?: number;
  /** How the streams share decodes, as a worker would (default together). */
  decodeBatching?: DecodeBatching;
  warmup: number;
  /** Where the calibration model lives (made here on first use). */
  modelDir: string;
  nativeDir?: string;
  variantsDir: string;
}

export interface MeasureResult {
  binary: CpuBinary;
  tokens_per_second: number;
  tokens: number;
  streams: number;
}

export async function measureBinary(opts: MeasureOptions): Promise<MeasureResult> {
  const modelPath = ensureCalibrationModel(opts.modelDir);
  if (opts.binary.startsWith("prebuilt:"))
    prepareVariant(opts.variantsDir, opts.binary.slice("prebuilt:".length), installedPackageDir());
  const { LlamaLogLevel } = await import("node-llama-cpp");
  const loaded = await loadLlama({
    dir: opts.nativeDir,
    threads: opts.threads,
    binary: opts.binary,
    variantsDir: opts.variantsDir,
    llamaOptions: { logLevel: LlamaLogLevel.error },
  });
  // A worker would fall back to the prebuilt; a measurement of the fallback under this name would lie.
  if (loaded.binary !== opts.binary)
    throw new Error(`${opts.binary} did not load: ${loaded.fallbackReason ?? `got ${loaded.binary}`}`);
  const model = await loaded.llama.loadModel({ modelPath, gpuLayers: 0 });
  const streams = opts.streams ?? 1;
  const context = await model.createContext({
    contextSize: 512,
    sequences: streams,
    batching: { itemPrioritizationStrategy: prioritizationFor(opts.decodeBatching) },
    threads: { ideal: opts.threads, min: 1 },
    flashAttention: true,
  });
  const gate = new StepGate();
  // Timing starts once every stream is past its warm-up and stops when the last timed token is in.
  let warmedUp = 0;
  let started = 0;
  const stream = async (index: number) => {
    const sequence = context.getSequence();
    // A short fixed prompt of word pieces (another one per stream); then greedy decoding, counted,
    // never stopped by the model.
    const prompt = [
      CALIBRATION_TOKENS.bos,
      ...Array.from({ length: 16 }, (_, i) => CALIBRATION_TOKENS.firstNormal + 7 * i + 3 * index),
    ] as unknown as Token[];
    const member = linesUpStreams(opts.decodeBatching) ? gate.join(index) : undefined;
    let count = 0;
    try {
      for await (const token of sequence.evaluate(prompt, { temperature: 0 })) {
        void token;
        count++;
        if (count === opts.warmup && ++warmedUp === streams) started = performance.now();
        if (count >= opts.warmup + opts.tokens) break;
        const others = member?.arrive();
        if (others) await others;
      }
    } finally {
      member?.leave();
    }
  };
  await Promise.all(Array.from({ length: streams }, (_, i) => stream(i)));
  const seconds = (performance.now() - started) / 1000;
  const total = opts.tokens * streams;
  return {
    binary: opts.binary,
    tokens: total,
    streams,
    tokens_per_second: Math.round((total / seconds) * 10) / 10,
  };
}
