// Registry benchmark: what one write costs (lock + re-read check + transaction + export + atomic
// write with two fsyncs), and what opening a registry of 10,000 workers costs.
// Run alone: `node --import tsx test/bench/registry.bench.ts`.

import { mkdtempSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Registry, type ReportedWorker } from "../../extension/src/keeper/registry";
import { loadSqlJs } from "../../extension/src/keeper/registry-sqljs";

const WRITES = 200;
const BIG = 10_000;
const OPENS = 5;

function reportedWorker(i: number): ReportedWorker {
  return {
    id: `w-${i.toString().padStart(6, "0")}-${"x".repeat(24)}`,
    url: `http://127.0.0.1:${20000 + (i % 40000)}`,
    model_ref: `hf:org/model-${i % 20}/model-q4_k_m.gguf`,
    backend: "cuda",
    device: i % 8,
    state: "idle",
    slots_total: 4,
    api_key: `k-${i}-${"s".repeat(40)}`,
  };
}

function stats(samples: number[]): { mean: number; p50: number; p95: number } {
  const s = [...samples].sort((a, b) => a - b);
  return {
    mean: s.reduce((a, b) => a + b, 0) / s.length,
    p50: s[Math.floor(s.length / 2)],
    p95: s[Math.floor(s.length * 0.95)],
  };
}

/** Times `WRITES` single-worker upserts, each its own locked, fsynced write. */
async function timeWrites(registry: Registry, node: string, idPrefix: string): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < WRITES; i++) {
    const t0 = performance.now();
    await registry.upsertWorker({ ...reportedWorker(i), id: `${idPrefix}-${i}`, node });
    samples.push(performance.now() - t0);
  }
  return samples;
}

export async function benchRegistry(): Promise<Record<string, number>> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "rbee-registry-bench-"));
  try {
    const t0 = performance.now();
    await loadSqlJs();
    const sqljsInitMs = performance.now() - t0; // the wasm compile a fresh process pays once

    // One write on a small registry.
    const small = await Registry.open(path.join(dir, "small.sqlite"), { logger: () => {} });
    await small.upsertNode({ alias: "gpu1", host: "10.0.0.5", transport: "ssh" });
    const smallWrites = stats(await timeWrites(small, "gpu1", "bench"));
    small.close();

    // A registry of 10,000 workers, built in one write, then opened cold from disk.
    const bigFile = path.join(dir, "big.sqlite");
    const builder = await Registry.open(bigFile, { logger: () => {} });
    await builder.upsertNode({ alias: "gpu1", host: "10.0.0.5", transport: "ssh" });
    await builder.replaceNodeState(
      "gpu1",
      Array.from({ length: BIG }, (_, i) => reportedWorker(i)),
      [],
    );
    builder.close();

    const opens: number[] = [];
    let bigWrites: ReturnType<typeof stats> | undefined;
    for (let i = 0; i < OPENS; i++) {
      const t = performance.now();
      const r = await Registry.open(bigFile, { logger: () => {} });
      opens.push(performance.now() - t);
      if ((await r.listWorkers({ node: "gpu1", model_ref: reportedWorker(0).model_ref })).length !== BIG / 20)
        throw new Error("the big registry lost rows");
      if (i === OPENS - 1) bigWrites = stats(await timeWrites(r, "gpu1", "more"));
      r.close();
    }
    const open = stats(opens);

    return {
      sqljs_init_ms: sqljsInitMs,
      write_mean_ms: smallWrites.mean,
      write_p50_ms: smallWrites.p50,
      write_p95_ms: smallWrites.p95,
      open_10k_workers_mean_ms: open.mean,
      open_10k_workers_min_ms: Math.min(...opens),
      file_10k_workers_bytes: statSync(bigFile).size,
      write_at_10k_workers_mean_ms: bigWrites!.mean,
      write_at_10k_workers_p95_ms: bigWrites!.p95,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  benchRegistry().then(
    (figures) => {
      for (const [name, value] of Object.entries(figures))
        console.log(`${name.padEnd(32)} ${Number.isInteger(value) ? value : value.toFixed(2)}`);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
