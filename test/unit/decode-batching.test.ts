// The decision and the batch strategy behind "one-at-a-time" decoding (hive-agent/src/worker/decode-batching.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import type { BatchItem, Token } from "node-llama-cpp";
import {
  decideDecodeBatching,
  isDecodeBatching,
  oneDecodeStepPerBatch,
  prioritizationFor,
} from "../../hive-agent/src/worker/decode-batching";

const item = (tokens: number): BatchItem => ({
  tokens: Array.from({ length: tokens }, (_, i) => i as Token),
  logits: Array.from({ length: tokens }, (_, i) => (i === tokens - 1 ? true : undefined)),
  evaluationPriority: 5,
});

test("two streams decode together unless one at a time is clearly faster", () => {
  // This machine: two streams batched ~1.3× one stream, one at a time ~0.85×.
  assert.equal(decideDecodeBatching(300, 195), "together");
  // Issue 16's CPU: 2 batched streams gave 180 tok/s where one stream gave 278; one at a time would
  // give most of one stream's speed.
  assert.equal(decideDecodeBatching(180, 240), "one-at-a-time");
  // Roughly even (the noise of a short measurement) stays batched; 10% faster switches.
  assert.equal(decideDecodeBatching(200, 215), "together");
  assert.equal(decideDecodeBatching(200, 222), "one-at-a-time");
});

test("one-at-a-time: of several streams' tokens only the first queued goes into the batch", () => {
  const [a, b, c] = [item(1), item(1), item(1)];
  assert.deepEqual(oneDecodeStepPerBatch({ items: [a, b, c], size: 512 }), [{ item: a, processAmount: 1 }]);
  assert.deepEqual(oneDecodeStepPerBatch({ items: [b, c], size: 512 }), [{ item: b, processAmount: 1 }]);
});

test("one-at-a-time: prompts still fill the batch, after one stream's token, and are cut to its size", () => {
  const step = item(1);
  const other = item(1);
  const prompt = item(600);
  const small = item(40);
  assert.deepEqual(oneDecodeStepPerBatch({ items: [prompt, step, other, small], size: 512 }), [
    { item: step, processAmount: 1 },
    { item: prompt, processAmount: 511 },
  ]);
  assert.deepEqual(oneDecodeStepPerBatch({ items: [small, prompt], size: 512 }), [
    { item: small, processAmount: 40 },
    { item: prompt, processAmount: 472 },
  ]);
});

test("one-at-a-time never returns an empty batch (node-llama-cpp's loop would spin)", () => {
  const empty = item(0);
  assert.deepEqual(oneDecodeStepPerBatch({ items: [empty], size: 512 }), [{ item: empty, processAmount: 1 }]);
  assert.deepEqual(oneDecodeStepPerBatch({ items: [], size: 512 }), []);
});

test("the strategy handed to node-llama-cpp follows the mode; unknown modes are refused", () => {
  assert.equal(prioritizationFor(undefined), "maximumParallelism");
  assert.equal(prioritizationFor("together"), "maximumParallelism");
  assert.equal(prioritizationFor("one-at-a-time"), oneDecodeStepPerBatch);
  assert.ok(isDecodeBatching("one-at-a-time"));
  assert.ok(!isDecodeBatching("alternate"));
});
