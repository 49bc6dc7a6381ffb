// The inline completion engine against real workers (keeper stack, generated tiny model): file
// affinity across a fleet of two workers, the extra-context ring and its warm-up, a prefetched
// suggestion served on accept, a running generation reused when the user types along it, and the
// time budget. Wall-clock speed is not asserted anywhere: counts of requests and tokens are.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { ensureModel } from "../fixtures/models";
import { waitUntil } from "../helpers/wait";
import type { RbeeServices } from "../../extension/src/ui-core/services";
import { openTestServices, type TestServices } from "../helpers/services";
import {
  CompletionEngine,
  DEFAULT_ENGINE_SETTINGS,
  type EngineSettings,
} from "../../extension/src/ui-core/inline/completion-engine";
import { KeeperCompletionBackend } from "../../extension/src/ui-core/inline/keeper-backend";

let stack: TestServices;
let services: RbeeServices;
let backend: KeeperCompletionBackend;
const model = `file:${ensureModel("tiny")}`;
const workerIds: string[] = [];
let settings: EngineSettings;
const lines = Array.from({ length: 60 }, (_, i) => `function helper${i}(a, b) {\n  return a * ${i} + b;\n}\n`).join("");

before(async () => {
  stack = openTestServices("rbee-inline-engine-");
  services = stack.services;
  const keeper = await services.keeper();
  // Two workers of one model (they differ in slots only): a fleet of two.
  for (const slots of [2, 3])
    workerIds.push(
      (await keeper.ensureWorker({ node: "localhost", model, slots, backend: "cpu", threads: 1 })).worker.id,
    );
  backend = new KeeperCompletionBackend(() => services.keeper());
  settings = {
    ...DEFAULT_ENGINE_SETTINGS,
    model,
    debounceMs: 0,
    maxTokens: 8,
    multiline: "always",
    timeBudgetMs: 0,
    prefetch: false,
  };
});
after(async () => stack.close());

test("affinity: each file always goes to the same worker of the fleet, and its next keystroke finds its prompt cached there", async () => {
  assert.notEqual(workerIds[0], workerIds[1]);
  const chosen = new Map<string, string>();
  for (let round = 0; round < 3; round++)
    for (let f = 0; f < 12; f++) {
      const r = await backend.resolveTarget(settings, `file:///src/f${f}.ts`);
      assert.ok("target" in r);
      const id = r.target.workerId!;
      assert.ok(workerIds.includes(id));
      if (round === 0) chosen.set(`f${f}`, id);
      else assert.equal(id, chosen.get(`f${f}`), `f${f} moved to another worker`);
    }
  assert.equal(new Set(chosen.values()).size, 2, "the files spread over both workers");

  const engine = new CompletionEngine(backend, () => settings);
  const before = lines + "function next(a) {\n  ";
  const first = await engine.complete({ editor: "file:///src/a.ts", languageId: "typescript", before, after: "\n}\n" });
  assert.ok(first.promptTokens! > 500);
  const second = await engine.complete({
    editor: "file:///src/a.ts",
    languageId: "typescript",
    before: before + "x",
    after: "\n}\n",
  });
  assert.equal(second.source === "worker" || second.source === "skipped", true, second.reason);
  assert.ok(
    second.promptTokens! - second.cachedTokens! < 20,
    `the keystroke evaluated ${second.promptTokens! - second.cachedTokens!} of ${second.promptTokens} tokens`,
  );
  engine.dispose();
});

test("extra context: the ring keeps the newest chunks, drops duplicates, changes only on a pause, and the pause's warm-up leaves the next keystroke cached", async () => {
  const s = { ...settings, extraContext: { maxChunks: 3, chunkLines: 8, scopeLines: 64 } };
  const engine = new CompletionEngine(backend, () => s);
  const file = (n: number) => Array.from({ length: 40 }, (_, i) => `const v${n}_${i} = load("${n}/${i}");`).join("\n");
  for (let n = 0; n < 5; n++) engine.extra.pickAround(`lib/m${n}.js`, file(n), 20);
  engine.extra.pickAround("lib/m4.js", file(4), 21); // the same region again: a duplicate
  assert.equal(engine.extra.chunks.length, 0, "nothing enters the ring on a keystroke");
  const before = lines + "function next(a) {\n  ";
  const plain = await engine.complete({ editor: "e1", languageId: "javascript", before, after: "\n}\n" });
  assert.ok(await engine.onIdle("e1"), "the pause moved the queue into the ring and warmed the worker");
  assert.deepEqual(
    engine.extra.chunks.map((c) => c.filename),
    ["lib/m2.js", "lib/m3.js", "lib/m4.js"],
  );
  assert.equal(engine.counters.warmups, 1);
  const typed = await engine.complete({ editor: "e1", languageId: "javascript", before: before + "y", after: "\n}\n" });
  assert.ok(typed.promptTokens! > plain.promptTokens! + 100, "the chunks are in the prompt");
  assert.ok(
    typed.promptTokens! - typed.cachedTokens! < 20,
    `after the warm-up a keystroke evaluated ${typed.promptTokens! - typed.cachedTokens!} tokens`,
  );
  assert.equal(await engine.onIdle("e1"), false, "no new chunks, no warm-up");
  engine.dispose();
});

test("prefetch: once a suggestion is shown the next one is fetched; accepting it shows that one without a request", async () => {
  const s = { ...settings, prefetch: true };
  const engine = new CompletionEngine(backend, () => s);
  const before = lines + "function prefetched(a) {\n  ";
  const shown = await engine.complete({ editor: "p", languageId: "javascript", before, after: "\n" });
  assert.equal(shown.source, "worker", shown.reason);
  assert.equal(engine.counters.prefetches, 1);
  await waitUntil(() => !engine.prefetching("p"), { timeout: 30_000, what: "the prefetch", intervalMs: 10 });
  const requests = engine.counters.requests;
  const accepted = await engine.complete({
    editor: "p",
    languageId: "javascript",
    before: before + shown.text!,
    after: "\n",
  });
  assert.equal(accepted.source, "cache");
  assert.ok(accepted.text);
  assert.equal(engine.counters.requests, requests, "no request on accept");
  engine.dispose();
});

test("typing along a running generation's output reuses it instead of cancelling it", async () => {
  const s = { ...settings, maxTokens: 400 };
  const engine = new CompletionEngine(backend, () => s);
  const before = lines + "function running(a) {\n  ";
  const first = engine.complete({ editor: "r", languageId: "javascript", before, after: "\n" });
  const soFar = await waitUntil(
    () => {
      const t = engine.runningText("r");
      return t && t.trim().length >= 2 ? t : undefined;
    },
    { timeout: 30_000, what: "the first generated characters", intervalMs: 5 },
  );
  const typed = soFar.slice(0, soFar.search(/\S/) + 1);
  const requests = engine.counters.requests;
  const second = await engine.complete({ editor: "r", languageId: "javascript", before: before + typed, after: "\n" });
  assert.equal((await first).source, "cancelled", "the first request was superseded in the editor");
  assert.equal(second.source, "reused", second.reason);
  assert.equal(engine.counters.requests, requests, "no new request");
  assert.equal(engine.counters.cancelled, 0, "the generation ran to its end");
  assert.ok(second.text && second.text.length > 0);
  engine.dispose();
});

test("the time budget stops a long generation before max_tokens", async () => {
  const s = { ...settings, maxTokens: 1000, timeBudgetMs: 1 };
  const engine = new CompletionEngine(backend, () => s);
  const body = { prefix: lines, suffix: "\n", max_tokens: 1000, temperature: 1, seed: 5, t_max_predict_ms: 1 };
  const r = await backend.resolveTarget(s, "budget");
  assert.ok("target" in r);
  const result = await backend.infill(r.target, body, new AbortController().signal);
  // The generated model writes one endless line, so the hard bound (twice the budget) ends it.
  assert.equal(result.stopReason, "time_limit");
  assert.ok(result.text.length > 0);
  const unlimited = await backend.infill(
    r.target,
    { ...body, t_max_predict_ms: undefined, max_tokens: 200 },
    new AbortController().signal,
  );
  assert.equal(unlimited.stopReason, "max_tokens");
  engine.dispose();
});

test("per-language settings: a language switched off is skipped; another language's maxTokens bounds its suggestions", async () => {
  const s: EngineSettings = {
    ...settings,
    multiline: "always",
    languages: { markdown: { enabled: false }, python: { maxTokens: 3 } },
  };
  const engine = new CompletionEngine(backend, () => s);
  const off = await engine.complete({ editor: "md", languageId: "markdown", before: "# Title\n\n", after: "" });
  assert.equal(off.source, "skipped");
  assert.equal(engine.counters.requests, 0);
  const py = await engine.complete({ editor: "py", languageId: "python", before: "def f(a):\n    ", after: "\n" });
  assert.ok(py.source === "worker" || py.source === "skipped", py.reason);
  const js = await engine.complete({
    editor: "js",
    languageId: "javascript",
    before: "function f(a) {\n  ",
    after: "\n}\n",
  });
  assert.ok(js.source === "worker" || js.source === "skipped", js.reason);
  // The worker's own count: python's override, the global maxTokens elsewhere.
  assert.equal(py.tokensOut, 3);
  assert.equal(js.tokensOut, settings.maxTokens);
  engine.dispose();
});
