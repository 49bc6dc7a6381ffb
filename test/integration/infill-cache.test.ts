// What a keystroke costs the worker: the infill prompt's layout (extra context first, capped suffix,
// prefix cut in steps) lets a slot's KV cache hold everything but the new tokens and the suffix;
// a warm-up fills the cache without generating; a request that extends a cancelled one waits for
// that slot instead of starting cold. The real engine on a generated model; a real source file the
// project did not write (from node_modules) as the text typed into.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { Engine, type Prompt } from "../../hive-agent/src/worker/engine";
import { infillLimits } from "../../hive-agent/src/worker/infill-prompt";
import { ensureModel, REPO_ROOT } from "../fixtures/models";

let engine: Engine;
const CONTEXT = 4096;
const source = readFileSync(path.join(REPO_ROOT, "node_modules", "ssh2", "lib", "client.js"), "utf8");

before(async () => {
  engine = await Engine.load({
    modelPath: ensureModel("tiny"),
    backend: "cpu",
    contextSize: CONTEXT,
    slots: 2,
    threads: 1,
  });
});
after(() => engine.dispose());

async function run(p: Prompt, maxTokens = 2) {
  const prepared = engine.prepare(p, maxTokens);
  const slot = await engine.acquireSlotWarm(prepared.tokens);
  try {
    const result = await engine.generate(
      slot,
      prepared,
      { max_tokens: maxTokens, temperature: 0, seed: 1 },
      new AbortController().signal,
      () => {},
    );
    return { result, prepared, slot, evaluated: result.promptTokens - result.cachedTokens };
  } finally {
    engine.releaseSlot(slot);
  }
}

test("typing into a long file re-evaluates only the new tokens and the capped suffix; the prefix's front edge holds still", async () => {
  const limits = infillLimits(CONTEXT, 2);
  const cursor = 30_000; // far past the prefix cap: the prefix is cut
  const typed = source.slice(cursor, cursor + 40);
  const suffix = source.slice(cursor + 40);
  const first = await run({ kind: "infill", prefix: source.slice(0, cursor), suffix });
  assert.ok(
    first.prepared.tokens.length <= limits.prefixTokens + limits.suffixTokens + 4,
    `${first.prepared.tokens.length} prompt tokens`,
  );
  const costs: number[] = [];
  for (let i = 1; i <= typed.length; i++)
    costs.push((await run({ kind: "infill", prefix: source.slice(0, cursor) + typed.slice(0, i), suffix })).evaluated);
  // Each keystroke: its new tokens (a few), the suffix, the markers. Only a step of the prefix's
  // front edge (every quarter of the cap, so at most once in 40 characters) costs the whole prompt.
  const cheap = costs.filter((c) => c <= limits.suffixTokens + 12);
  assert.ok(cheap.length >= costs.length - 1, `evaluated per keystroke: ${costs.join(" ")}`);
});

test("extra context goes before the prefix and stays cached while typing; the oldest chunks are left out when over budget", async () => {
  const chunk = (i: number) => ({ filename: `lib/file${i}.js`, text: source.slice(i * 2000, i * 2000 + 1500) });
  const extra = [chunk(1), chunk(2), chunk(3)];
  const prefix = source.slice(20_000, 21_000);
  const suffix = source.slice(21_000, 21_400);
  const first = await run({ kind: "infill", prefix, suffix, extra });
  const text = engine.model.detokenize(first.prepared.tokens, true);
  // The generated test model has no repo-level FIM tokens: each chunk under a plain header, before <PRE>.
  const at = (s: string) => text.indexOf(s);
  assert.ok(
    at("--- lib/file1.js ---") >= 0 && at("--- lib/file1.js ---") < at("--- lib/file3.js ---"),
    text.slice(0, 200),
  );
  assert.ok(at("--- lib/file3.js ---") < at(engine.model.tokens.infill.prefixString!));
  const typing = await run({ kind: "infill", prefix: prefix + "x", suffix, extra });
  assert.ok(
    typing.evaluated < 160,
    `a keystroke evaluated ${typing.evaluated} of ${typing.result.promptTokens} tokens`,
  );
  assert.ok(typing.result.cachedTokens > 1000, "the extra context came from the cache");

  const many = Array.from({ length: 12 }, (_, i) => chunk(i + 1));
  const over = await run({ kind: "infill", prefix, suffix, extra: many });
  const overText = engine.model.detokenize(over.prepared.tokens, true);
  assert.ok(overText.includes("--- lib/file12.js ---"), "the newest chunk is kept");
  assert.ok(!overText.includes("--- lib/file1.js ---"), "the oldest chunk is left out");
  assert.ok(over.prepared.tokens.length + 2 <= CONTEXT);
});

test("a warm-up (max_tokens 0) fills the cache without generating; the request after it evaluates one token", async () => {
  // Extra context beyond the budget: the warm-up must leave out the same chunks as the completion.
  const extra = Array.from({ length: 8 }, (_, i) => ({
    filename: `c${i}.js`,
    text: source.slice(i * 3000, i * 3000 + 2500),
  }));
  const p: Prompt = {
    kind: "infill",
    prefix: source.slice(25_000, 27_000),
    suffix: source.slice(27_000, 27_500),
    extra,
  };
  const warm = await run(p, 0);
  assert.equal(warm.result.tokensOut, 0);
  assert.ok(warm.evaluated > 500);
  const next = await run(p, 48);
  assert.equal(next.result.tokensOut, 48);
  assert.equal(next.evaluated, 1);
});

test("a request that extends a cancelled one waits for that slot (its cache), not a cold one", async () => {
  const p = engine.prepare({ kind: "infill", prefix: source.slice(0, 3000), suffix: "" }, 2);
  const warm = await run({ kind: "infill", prefix: source.slice(0, 3000), suffix: "" });
  const abort = new AbortController();
  const busy = engine.acquireSlot(p.tokens, abort.signal);
  assert.equal(busy, warm.slot);
  abort.abort();
  let resolved = false;
  const next = engine.acquireSlotWarm(p.tokens).then((s) => ((resolved = true), s));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(resolved, false, "it waits while the cancelled request still holds the slot");
  engine.releaseSlot(busy);
  const got = await next;
  assert.equal(got, warm.slot);
  engine.releaseSlot(got);

  // A slot busy with a live request is not waited for: the free one is taken at once.
  const live = engine.acquireSlot(p.tokens, new AbortController().signal);
  const other = await engine.acquireSlotWarm(p.tokens);
  assert.notEqual(other, live);
  engine.releaseSlot(other);
  engine.releaseSlot(live);
});
