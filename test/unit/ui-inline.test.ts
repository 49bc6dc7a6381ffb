// The pure logic of inline completions: context window, cache (typing into a suggestion), the
// repeat filter, and the one-request-per-editor gate with its debounce.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  contextWindow,
  cursorAllowsCompletion,
  wantsMultiline,
} from "../../extension/src/ui-core/inline/context-window";
import { ExtraContext } from "../../extension/src/ui-core/inline/extra-context";
import { pickWorker } from "../../extension/src/ui-core/inline/keeper-backend";
import { CompletionCache } from "../../extension/src/ui-core/inline/completion-cache";
import { cleanSuggestion, trimToIndent } from "../../extension/src/ui-core/inline/suggestion-filter";
import { debounce, RequestGate, SupersededError } from "../../extension/src/ui-core/inline/request-gate";

test("context window: short texts pass through unchanged", () => {
  assert.deepEqual(contextWindow("const a = ", ";\n", { maxPrefixChars: 100, maxSuffixChars: 100 }), {
    prefix: "const a = ",
    suffix: ";\n",
  });
});

test("context window: long prefix is cut to the limit at a line start, keeping the cursor's line", () => {
  const before = "line one\nline two\nline three\nconst x = ";
  const w = contextWindow(before, "", { maxPrefixChars: 25, maxSuffixChars: 10 });
  assert.ok(w.prefix.length <= 25);
  assert.equal(w.prefix, "line three\nconst x = ");
  // A single long line is cut mid-line rather than dropped.
  const oneLine = "x".repeat(50);
  assert.equal(contextWindow(oneLine, "", { maxPrefixChars: 20, maxSuffixChars: 10 }).prefix, "x".repeat(20));
});

test("context window: the prefix's front edge stays put while typing, and moves in steps of a quarter of the limit", () => {
  const doc = Array.from({ length: 400 }, (_, i) => `line ${i} of the document\n`).join("");
  const limits = { maxPrefixChars: 1000, maxSuffixChars: 100 };
  const fronts = new Set<number>();
  for (let cursor = 5000; cursor < 5250; cursor++) {
    // The provider reads a little more than the limit before the cursor; where it starts must not matter.
    const start = cursor - 1300;
    const w = contextWindow(doc.slice(start, cursor), doc.slice(cursor), limits, start);
    assert.ok(
      w.prefix.length <= limits.maxPrefixChars && w.prefix.length >= limits.maxPrefixChars * 0.7,
      `${w.prefix.length}`,
    );
    fronts.add(cursor - w.prefix.length);
    assert.equal(doc[cursor - w.prefix.length - 1], "\n", "the prefix starts at a line start");
  }
  assert.ok(fronts.size <= 2, `250 keystrokes moved the front edge to ${fronts.size} places`);
});

test("multi-line where a block starts, one line elsewhere; a multi-line suggestion ends before a line indented less than the cursor's", () => {
  assert.equal(wantsMultiline("function f(a) {", ""), true);
  assert.equal(wantsMultiline("    ", ""), true);
  assert.equal(wantsMultiline("  const x = compute(", ")"), false, "mid-line: the rest of the line follows");
  assert.equal(wantsMultiline("  const x = 1", ""), false);
  assert.equal(wantsMultiline("  // explain {", ""), false, "a one-line comment");
  assert.equal(trimToIndent("a = 1\n    b = 2\n}\nnext()", 4), "a = 1\n    b = 2");
  assert.equal(trimToIndent("a = 1\n    b = 2", 4), "a = 1\n    b = 2");
});

test("extra context: picks queue until a flush; the ring keeps the newest chunks, and similar chunks of a file replace each other", () => {
  const limits = { maxChunks: 2, chunkLines: 4, scopeLines: 32 };
  const x = new ExtraContext(() => limits);
  const file = (tag: string) => Array.from({ length: 20 }, (_, i) => `${tag} line ${i};`).join("\n");
  x.pickAround("a.ts", file("a"), 10);
  assert.equal(x.chunks.length, 0);
  assert.equal(x.flush(), true);
  assert.deepEqual(
    x.chunks.map((c) => c.filename),
    ["a.ts"],
  );
  assert.equal(x.chunks[0].text.split("\n").length, 4);
  x.pickAround("a.ts", file("a"), 11); // mostly the same lines: replaces the first chunk
  x.pickAround("b.ts", file("b"), 3);
  x.flush();
  assert.deepEqual(
    x.chunks.map((c) => c.filename),
    ["a.ts", "b.ts"],
  );
  const version = x.version;
  x.pickAround("b.ts", file("b"), 3); // identical: the ring (and the worker's cache) stays as it is
  assert.equal(x.flush(), false);
  assert.equal(x.version, version);
  x.pickText("c.ts", "copied();\nmore();\n");
  x.flush();
  assert.deepEqual(
    x.chunks.map((c) => c.filename),
    ["b.ts", "c.ts"],
    "the oldest is evicted",
  );
  const off = new ExtraContext(() => ({ ...limits, maxChunks: 0 }));
  off.pickText("c.ts", "copied();\nmore();\n");
  assert.equal(off.flush(), false);
});

test("affinity: a file keeps its worker while the fleet is unchanged; removing a worker moves only its files", () => {
  const fleet = ["w1", "w2", "w3"].map((id) => ({ id }));
  const files = Array.from({ length: 60 }, (_, i) => `file:///src/f${i}.ts`);
  const first = files.map((f) => pickWorker(fleet, f).id);
  assert.deepEqual(
    files.map((f) => pickWorker([...fleet].reverse(), f).id),
    first,
    "order of the list does not matter",
  );
  assert.equal(new Set(first).size, 3);
  const without = files.map(
    (f) =>
      pickWorker(
        fleet.filter((w) => w.id !== "w2"),
        f,
      ).id,
  );
  files.forEach((_, i) => {
    if (first[i] !== "w2") assert.equal(without[i], first[i]);
  });
});

test("context window: long suffix is cut at the end of a whole line", () => {
  const after = ");\nreturn a;\nreturn b;\n}";
  const w = contextWindow("f(", after, { maxPrefixChars: 10, maxSuffixChars: 15 });
  assert.equal(w.suffix, ");\nreturn a;\n");
});

test("completions are offered at line ends and before closers, not inside words", () => {
  assert.equal(cursorAllowsCompletion(""), true);
  assert.equal(cursorAllowsCompletion(")"), true);
  assert.equal(cursorAllowsCompletion("  ]);"), true);
  assert.equal(cursorAllowsCompletion("foo)"), false);
  assert.equal(cursorAllowsCompletion("x"), false);
});

test("cache: an exact context is a hit; another suffix or scope is not", () => {
  const cache = new CompletionCache();
  cache.set({ scope: "ts", prefix: "function add(a, b) {\n  return ", suffix: "\n}" }, "a + b;");
  assert.equal(cache.get({ scope: "ts", prefix: "function add(a, b) {\n  return ", suffix: "\n}" }), "a + b;");
  assert.equal(
    cache.get({ scope: "ts", prefix: "function add(a, b) {\n  return ", suffix: "\n}\n// more" }),
    undefined,
  );
  assert.equal(cache.get({ scope: "py", prefix: "function add(a, b) {\n  return ", suffix: "\n}" }), undefined);
});

test("cache: typing the start of a suggestion serves the rest; typing something else or all of it does not", () => {
  const cache = new CompletionCache();
  const prefix = "function add(a, b) {\n  return ";
  cache.set({ scope: "ts", prefix, suffix: "\n}" }, "a + b;");
  assert.equal(cache.get({ scope: "ts", prefix: prefix + "a", suffix: "\n}" }), " + b;");
  assert.equal(cache.get({ scope: "ts", prefix: prefix + "a + ", suffix: "\n}" }), "b;");
  assert.equal(cache.get({ scope: "ts", prefix: prefix + "x", suffix: "\n}" }), undefined);
  assert.equal(
    cache.get({ scope: "ts", prefix: prefix + "a + b;", suffix: "\n}" }),
    undefined,
    "a suggestion typed out in full is used up",
  );
});

test("cache: typed-through hits survive the window sliding forward (only the tail is compared)", () => {
  const cache = new CompletionCache(8, 32);
  const body = "x".repeat(500) + "\nconst total = ";
  cache.set({ scope: "ts", prefix: body.slice(-200), suffix: "" }, "items.length;");
  // The new window starts 5 characters later and ends with the 5 typed characters.
  const typed = body + "items";
  assert.equal(cache.get({ scope: "ts", prefix: typed.slice(-200), suffix: "" }), ".length;");
});

test("cache: a prefix shorter than the tail only matches at the start of the document", () => {
  const cache = new CompletionCache(8, 64);
  cache.set({ scope: "ts", prefix: "let ", suffix: "" }, "value = 1;");
  assert.equal(cache.get({ scope: "ts", prefix: "let val", suffix: "" }), "ue = 1;");
  assert.equal(cache.get({ scope: "ts", prefix: "// x\nlet val", suffix: "" }), undefined);
});

test("cache: least recently used entries are evicted first; a hit refreshes an entry", () => {
  const cache = new CompletionCache(2, 64);
  cache.set({ scope: "s", prefix: "a", suffix: "" }, "1");
  cache.set({ scope: "s", prefix: "b", suffix: "" }, "2");
  assert.equal(cache.get({ scope: "s", prefix: "a", suffix: "" }), "1"); // a is now the most recent
  cache.set({ scope: "s", prefix: "c", suffix: "" }, "3");
  assert.equal(cache.size, 2);
  assert.equal(cache.get({ scope: "s", prefix: "b", suffix: "" }), undefined);
  assert.equal(cache.get({ scope: "s", prefix: "a", suffix: "" }), "1");
  assert.equal(cache.get({ scope: "s", prefix: "c", suffix: "" }), "3");
});

test("cache: a hit takes well under a millisecond with a full cache of long contexts", () => {
  const cache = new CompletionCache(64, 256);
  for (let i = 0; i < 64; i++)
    cache.set(
      { scope: "ts", prefix: `${"y".repeat(3000)}\n// entry ${i}\nconst v${i} = `, suffix: "\n".repeat(500) },
      `compute(${i});`,
    );
  const prefix = `${"y".repeat(3000)}\n// entry 0\nconst v0 = comp`;
  const n = 200;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) assert.equal(cache.get({ scope: "ts", prefix, suffix: "\n".repeat(500) }), "ute(0);");
  const perHit = (performance.now() - t0) / n;
  assert.ok(perHit < 1, `a cache hit took ${perHit.toFixed(3)} ms`);
});

test("suggestions that repeat the text after the cursor are dropped", () => {
  assert.equal(cleanSuggestion("return a + b;\n}", "\n  return a + b;\n}"), undefined);
  assert.equal(cleanSuggestion("   \n ", "x"), undefined);
  // The model re-emits the next line.
  assert.equal(cleanSuggestion("console.log(x);", "\nconsole.log(x);\n"), undefined);
  // New text is kept, trailing whitespace goes.
  assert.equal(cleanSuggestion("a + b;  \n", "\n}"), "a + b;");
});

test("a suggestion ending with the rest of the line loses that ending (no doubled bracket)", () => {
  assert.equal(cleanSuggestion("a, b)", ")"), "a, b");
  assert.equal(cleanSuggestion("a, b);", ");\nnext"), "a, b");
  assert.equal(cleanSuggestion(")", ")"), undefined);
  // Unrelated endings are left alone.
  assert.equal(cleanSuggestion("a, b", ")"), "a, b");
});

test("gate: a new request for an editor aborts the one in flight there, not other editors'", () => {
  const gate = new RequestGate();
  const first = gate.begin("editor-1");
  const other = gate.begin("editor-2");
  const second = gate.begin("editor-1");
  assert.equal(first.signal.aborted, true);
  assert.ok(first.signal.reason instanceof SupersededError);
  assert.equal(second.signal.aborted, false);
  assert.equal(other.signal.aborted, false);
  first.release(); // a late release of the old request must not drop the new one
  assert.equal(gate.inFlight, 2);
  second.release();
  other.release();
  assert.equal(gate.inFlight, 0);
});

test("gate: the caller's cancellation aborts the request", () => {
  const gate = new RequestGate();
  const vscodeToken = new AbortController();
  const t = gate.begin("e", vscodeToken.signal);
  vscodeToken.abort();
  assert.equal(t.signal.aborted, true);
  t.release();
  const already = new AbortController();
  already.abort();
  assert.equal(gate.begin("e", already.signal).signal.aborted, true);
});

test("debounce: resolves true after the delay, false at once when aborted", async () => {
  const c = new AbortController();
  const t0 = Date.now();
  assert.equal(await debounce(30, c.signal), true);
  assert.ok(Date.now() - t0 >= 25);
  const d = new AbortController();
  const p = debounce(10_000, d.signal);
  const t1 = Date.now();
  d.abort();
  assert.equal(await p, false);
  assert.ok(Date.now() - t1 < 1000);
  assert.equal(await debounce(0, new AbortController().signal), true);
});
