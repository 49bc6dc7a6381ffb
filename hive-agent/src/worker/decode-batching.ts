// How a worker's concurrent streams share decodes. Normally their next tokens go into one llama.cpp
// batch (step-gate.ts lines them up), which on most CPUs costs far less than decoding them one by
// one: a batch of 2 tokens took 1.3× a batch of 1 here (test/bench/FINDINGS.md §7). Issue 16's
// figures from another CPU show the opposite: 2 streams gave half the aggregate of one, and
// llama-server lost the same way, so the cost is llama.cpp's small-batch kernels on that CPU, not the
// worker. Decoding one stream's token per batch instead gives two streams close to one stream's speed
// (not all of it: here 0.8–0.9×, each decode of another sequence costs llama.cpp some set-up), so
// it is no free choice either: the node's calibration runs two streams both ways and workers use the
// faster (hive/calibrator.ts).

import type { CustomBatchingPrioritizationStrategy, PrioritizedBatchItem } from "node-llama-cpp";
import { DECODE_BATCHING, type DecodeBatching } from "../protocol";

export function isDecodeBatching(x: unknown): x is DecodeBatching {
  return (DECODE_BATCHING as readonly unknown[]).includes(x);
}

/**
 * How much faster two streams decoded one at a time must be than batched for workers to switch: a
 * clear win, so the noise of a short measurement does not switch a CPU where the two are even.
 */
export const ONE_AT_A_TIME_MARGIN = 1.1;

/** The calibration's decision from two streams' aggregate speed, batched and one at a time. */
export function decideDecodeBatching(
  togetherTokensPerSecond: number,
  oneAtATimeTokensPerSecond: number,
): DecodeBatching {
  return oneAtATimeTokensPerSecond >= togetherTokensPerSecond * ONE_AT_A_TIME_MARGIN ? "one-at-a-time" : "together";
}

/**
 * A node-llama-cpp prioritization strategy for "one-at-a-time": of the queued single tokens (streams'
 * decode steps) only the first goes into this batch; the rest wait for the next one, which the batch
 * loop dispatches at once. Prompts (several tokens) still go in — alongside them a token costs little,
 * since the prompt's chunk dominates the batch — after that one token, as much of each as fits.
 */
export const oneDecodeStepPerBatch: CustomBatchingPrioritizationStrategy = ({ items, size }) => {
  const step = items.find((item) => item.tokens.length === 1);
  const prompts = items.filter((item) => item.tokens.length > 1);
  const chosen: PrioritizedBatchItem[] = step ? [{ item: step, processAmount: 1 }] : [];
  let left = size - chosen.length;
  for (const item of prompts) {
    if (left <= 0) break;
    const processAmount = Math.min(item.tokens.length, left);
    chosen.push({ item, processAmount });
    left -= processAmount;
  }
  // An empty batch would make node-llama-cpp's loop spin on the same queue: never return none.
  if (!chosen.length && items.length) chosen.push({ item: items[0], processAmount: 1 });
  return chosen;
};

/**
 * Whether concurrent streams line up at the step gate (step-gate.ts) so their tokens share a decode:
 * only when decoding together. One at a time, each stream queues its next token at once instead,
 * while the other's decode runs.
 */
export function linesUpStreams(mode: DecodeBatching | undefined): boolean {
  return mode !== "one-at-a-time";
}

/** The item strategy for node-llama-cpp's `createContext({ batching: { itemPrioritizationStrategy } })`. */
export function prioritizationFor(
  mode: DecodeBatching | undefined,
): "maximumParallelism" | CustomBatchingPrioritizationStrategy {
  return mode === "one-at-a-time" ? oneDecodeStepPerBatch : "maximumParallelism";
}
