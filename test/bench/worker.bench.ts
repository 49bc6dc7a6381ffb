// Issue 2's benchmark: the worker through its SSE stream vs node-llama-cpp in-process, on the `small`
// model with the same threads, prompt, sampling and token count; first-token overhead; aggregate
// tokens/s with 1, 2 and 4 concurrent streams on one worker, against its own 1 stream (issue 16: more
// streams must never give less), and 2 streams on a worker that decodes them one at a time (what
// calibration picks where that beats batching; here it shows what one at a time costs). Every figure
// is a median of interleaved rounds, with its min–max:
// on a shared 2-core machine one run of each can differ by a factor of two.

import { ensureModel } from "../fixtures/models";
import { startHive, waitReady } from "../helpers/hive";
import { PROMPT, inProcessEngine, median, nativeBuildForBench, round, timeStream } from "./common";

/** "median (min–max)" of a series, rounded. */
const spread = (xs: number[], digits = 0) =>
  `${round(median(xs), digits)} (${round(Math.min(...xs), digits)}–${round(Math.max(...xs), digits)})`;

const TOKENS = 128;

export async function benchWorker(
  opts: { threads?: number; runs?: number; aggregateRounds?: number } = {},
): Promise<Record<string, number | string>> {
  const threads = opts.threads ?? 1;
  const runs = opts.runs ?? 5;
  const modelPath = ensureModel("small");
  const hive = await startHive();
  // A second hive whose workers decode their streams one at a time (hive --decode-batching).
  const alternating = await startHive(["--decode-batching", "one-at-a-time"]);
  try {
    // Both sides on the binary a worker with these threads uses (the native build from 2 threads).
    const nativeDir = await nativeBuildForBench(hive.home, threads);
    const single = await waitReady(
      hive,
      (await hive.client.spawn({ model_ref: `file:${modelPath}`, slots: 1, threads, context_size: 4096 })).worker_id,
      120_000,
    );
    const client = hive.client.workerClient(single);
    const stream = () =>
      timeStream(
        () =>
          client.inference({ prompt: PROMPT, max_tokens: TOKENS, temperature: 0.8, top_k: 40, top_p: 0.95, seed: 7 }),
        TOKENS,
      );
    const engine = await inProcessEngine({ modelPath, threads, contextSize: 4096, nativeDir });
    await stream(); // warm-up both
    await engine.run(TOKENS);
    const worker: number[] = [],
      inproc: number[] = [],
      ttftWorker: number[] = [],
      ttftIn: number[] = [],
      ratios: number[] = [];
    for (let i = 0; i < runs; i++) {
      // Interleaved, so drifting machine load touches both sides alike.
      const a = await engine.run(TOKENS);
      const b = await stream();
      inproc.push(a.tokensPerSecond);
      ttftIn.push(a.firstTokenMs);
      worker.push(b.tokensPerSecond);
      ttftWorker.push(b.firstTokenMs);
      ratios.push(b.tokensPerSecond / a.tokensPerSecond);
    }
    await engine.dispose();
    await hive.client.shutdown(single.id);

    // Aggregate throughput of one 4-slot worker with 1, 2, 4 concurrent streams: a warm-up, then
    // rounds in rotating order (1 2 4, 2 4 1, 4 1 2), so load drifting over the run touches each alike.
    const multi = await waitReady(
      hive,
      (await hive.client.spawn({ model_ref: `file:${modelPath}`, slots: 4, threads, context_size: 1024 })).worker_id,
      120_000,
    );
    const oneAtATime = await waitReady(
      alternating,
      (
        await alternating.client.spawn({
          model_ref: `file:${modelPath}`,
          slots: 4,
          threads,
          context_size: 1024,
        })
      ).worker_id,
      120_000,
    );
    if (oneAtATime.decode_batching !== "one-at-a-time")
      throw new Error(`the second hive's worker batches ${oneAtATime.decode_batching ?? "together"}`);
    const concurrentOn = (mc: ReturnType<typeof hive.client.workerClient>) => async (n: number) => {
      const t0 = performance.now();
      const results = await Promise.all(
        Array.from({ length: n }, (_, k) =>
          timeStream(() => mc.inference({ prompt: PROMPT, max_tokens: TOKENS, seed: k + 1 }), TOKENS),
        ),
      );
      return (results.reduce((s, r) => s + r.tokens, 0) / (performance.now() - t0)) * 1000;
    };
    const concurrent = concurrentOn(hive.client.workerClient(multi));
    const concurrentOneAtATime = concurrentOn(alternating.client.workerClient(oneAtATime));
    // -2: two streams on the one-at-a-time worker.
    const streams = [1, 2, 4, -2];
    await concurrent(4);
    await concurrentOneAtATime(2);
    const aggregate: Record<number, number[]> = { 1: [], 2: [], 4: [], [-2]: [] };
    const over1: Record<number, number[]> = { 2: [], 4: [], [-2]: [] };
    const aggRounds = opts.aggregateRounds ?? 3;
    for (let r = 0; r < aggRounds; r++) {
      const inRound: Record<number, number> = {};
      for (let j = 0; j < streams.length; j++) {
        const n = streams[(r + j) % streams.length];
        inRound[n] = n < 0 ? await concurrentOneAtATime(-n) : await concurrent(n);
        aggregate[n].push(inRound[n]);
      }
      // Each round's own ratio: what one round's load did to its 1-stream run it did to the others.
      for (const n of [2, 4, -2]) over1[n].push(inRound[n] / inRound[1]);
    }
    return {
      threads,
      worker_uses_native_build: nativeDir ? 1 : 0,
      rounds: runs,
      worker_sse_tok_s: spread(worker),
      in_process_tok_s: spread(inproc),
      ratio_worker_over_in_process: round(median(worker) / median(inproc), 3),
      "ratio_per_round (min–max)": `${round(Math.min(...ratios), 2)}–${round(Math.max(...ratios), 2)}`,
      first_token_ms_worker: round(median(ttftWorker), 1),
      first_token_ms_in_process: round(median(ttftIn), 1),
      first_token_overhead_ms: round(median(ttftWorker) - median(ttftIn), 1),
      aggregate_rounds: aggRounds,
      aggregate_tok_s_1_stream: spread(aggregate[1]),
      aggregate_tok_s_2_streams: spread(aggregate[2]),
      aggregate_tok_s_4_streams: spread(aggregate[4]),
      ratio_2_streams_over_1: spread(over1[2], 2),
      ratio_4_streams_over_1: spread(over1[4], 2),
      aggregate_tok_s_2_streams_one_at_a_time: spread(aggregate[-2]),
      ratio_2_streams_one_at_a_time_over_1: spread(over1[-2], 2),
    };
  } finally {
    await alternating.stop();
    await hive.stop();
  }
}

if (require.main === module) {
  benchWorker({ threads: Number(process.env.RBEE_BENCH_THREADS ?? 1) }).then((r) => console.table(r));
}
