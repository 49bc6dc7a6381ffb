// Concurrent generations on one worker are decoded together, as llama-server does (continuous
// batching): the real engine on a real generated model, in-process.
//
// To see the batches, the test wraps node-llama-cpp's internal addon context (`context._ctx`, its
// initBatch/addToBatch calls) — instrumentation only, nothing is faked. If a node-llama-cpp upgrade
// changes those internals this test fails, and step-gate.ts must be checked again.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Engine } from "../../hive-agent/src/worker/engine";
import { ensureModel } from "../fixtures/models";

let engine: Engine;
/** Sequence ids of each decode batch, in the order they were added. */
let batches: number[][] = [];

before(async () => {
  engine = await Engine.load({
    modelPath: ensureModel("tiny"),
    backend: "cpu",
    contextSize: 512,
    slots: 4,
    threads: 1,
  });
  const context = engine.context as unknown as { _ctx: Record<string, unknown> };
  const addon = context._ctx;
  context._ctx = new Proxy(addon, {
    get(target, key) {
      const value = target[key as string];
      if (typeof value !== "function") return value;
      if (key === "initBatch") return (...args: unknown[]) => (batches.push([]), value.apply(target, args));
      if (key === "addToBatch")
        return (sequenceId: number, ...rest: unknown[]) => (
          batches.at(-1)!.push(sequenceId),
          value.call(target, sequenceId, ...rest)
        );
      return value.bind(target);
    },
  });
});
after(() => engine.dispose());

async function generateConcurrently(n: number, maxTokens: number) {
  const slots = Array.from({ length: n }, () => engine.acquireSlot());
  try {
    return await Promise.all(
      slots.map((slot, k) =>
        engine.generate(
          slot,
          engine.prepare({ kind: "text", prompt: `def f${k}(x):` }, maxTokens),
          { max_tokens: maxTokens, seed: k + 1 },
          new AbortController().signal,
          () => {},
        ),
      ),
    );
  } finally {
    for (const slot of slots) engine.releaseSlot(slot);
  }
}

test("4 concurrent streams share each decode batch, in increasing sequence-id order", async () => {
  batches = [];
  const results = await generateConcurrently(4, 32);
  assert.deepEqual(
    results.map((r) => r.tokensOut),
    [32, 32, 32, 32],
  );
  // Each stream needs one decode per token after its prompt: about 32 batches when they are decoded
  // together, against about 64 when the sequence sampled last misses every batch (the old behaviour).
  assert.ok(batches.length <= 32 + 4, `${batches.length} decode batches for 4 × 32 tokens`);
  const full = batches.filter((b) => b.length === 4);
  assert.ok(full.length >= 28, `only ${full.length} of ${batches.length} batches carried all 4 streams`);
  // llama.cpp puts only consecutive, increasing sequence ids into one micro-batch (per-sequence KV).
  for (const b of full) assert.deepEqual(b, [0, 1, 2, 3]);
});

test("a free slot is chosen by the longest shared prefix, else the lowest sequence id", async () => {
  // Fill slots 0 and 1 with different prompts.
  const [s0, s1] = [engine.acquireSlot(), engine.acquireSlot()];
  const promptOf = (text: string) => engine.prepare({ kind: "text", prompt: text }, 4);
  const signal = new AbortController().signal;
  await Promise.all([
    engine.generate(s0, promptOf("import numpy as np\n"), { max_tokens: 4, seed: 1 }, signal, () => {}),
    engine.generate(s1, promptOf("class Stack:\n    def push(self, x):"), { max_tokens: 4, seed: 1 }, signal, () => {}),
  ]);
  engine.releaseSlot(s0);
  engine.releaseSlot(s1);

  // A prompt extending slot 1's (typing on in the editor) gets slot 1 back, with its KV cache.
  const extended = promptOf("class Stack:\n    def push(self, x):\n        self.items.append(x)");
  const picked = engine.acquireSlot(extended.tokens);
  assert.equal(picked, s1);
  engine.releaseSlot(picked);

  // A prompt that shares nothing beyond the start-of-text token takes the lowest id, slot 0.
  const unrelated = engine.acquireSlot(promptOf("SELECT 1;").tokens);
  assert.equal(unrelated, s0);
  engine.releaseSlot(unrelated);
});
