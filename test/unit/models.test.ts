// The generated test models: valid GGUF, real tokenizer, FIM, determinism, exactly max_tokens.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ensureModel, buildModel, PRESETS } from "../fixtures/models";
import { encodeQ8_0, fromF16, readMetadata, toF16 } from "../../hive-agent/src/util/gguf";

test("f16 conversion round-trips representative values", () => {
  for (const x of [0, 1, -2.5, 0.000123, 65504, 1 / 3, 6e-8]) {
    const back = fromF16(toF16(x));
    assert.ok(Math.abs(back - x) <= Math.abs(x) * 1e-3 + 6e-8, `${x} → ${back}`);
  }
  assert.equal(toF16(1e6), 0x7c00);
});

test("q8_0 blocks hold a scale and 32 rounded values", () => {
  const v = new Float32Array(32).map((_, i) => (i - 16) / 16);
  const q = encodeQ8_0(v);
  assert.equal(q.length, 34);
  const d = fromF16(q[0] | (q[1] << 8));
  assert.ok(Math.abs(d - 1 / 127) < 1e-5);
  assert.equal(new Int8Array(q.buffer, 2, 32)[0], -127);
});

test("the same seed gives the same bytes; another seed does not", () => {
  const a = buildModel(PRESETS.tiny, 7);
  const b = buildModel(PRESETS.tiny, 7);
  const c = buildModel(PRESETS.tiny, 8);
  assert.ok(a.equals(b));
  assert.ok(!a.equals(c));
  const dir = mkdtempSync(path.join(tmpdir(), "rbee-models-"));
  assert.ok(readFileSync(ensureModel("tiny", 7, dir)).equals(a));
});

test("the tiny model carries the grafted tokenizer and llama hyperparameters", () => {
  const kv = readMetadata(readFileSync(ensureModel("tiny")));
  assert.equal(kv.get("general.architecture")?.value, "llama");
  assert.equal(kv.get("tokenizer.ggml.pre")?.value, "deepseek-coder");
  assert.equal((kv.get("tokenizer.ggml.tokens") as any).value.length, 32256);
  assert.equal(kv.get("llama.embedding_length")?.value, PRESETS.tiny.nEmbd);
});

test("the tiny model loads in node-llama-cpp: tokenizer round-trips, infill is supported, runs reach max_tokens", async () => {
  const { getLlama, LlamaCompletion } = await import("node-llama-cpp");
  const llama = await getLlama({ gpu: false, build: "never" });
  const model = await llama.loadModel({ modelPath: ensureModel("tiny") });
  try {
    for (const text of [
      "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
      "ünïcödé ✓ 日本語",
      "  indented\ttabs",
    ]) {
      assert.equal(model.detokenize(model.tokenize(text)), text);
    }
    const ctx = await model.createContext({ contextSize: 512, threads: 1 });
    const completion = new LlamaCompletion({ contextSequence: ctx.getSequence() });
    assert.ok(completion.infillSupported);
    let n = 0;
    await completion.generateCompletion("x", {
      maxTokens: 200,
      temperature: 1,
      seed: 5,
      onToken: (t) => (n += t.length),
    });
    assert.equal(n, 200, "an end-of-generation token was sampled");
    let m = 0;
    await completion.generateInfillCompletion("def f(", "):\n", {
      maxTokens: 50,
      temperature: 1,
      seed: 5,
      onToken: (t) => (m += t.length),
    });
    assert.equal(m, 50);
    await ctx.dispose();
  } finally {
    await model.dispose();
    await llama.dispose();
  }
});
