// Inline completion benchmark on a real local hive and worker (generated model, docs/testing.md):
//   - overhead: the engine's call → its answer, minus the worker's own generation time
//     (first_token_ms + decode_ms, as the worker reports it) — registry lookup, HTTP + SSE on
//     loopback, parsing, filtering, caching. Target ≤ 15 ms at p50.
//   - cache hit: a completion served from the cache (exact and typed-through). Target ≤ 1 ms.
// `npm run bench -- inline` runs it (tiny and small models); alone, after `npm run build`:
// `node --import tsx test/bench/inline.bench.ts [tiny|small]`.

import { performance } from "node:perf_hooks";
import { ensureModel, type PresetName } from "../fixtures/models";
import { openTestServices } from "../helpers/services";
import { CompletionEngine, DEFAULT_ENGINE_SETTINGS } from "../../extension/src/ui-core/inline/completion-engine";
import { KeeperCompletionBackend } from "../../extension/src/ui-core/inline/keeper-backend";
import { percentile, round } from "./common";

const RUNS = 60;
const CACHE_RUNS = 2000;

export async function benchInline({
  preset = "tiny",
  maxTokens = 24,
}: { preset?: PresetName; maxTokens?: number } = {}): Promise<Record<string, number>> {
  const stack = openTestServices("rbee-inline-bench-");
  const { services } = stack;
  try {
    const model = `file:${ensureModel(preset)}`;
    await (await services.keeper()).ensureWorker({ node: "localhost", model });
    const settings = { ...DEFAULT_ENGINE_SETTINGS, debounceMs: 0, maxTokens, temperature: 0.8 };
    const engine = new CompletionEngine(new KeeperCompletionBackend(() => services.keeper()), () => settings);
    const file =
      "import os\n\n" + Array.from({ length: 40 }, (_, i) => `def helper_${i}(x):\n    return x * ${i}\n`).join("\n");

    const overhead: number[] = [];
    const worker: number[] = [];
    for (let i = 0; i < RUNS + 5; i++) {
      // A different context each time, so every call goes to the worker.
      const before = `${file}\ndef f_${i}(a, b):\n    return `;
      const o = await engine.complete({ editor: "bench", languageId: "python", before, after: "\n" });
      if (o.source !== "worker" && o.source !== "skipped")
        throw new Error(`unexpected outcome ${o.source}: ${o.reason}`);
      if (i < 5) continue; // warm-up: JIT, keep-alive connections
      overhead.push(o.totalMs - o.debounceMs - o.workerMs!);
      worker.push(o.workerMs!);
    }

    // Cache: exact hits and typed-through hits of one cached suggestion.
    const before = `${file}\ndef cached(a, b):\n    return `;
    let first = await engine.complete({ editor: "bench", languageId: "python", before, after: "\n" });
    for (let i = 0; !first.text && i < 20; i++)
      first = await engine.complete({
        editor: "bench",
        languageId: "python",
        before: before + " ".repeat(i + 1),
        after: "\n",
      });
    if (!first.text) throw new Error("no suggestion to cache");
    const exact: number[] = [];
    const typed: number[] = [];
    for (let i = 0; i < CACHE_RUNS; i++) {
      const t0 = performance.now();
      const hit = await engine.complete({ editor: "bench", languageId: "python", before, after: "\n" });
      exact.push(performance.now() - t0);
      if (hit.source !== "cache") throw new Error("expected a cache hit");
      const t1 = performance.now();
      const through = await engine.complete({
        editor: "bench",
        languageId: "python",
        before: before + first.text[0],
        after: "\n",
      });
      typed.push(performance.now() - t1);
      if (through.source !== "cache") throw new Error("expected a typed-through cache hit");
    }
    return {
      overhead_p50_ms: round(percentile(overhead, 50)),
      overhead_p95_ms: round(percentile(overhead, 95)),
      "overhead_p50 / 15 ms target": round(percentile(overhead, 50) / 15),
      worker_generation_p50_ms: round(percentile(worker, 50)),
      tokens_per_completion: maxTokens,
      cache_hit_p50_ms: round(percentile(exact, 50), 4),
      cache_hit_p99_ms: round(percentile(exact, 99), 4),
      typed_through_hit_p50_ms: round(percentile(typed, 50), 4),
    };
  } finally {
    await stack.close();
  }
}

if (require.main === module) {
  const preset = (process.argv[2] ?? "tiny") as PresetName;
  benchInline({ preset }).then(
    (figures) => {
      console.log(`inline completions, ${preset} model`);
      for (const [name, value] of Object.entries(figures))
        console.log(`${name.padEnd(28)} ${Number.isInteger(value) ? value : value.toFixed(3)}`);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
