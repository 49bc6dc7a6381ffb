// Typing replay (issue 14): a region of a real source file the project did not write (ssh2, from
// node_modules) is cut out and typed back one character at a time with human timing (~8 chars/s,
// a pause at each line end and every few dozen characters), driving the real completion engine.
// Keystroke gaps are real (125 ms ± jitter); a pause lasts only until the engine is idle (its
// suggestion shown, its warm-up done) instead of a human's seconds, so a run takes about a minute.
//
// Rows: the engine against a real worker (keeper backend), with and without extra context from 5
// other files; the same engine against llama-server's /infill (built as the peer bench builds it)
// on the same trace; and the raw API: every keystroke's whole prefix and suffix straight to the
// worker's /v1/infill and llama-server's /infill, each waited for (what the issue measured).
// Per 100 keystrokes: requests, cancelled, shown, cache hits, prompt tokens evaluated (by requests
// that finished: llama-server reports nothing for a cancelled one); latency keystroke → ghost text
// p50/p90.

import { readFileSync } from "node:fs";
import path from "node:path";
import { ensureModel, prng } from "../fixtures/models";
import { REPO_ROOT } from "../helpers/hive";
import { openTestServices } from "../helpers/services";
import {
  CompletionEngine,
  DEFAULT_ENGINE_SETTINGS,
  type CompletionBackend,
  type CompletionOutcome,
  type EngineSettings,
  type InfillRequestBody,
  type InfillResult,
} from "../../extension/src/ui-core/inline/completion-engine";
import { KeeperCompletionBackend } from "../../extension/src/ui-core/inline/keeper-backend";
import { percentile, round } from "./common";
import { ensureLlamaServer, startLlamaServer } from "./llama-server";

const SRC = path.join(REPO_ROOT, "node_modules", "ssh2", "lib");
const TARGET = "client.js";
const OTHERS = ["server.js", "agent.js", "keygen.js", "utils.js", "http-agents.js"];
/** Where typing starts in the target file, and how much is typed back. */
const CUT_AT = 9_000;
const TYPED = 240;
const RAW_KEYSTROKES = 24;
const CONTEXT = 4096;

/** llama-server's /infill as a CompletionBackend: llama.cpp's own field names, its cache_prompt. */
class LlamaServerBackend implements CompletionBackend {
  constructor(private readonly url: string) {}
  async resolveTarget() {
    return { target: { node: "llama-server", model: "small" } };
  }
  async infill(
    _t: unknown,
    body: InfillRequestBody,
    signal: AbortSignal,
    onText?: (t: string) => void,
  ): Promise<InfillResult> {
    const res = await fetch(`${this.url}/infill`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      signal,
      body: JSON.stringify({
        input_prefix: body.prefix,
        input_suffix: body.suffix,
        input_extra: body.input_extra ?? [],
        n_predict: body.max_tokens,
        temperature: body.temperature,
        seed: body.seed ?? 1,
        stop: body.stop ?? [],
        t_max_predict_ms: body.t_max_predict_ms,
        n_indent: body.n_indent ?? 0,
        cache_prompt: true,
        stream: true,
      }),
    });
    if (res.status !== 200 || !res.body)
      throw new Error(`llama-server /infill answered ${res.status}: ${await res.text()}`);
    let text = "";
    let pending = "";
    let timings: Record<string, number> = {};
    const decoder = new TextDecoder();
    const t0 = performance.now();
    try {
      for await (const chunk of res.body) {
        pending += decoder.decode(chunk as Uint8Array, { stream: true });
        let nl: number;
        while ((nl = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, nl).trim();
          pending = pending.slice(nl + 1);
          if (!line.startsWith("data: ")) continue;
          const e = JSON.parse(line.slice(6)) as { content?: string; timings?: Record<string, number> };
          if (e.content) onText?.((text += e.content));
          if (e.timings) timings = e.timings;
        }
      }
    } catch (e) {
      if (signal.aborted) return { text, stopReason: "cancelled", workerMs: performance.now() - t0 };
      throw e;
    }
    const evaluated = timings.prompt_n ?? 0;
    return {
      text,
      stopReason: "max_tokens",
      workerMs: (timings.prompt_ms ?? 0) + (timings.predicted_ms ?? 0),
      promptTokens: evaluated + (timings.cache_n ?? 0),
      cachedTokens: timings.cache_n ?? 0,
    };
  }
}

interface Row {
  keystrokes: number;
  requests: number;
  cancelled: number;
  shown: number;
  cacheHits: number;
  reused: number;
  evaluated: number;
  latencies: number[];
}

/** Types the cut region back into the engine; returns the counts. */
async function replay(engine: CompletionEngine, text: string, extraFiles: string[]): Promise<Row> {
  const cut = text.slice(CUT_AT, CUT_AT + TYPED);
  const before0 = text.slice(0, CUT_AT);
  const after = text.slice(CUT_AT + TYPED);
  for (const f of extraFiles) {
    const other = readFileSync(path.join(SRC, f), "utf8");
    engine.extra.pickAround(f, other, Math.floor(other.split("\n").length / 2));
  }
  const random = prng(14);
  const row: Row = {
    keystrokes: 0,
    requests: 0,
    cancelled: 0,
    shown: 0,
    cacheHits: 0,
    reused: 0,
    evaluated: 0,
    latencies: [],
  };
  const pendingOutcomes: Promise<CompletionOutcome>[] = [];
  const pause = async () => {
    await Promise.all(pendingOutcomes.splice(0));
    await engine.onIdle("bench");
  };
  // The editor opens on the file: the first pause fills the ring and warms the cache.
  engine
    .complete({ editor: "bench", filename: TARGET, languageId: "javascript", before: before0, after: cut + after })
    .then(
      () => {},
      () => {},
    );
  await pause();
  const start = { ...engine.counters };
  for (let i = 1; i <= cut.length; i++) {
    const before = before0 + cut.slice(0, i);
    const p = engine.complete({
      editor: "bench",
      filename: TARGET,
      languageId: "javascript",
      before,
      after: cut.slice(i) + after,
    });
    row.keystrokes++;
    pendingOutcomes.push(
      p.then((o) => {
        if (o.text) {
          row.shown++;
          row.latencies.push(o.totalMs);
        }
        if (o.source === "cache") row.cacheHits++;
        return o;
      }),
    );
    if (cut[i - 1] === "\n" || i % 40 === 0) await pause();
    else await new Promise((r) => setTimeout(r, 95 + random() * 60));
  }
  await pause();
  const c = engine.counters;
  row.requests = c.requests - start.requests;
  row.cancelled = c.cancelled - start.cancelled;
  row.reused = c.reused - start.reused;
  row.evaluated = c.evaluatedTokens - start.evaluatedTokens;
  return row;
}

function per100(name: string, r: Row): Record<string, number | string> {
  const k = 100 / r.keystrokes;
  return {
    row: name,
    requests: round(r.requests * k, 1),
    cancelled: round(r.cancelled * k, 1),
    shown: round(r.shown * k, 1),
    cache_hits: round(r.cacheHits * k, 1),
    reused: round(r.reused * k, 1),
    tokens_evaluated: Math.round(r.evaluated * k),
    // The fair figure when one side is slower: its requests are cancelled more, and cancelled ones are not counted.
    tokens_per_finished_request: Math.round(r.evaluated / Math.max(1, r.requests - r.cancelled)),
    latency_p50_ms: r.latencies.length ? round(percentile(r.latencies, 50), 0) : -1,
    latency_p90_ms: r.latencies.length ? round(percentile(r.latencies, 90), 0) : -1,
  };
}

/**
 * The raw API: each keystroke's whole prefix and suffix, one request at a time, waited for; the two
 * servers take turns keystroke by keystroke, so load on the machine hits both alike.
 */
async function rawReplay(
  sides: { backend: CompletionBackend; target: { node: string; model: string } }[],
  text: string,
): Promise<{ p50: number; evaluatedPerKeystroke: number }[]> {
  const ms = sides.map(() => [] as number[]);
  const evaluated = sides.map(() => 0);
  const ask = (side: number, i: number) =>
    sides[side].backend.infill(
      sides[side].target,
      { prefix: text.slice(0, CUT_AT + i), suffix: text.slice(CUT_AT + i), max_tokens: 8, temperature: 0, seed: 1 },
      new AbortController().signal,
    );
  for (let side = 0; side < sides.length; side++) await ask(side, 0);
  for (let i = 1; i <= RAW_KEYSTROKES; i++)
    for (let side = 0; side < sides.length; side++) {
      const t0 = performance.now();
      const r = await ask(side, i);
      ms[side].push(performance.now() - t0);
      evaluated[side] += (r.promptTokens ?? 0) - (r.cachedTokens ?? 0);
    }
  return sides.map((_, side) => ({
    p50: percentile(ms[side], 50),
    evaluatedPerKeystroke: evaluated[side] / RAW_KEYSTROKES,
  }));
}

function merge(a: Row, b: Row): Row {
  return {
    keystrokes: a.keystrokes + b.keystrokes,
    requests: a.requests + b.requests,
    cancelled: a.cancelled + b.cancelled,
    shown: a.shown + b.shown,
    cacheHits: a.cacheHits + b.cacheHits,
    reused: a.reused + b.reused,
    evaluated: a.evaluated + b.evaluated,
    latencies: [...a.latencies, ...b.latencies],
  };
}

export async function benchTyping({ threads = 1 }: { threads?: number } = {}): Promise<
  Record<string, number | string>[]
> {
  const modelPath = ensureModel("small");
  const binary = await ensureLlamaServer((l) => console.error(l));
  const text = readFileSync(path.join(SRC, TARGET), "utf8");
  const stack = openTestServices("rbee-typing-bench-");
  const { services } = stack;
  const server = await startLlamaServer({ binary, model: modelPath, threads, parallel: 2, contextSize: 2 * CONTEXT });
  try {
    const model = `file:${modelPath}`;
    await (
      await services.keeper()
    ).ensureWorker({ node: "localhost", model, slots: 2, threads, contextSize: CONTEXT, backend: "cpu" });
    const settings: EngineSettings = { ...DEFAULT_ENGINE_SETTINGS, maxTokens: 16, model };
    const workerBackend = new KeeperCompletionBackend(() => services.keeper());
    const serverBackend = new LlamaServerBackend(server.url);
    const rows: Record<string, number | string>[] = [];
    const results: Record<string, Row> = {};
    // Each pair runs A-B-B-A (two passes each, merged), so drifting load on the machine hits both alike.
    for (const [name, backend, extra] of [
      ["worker", workerBackend, []],
      ["llama-server", serverBackend, []],
      ["llama-server", serverBackend, []],
      ["worker", workerBackend, []],
      ["worker + 5 files", workerBackend, OTHERS],
      ["llama-server + 5 files", serverBackend, OTHERS],
      ["llama-server + 5 files", serverBackend, OTHERS],
      ["worker + 5 files", workerBackend, OTHERS],
    ] as const) {
      const engine = new CompletionEngine(backend, () => settings);
      console.error(`typing: ${name}…`);
      const row = await replay(engine, text, [...extra]);
      engine.dispose();
      results[name] = results[name] ? merge(results[name], row) : row;
    }
    for (const name of ["worker", "llama-server", "worker + 5 files", "llama-server + 5 files"])
      rows.push(per100(name, results[name]));
    const target = (await workerBackend.resolveTarget(settings, "raw")) as { target: { node: string; model: string } };
    console.error("typing: raw API…");
    const [rawWorker, rawServer] = await rawReplay(
      [
        { backend: workerBackend, target: target.target },
        { backend: serverBackend, target: { node: "llama-server", model: "small" } },
      ],
      text,
    );
    rows.push({
      row: "raw /v1/infill, every keystroke",
      tokens_evaluated: Math.round(rawWorker.evaluatedPerKeystroke * 100),
      tokens_per_finished_request: Math.round(rawWorker.evaluatedPerKeystroke),
      latency_p50_ms: round(rawWorker.p50, 0),
    });
    rows.push({
      row: "raw llama-server /infill, every keystroke",
      tokens_evaluated: Math.round(rawServer.evaluatedPerKeystroke * 100),
      tokens_per_finished_request: Math.round(rawServer.evaluatedPerKeystroke),
      latency_p50_ms: round(rawServer.p50, 0),
    });
    const ratio = (a: string, b: string, f: (r: Row) => number) =>
      round(f(results[a]) / Math.max(1e-9, f(results[b])), 2);
    const p50 = (r: Row) => percentile(r.latencies, 50);
    rows.push({
      row: "ratios worker ÷ llama-server (targets: p50 ≤ 1.1, tokens ≤ 1)",
      latency_p50_ms: ratio("worker", "llama-server", p50),
      tokens_evaluated: ratio("worker", "llama-server", (r) => r.evaluated),
      tokens_per_finished_request: ratio(
        "worker",
        "llama-server",
        (r) => r.evaluated / Math.max(1, r.requests - r.cancelled),
      ),
    });
    rows.push({
      row: "ratios with 5 files (same targets)",
      latency_p50_ms: ratio("worker + 5 files", "llama-server + 5 files", p50),
      tokens_evaluated: ratio("worker + 5 files", "llama-server + 5 files", (r) => r.evaluated),
      tokens_per_finished_request: ratio(
        "worker + 5 files",
        "llama-server + 5 files",
        (r) => r.evaluated / Math.max(1, r.requests - r.cancelled),
      ),
    });
    rows.push({
      row: "raw ratios worker ÷ llama-server",
      latency_p50_ms: round(rawWorker.p50 / rawServer.p50, 2),
      tokens_evaluated: round(rawWorker.evaluatedPerKeystroke / Math.max(1e-9, rawServer.evaluatedPerKeystroke), 2),
    });
    return rows;
  } finally {
    await server.stop();
    await stack.close();
  }
}

if (require.main === module) {
  benchTyping({ threads: Number(process.env.RBEE_BENCH_THREADS ?? 1) }).then(
    (r) => console.table(r),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
