// Issue 6's benchmark: the worker, through its SSE stream, side by side with llama-server built from
// the llama.cpp source node-llama-cpp ships (built once into .cache/ by the bench, never by the tests):
// same model (`small`), prompt, token count, sampling and threads. Every figure is worker ÷ llama-server.

import { ensureModel } from "../fixtures/models";
import { startHive, waitReady } from "../helpers/hive";
import { PROMPT, median, nativeBuildForBench, round, timeStream } from "./common";
import { ensureLlamaServer, startLlamaServer, streamCompletion } from "./llama-server";

const TOKENS = 128;

export async function benchPeer(opts: { threads?: number; runs?: number } = {}): Promise<Record<string, number>> {
  const threads = opts.threads ?? 1;
  const runs = opts.runs ?? 5;
  const model = ensureModel("small");
  const binary = await ensureLlamaServer((l) => console.error(l));
  const hive = await startHive();
  let server: Awaited<ReturnType<typeof startLlamaServer>> | undefined;
  try {
    const native = (await nativeBuildForBench(hive.home, threads)) ? 1 : 0;
    server = await startLlamaServer({ binary, model, threads, parallel: 4, contextSize: 4 * 1024 });
    const url = server.url;
    const w = await waitReady(
      hive,
      (await hive.client.spawn({ model_ref: `file:${model}`, slots: 4, threads, context_size: 1024 })).worker_id,
      120_000,
    );
    const worker = hive.client.workerClient(w);
    const viaWorker = (seed: number) =>
      timeStream(
        () => worker.inference({ prompt: PROMPT, max_tokens: TOKENS, temperature: 0.8, top_k: 40, top_p: 0.95, seed }),
        TOKENS,
      );
    const viaServer = (seed: number) =>
      streamCompletion(url, {
        prompt: PROMPT,
        nPredict: TOKENS,
        seed,
        temperature: 0.8,
        topK: 40,
        topP: 0.95,
        ignoreEos: true,
      }).then((r) => ({ tokens: r.tokens, tokensPerSecond: r.decodeTokPerS, firstTokenMs: r.firstTokenMs }));
    await viaWorker(1);
    await viaServer(1);
    const wt: number[] = [],
      st: number[] = [],
      wf: number[] = [],
      sf: number[] = [];
    for (let i = 0; i < runs; i++) {
      const s = await viaServer(7);
      const x = await viaWorker(7);
      st.push(s.tokensPerSecond);
      sf.push(s.firstTokenMs);
      wt.push(x.tokensPerSecond);
      wf.push(x.firstTokenMs);
    }
    const aggregate = async (n: number, one: (seed: number) => Promise<{ tokens: number }>) => {
      const t0 = performance.now();
      const rs = await Promise.all(Array.from({ length: n }, (_, k) => one(k + 1)));
      return (rs.reduce((a, r) => a + r.tokens, 0) / (performance.now() - t0)) * 1000;
    };
    const out: Record<string, number> = {
      threads,
      worker_uses_native_build: native,
      worker_tok_s: round(median(wt), 1),
      llama_server_tok_s: round(median(st), 1),
      ratio_single_stream: round(median(wt) / median(st), 3),
      first_token_ms_worker: round(median(wf), 1),
      first_token_ms_llama_server: round(median(sf), 1),
      first_token_difference_ms: round(median(wf) - median(sf), 1),
    };
    // One concurrent round is noisy on a shared 2-core machine: medians of interleaved rounds.
    const rounds = Math.max(3, Math.ceil(runs / 2));
    for (const n of [2, 4]) {
      const a: number[] = [],
        b: number[] = [];
      for (let i = 0; i < rounds; i++) {
        b.push(await aggregate(n, viaServer));
        a.push(await aggregate(n, viaWorker));
      }
      out[`worker_aggregate_tok_s_${n}_streams`] = round(median(a), 1);
      out[`llama_server_aggregate_tok_s_${n}_streams`] = round(median(b), 1);
      out[`ratio_${n}_streams`] = round(median(a) / median(b), 3);
    }
    return out;
  } finally {
    await server?.stop();
    await hive.stop();
  }
}

if (require.main === module) {
  benchPeer({ threads: Number(process.env.RBEE_BENCH_THREADS ?? 1) }).then((r) => console.table(r));
}
