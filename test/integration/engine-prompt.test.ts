// How the worker's engine feeds a prompt to llama.cpp: each token exactly once, a slot's KV cache
// reused for a prompt that extends the previous one, and a long prompt cancellable while it is being
// evaluated. The real engine on a real generated model, checked against node-llama-cpp used directly.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import type { LlamaContext, Token } from "node-llama-cpp";
import { Engine, type PreparedPrompt } from "../../hive-agent/src/worker/engine";
import { ensureModel } from "../fixtures/models";

let engine: Engine;
let reference: LlamaContext;

before(async () => {
  engine = await Engine.load({
    modelPath: ensureModel("small"),
    backend: "cpu",
    contextSize: 4096,
    slots: 2,
    threads: 1,
  });
  // A second context on the same model: node-llama-cpp's own evaluation, nothing of the engine's.
  reference = await engine.model.createContext({
    contextSize: 4096,
    sequences: 1,
    threads: 1,
    flashAttention: engine.context.flashAttention === true,
  });
});
after(async () => {
  await reference.dispose();
  await engine.dispose();
});

const GREEDY = { max_tokens: 12, temperature: 0, seed: 1 };

async function viaEngine(
  prepared: PreparedPrompt,
  slot = engine.acquireSlot(prepared.tokens),
  signal = new AbortController().signal,
) {
  const tokens: Token[] = [];
  try {
    const result = await engine.generate(slot, prepared, GREEDY, signal, () => {});
    tokens.push(...slot.contextTokens.slice(prepared.tokens.length));
    return { result, tokens, slot };
  } finally {
    engine.releaseSlot(slot);
  }
}

async function viaNodeLlamaCpp(prompt: Token[]): Promise<Token[]> {
  const sequence = reference.getSequence();
  try {
    const out: Token[] = [];
    for await (const token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
      out.push(token);
      if (out.length === GREEDY.max_tokens) break;
    }
    return out;
  } finally {
    sequence.dispose();
  }
}

const prompt = (text: string) => engine.prepare({ kind: "text", prompt: text }, GREEDY.max_tokens);

test("the prompt is evaluated once, token for token: greedy output equals node-llama-cpp's own", async () => {
  const p = prompt("def fibonacci(n):\n    ");
  const { tokens } = await viaEngine(p);
  assert.equal(tokens.length, GREEDY.max_tokens - 1, "the last generated token is not in the context yet");
  // The slot holds exactly the prompt, then the generated tokens.
  const expected = await viaNodeLlamaCpp(p.tokens);
  assert.deepEqual(tokens, expected.slice(0, tokens.length));
});

test("a prompt extending the previous one reuses the slot's KV cache and still generates the same", async () => {
  const first = prompt("import os\nimport sys\n\ndef main():\n");
  const { slot } = await viaEngine(first);
  const extended = prompt("import os\nimport sys\n\ndef main():\n    args = sys.argv[1:]\n");
  assert.equal(engine.acquireSlot(extended.tokens), slot, "the slot with the shared prefix is picked");
  const { tokens } = await viaEngine(extended, slot);
  assert.deepEqual(tokens, (await viaNodeLlamaCpp(extended.tokens)).slice(0, tokens.length));
});

test("a long prompt can be cancelled while it is being evaluated, and the slot keeps what was done", async () => {
  const long = prompt(Array.from({ length: 150 }, (_, i) => `x${i} = compute(${i}, "value ${i}")\n`).join(""));
  assert.ok(long.tokens.length > 3 * engine.context.batchSize, `${long.tokens.length} prompt tokens`);

  // Uncancelled, on a fresh slot: how long the prompt takes to evaluate.
  const fresh = engine.acquireSlot();
  await fresh.clearHistory();
  const t0 = performance.now();
  const whole = await viaEngine(long, fresh);
  const promptMs = whole.result.firstTokenMs;
  assert.ok(promptMs > 0 && performance.now() - t0 >= promptMs);

  // Cancelled a quarter of the way in, on a fresh slot again.
  await fresh.clearHistory();
  const abort = new AbortController();
  setTimeout(() => abort.abort(), promptMs / 4);
  const started = performance.now();
  const cancelled = await viaEngine(long, engine.acquireSlot(), abort.signal);
  const took = performance.now() - started;
  assert.equal(cancelled.result.stopReason, "cancelled");
  assert.equal(cancelled.result.tokensOut, 0);
  assert.ok(
    took < promptMs * 0.75,
    `cancelled after ${took.toFixed(0)} ms; the whole prompt takes ${promptMs.toFixed(0)} ms`,
  );
  const kept = cancelled.slot.contextTokens.length;
  assert.ok(
    kept > 0 && kept < long.tokens.length,
    `the slot keeps the ${kept} prompt tokens evaluated before the cancel`,
  );
  assert.deepEqual(cancelled.slot.contextTokens, long.tokens.slice(0, kept));
});
