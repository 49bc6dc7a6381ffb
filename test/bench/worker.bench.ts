// Issue 2's benchmark: the worker through its SSE stream vs node-llama-cpp in-process, on the `small`
// model with the same threads, prompt, sampling and token count; first-token overhead; aggregate
// tokens/s with 1, 2 and 4 concurrent streams on one worker.

import { ensureModel } from "../fixtures/models";
import { startHive, waitReady } from "../helpers/hive";
import { PROMPT, inProcessEngine, median, nativeBuildForBench, round, timeStream } from "./common";

const TOKENS = 128;

export async function benchWorker(opts: { threads?: number; runs?: number } = {}): Promise<Record<string, number>> {
  const threads = opts.threads ?? 1;
  const runs = opts.runs ?? 5;
  const modelPath = ensureModel("small");
  const hive = await startHive();
  try {
    // Both sides on the binary a worker with these threads uses (the native build from 2 threads).
    const nativeDir = await nativeBuildForBench(hive.home, threads);
    const single = await waitReady(hive, (await hive.client.spawn({ model_ref: `file:${modelPath}`, slots: 1, threads, context_size: 4096 })).worker_id, 120_000);
    const client = hive.client.workerClient(single);
    const stream = () => timeStream(() => client.inference({ prompt: PROMPT, max_tokens: TOKENS, temperature: 0.8, top_k: 40, top_p: 0.95, seed: 7 }), TOKENS);
    const engine = await inProcessEngine({ modelPath, threads, contextSize: 4096, nativeDir });
    await stream(); // warm-up both
    await engine.run(TOKENS);
    const worker: number[] = [], inproc: number[] = [], ttftWorker: number[] = [], ttftIn: number[] = [];
    for (let i = 0; i < runs; i++) {
      // Interleaved, so drifting machine load touches both sides alike.
      const a = await engine.run(TOKENS);
      const b = await stream();
      inproc.push(a.tokensPerSecond);
      ttftIn.push(a.firstTokenMs);
      worker.push(b.tokensPerSecond);
      ttftWorker.push(b.firstTokenMs);
    }
    await engine.dispose();
    await hive.client.shutdown(single.id);

    // Aggregate throughput of one 4-slot worker with 1, 2, 4 concurrent streams.
    const multi = await waitReady(hive, (await hive.client.spawn({ model_ref: `file:${modelPath}`, slots: 4, threads, context_size: 1024 })).worker_id, 120_000);
    const mc = hive.client.workerClient(multi);
    const aggregate: Record<number, number> = {};
    for (const n of [1, 2, 4]) {
      const t0 = performance.now();
      const results = await Promise.all(Array.from({ length: n }, (_, k) => timeStream(() => mc.inference({ prompt: PROMPT, max_tokens: TOKENS, seed: k + 1 }), TOKENS)));
      aggregate[n] = (results.reduce((s, r) => s + r.tokens, 0) / (performance.now() - t0)) * 1000;
    }
    return {
      threads,
      worker_uses_native_build: nativeDir ? 1 : 0,
      "worker_sse_tok_s": round(median(worker), 1),
      "in_process_tok_s": round(median(inproc), 1),
      "ratio_worker_over_in_process": round(median(worker) / median(inproc), 3),
      "first_token_ms_worker": round(median(ttftWorker), 1),
      "first_token_ms_in_process": round(median(ttftIn), 1),
      "first_token_overhead_ms": round(median(ttftWorker) - median(ttftIn), 1),
      "aggregate_tok_s_1_stream": round(aggregate[1], 1),
      "aggregate_tok_s_2_streams": round(aggregate[2], 1),
      "aggregate_tok_s_4_streams": round(aggregate[4], 1),
    };
  } finally {
    await hive.stop();
  }
}

if (require.main === module) {
  benchWorker({ threads: Number(process.env.RBEE_BENCH_THREADS ?? 1) }).then((r) => console.table(r));
}
