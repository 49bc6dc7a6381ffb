// The study behind FINDINGS.md: node-llama-cpp against llama-server on the `small` model, 128 tokens
// from a short prompt, side by side and interleaved (see compare.ts). Each section answers one question:
//   threads      1 and 2 threads: the prebuilt as the worker loads it today, one libuv thread, native builds
//   variants     which prebuilt CPU variant makes the difference (AMX or not), against native builds
//   knobs        2 threads: batch size, flash attention, taskset, OpenMP binding, OpenMP active wait, sampling
//   concurrency  1/2/4 parallel streams at 2 threads (-np 4 / 4 sequences), with and without batch gathering
//   recommended  the recommended worker settings against llama-server, 1 and 2 threads
// Run: ROUNDS=7 node --import tsx test/bench/study.ts <section>. Native builds are used when
// `node --import tsx test/bench/build-native.ts omp|noomp` left them in .cache/.

import { cpSync, existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { ensureModel } from "../fixtures/models";
import {
  compareConcurrent,
  compareSingle,
  engineContender,
  formatRows,
  serverContender,
  type Contender,
} from "./compare";
import type { GenerateRequest } from "./inprocess";
import { ensureLlamaServer } from "./llama-server";

const ROOT = path.resolve(__dirname, "..", "..");
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const GREEDY: GenerateRequest = { prompt: "def fibonacci(n):", maxTokens: 128, temperature: 0 };
const SAMPLED: GenerateRequest = { ...GREEDY, temperature: 0.8, topK: 40, topP: 0.95 };

/** Native builds made by build-native.ts (buildNativeLlama), by name, when present. */
function nativeBuilds(): Array<{ name: string; dir: string }> {
  return ["omp", "noomp"]
    .map((v) => ({ name: `native ${v}`, dir: path.join(ROOT, ".cache", `nlc-native-${v}`) }))
    .filter((b) => existsSync(path.join(b.dir, "rbee-native-build.json")));
}

/**
 * A copy of node-llama-cpp and its prebuilt binaries without one CPU variant, so ggml picks the
 * next best one: tells the variant's kernels apart from everything else in the prebuilt.
 */
function prebuiltWithout(variant: string): string {
  const dir = path.join(ROOT, ".cache", `nlc-prebuilt-without-${variant}`);
  const nm = path.join(ROOT, "node_modules");
  const entry = path.join(dir, "node_modules", "node-llama-cpp", "dist", "index.js");
  if (existsSync(entry)) return entry;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.join(dir, "node_modules", "@node-llama-cpp"), { recursive: true });
  cpSync(
    path.join(nm, "@node-llama-cpp", "linux-x64"),
    path.join(dir, "node_modules", "@node-llama-cpp", "linux-x64"),
    { recursive: true, dereference: true },
  );
  rmSync(
    path.join(dir, "node_modules", "@node-llama-cpp", "linux-x64", "bins", "linux-x64", `libggml-cpu-${variant}.so`),
  );
  const src = path.join(nm, "node-llama-cpp");
  for (const name of readdirSync(src)) {
    cpSync(path.join(src, name), path.join(dir, "node_modules", "node-llama-cpp", name), {
      recursive: true,
      dereference: true,
      filter: (f) => !f.startsWith(path.join(src, "llama", "llama.cpp")),
    });
  }
  return entry;
}

/**
 * One libuv thread: node-llama-cpp runs every decode as a libuv work item, so with the default 4
 * threads consecutive tokens are computed from different OS threads (see FINDINGS.md).
 */
const ONE_UV_THREAD = { UV_THREADPOOL_SIZE: "1" };

/** OpenMP builds: one thread per core, pinned, so two compute threads never share a core. */
const OMP_BIND = { OMP_PROC_BIND: "spread" };
/** OpenMP threads left to the scheduler (loadLlama would pin them when the worker owns all cores). */
const NO_BIND = { OMP_PROC_BIND: "false" };

/** Starts contenders one after the other (loading several models at once skews nothing but is slow). */
async function sequential<T>(makers: Array<() => Promise<T>>): Promise<T[]> {
  const out: T[] = [];
  for (const make of makers) out.push(await make());
  return out;
}

async function section(title: string, make: () => Promise<Contender[]>, run: (cs: Contender[]) => Promise<string>) {
  const contenders = await make();
  try {
    console.log(await run(contenders));
  } catch (err) {
    console.log(`${title}: ${(err as Error).message}`);
  } finally {
    for (const c of contenders) await c.stop();
  }
}

async function main() {
  const what = process.argv[2] ?? "threads";
  const model = ensureModel("small");
  const binary = await ensureLlamaServer((l) => console.log(l));
  const natives = nativeBuilds();
  const omp = natives.find((n) => n.name === "native omp");
  const uv1 = ONE_UV_THREAD;
  const bound = { ...ONE_UV_THREAD, ...OMP_BIND };
  const single = (title: string, req: GenerateRequest) => async (cs: Contender[]) =>
    formatRows(`${title}, ${ROUNDS} rounds`, await compareSingle(cs, req, ROUNDS));

  if (what === "threads") {
    for (const threads of [1, 2]) {
      await section(
        `threads=${threads}`,
        async () => [
          await serverContender(`llama-server -t ${threads}`, { binary, model, threads }),
          await engineContender(`prebuilt t=${threads}`, { model, threads }),
          await engineContender(`prebuilt t=${threads} uv1`, { model, threads, env: uv1 }),
          ...(await sequential(
            natives.map(
              (n) => () =>
                engineContender(`${n.name} t=${threads}`, { model, threads, nativeBuildDir: n.dir, env: NO_BIND }),
            ),
          )),
          ...(await sequential(
            natives.map(
              (n) => () =>
                engineContender(`${n.name} t=${threads} uv1`, {
                  model,
                  threads,
                  nativeBuildDir: n.dir,
                  env: { ...uv1, ...NO_BIND },
                }),
            ),
          )),
          ...(await sequential(
            natives.map(
              (n) => () =>
                engineContender(`${n.name} t=${threads} uv1 bind`, {
                  model,
                  threads,
                  nativeBuildDir: n.dir,
                  env: bound,
                }),
            ),
          )),
        ],
        single(`single stream, greedy, threads=${threads}`, GREEDY),
      );
    }
  } else if (what === "variants") {
    const noAmx = prebuiltWithout("sapphirerapids");
    for (const threads of [1, 2]) {
      await section(
        `variants t=${threads}`,
        async () => [
          await serverContender(`llama-server -t ${threads}`, { binary, model, threads }),
          await engineContender(`prebuilt (sapphirerapids, AMX) t=${threads} uv1`, { model, threads, env: uv1 }),
          await engineContender(`prebuilt without AMX (zen4) t=${threads} uv1`, {
            model,
            threads,
            env: uv1,
            nodeLlamaCppEntry: noAmx,
          }),
          ...(await sequential(
            natives.map(
              (n) => () =>
                engineContender(`${n.name} t=${threads} uv1 bind`, {
                  model,
                  threads,
                  nativeBuildDir: n.dir,
                  env: bound,
                }),
            ),
          )),
        ],
        single(`single stream, greedy, threads=${threads}`, GREEDY),
      );
    }
  } else if (what === "knobs") {
    const threads = 2;
    await section(
      "knobs",
      async () => [
        await serverContender(`llama-server -t 2`, { binary, model, threads }),
        await engineContender(`prebuilt t=2 uv1`, { model, threads, env: uv1 }),
        await engineContender(`prebuilt t=2 uv1 batchSize=32`, { model, threads, batchSize: 32, env: uv1 }),
        await engineContender(`prebuilt t=2 uv1 flashAttention=false`, {
          model,
          threads,
          flashAttention: false,
          env: uv1,
        }),
        await engineContender(`prebuilt t=1 uv1`, { model, threads: 1, env: uv1 }),
        await engineContender(`prebuilt t=1 uv1 taskset -c 1`, { model, threads: 1, env: uv1, cpus: "1" }),
        ...(omp
          ? [
              await engineContender(`native omp t=2 uv1`, {
                model,
                threads,
                nativeBuildDir: omp.dir,
                env: { ...uv1, ...NO_BIND },
              }),
              await engineContender(`native omp t=2 uv1 OMP_PROC_BIND=spread`, {
                model,
                threads,
                nativeBuildDir: omp.dir,
                env: bound,
              }),
            ]
          : []),
      ],
      single("single stream, greedy", GREEDY),
    );
    // Alone with its peer: an OpenMP team that waits actively spins a core even between requests,
    // which would slow every other contender in the same section.
    if (omp) {
      await section(
        "omp active",
        async () => [
          await serverContender(`llama-server -t 2`, { binary, model, threads }),
          await engineContender(`native omp t=2 uv1 bind`, { model, threads, nativeBuildDir: omp.dir, env: bound }),
          await engineContender(`native omp t=2 uv1 bind OMP_WAIT_POLICY=active`, {
            model,
            threads,
            nativeBuildDir: omp.dir,
            env: { ...bound, OMP_WAIT_POLICY: "active" },
          }),
        ],
        single("single stream, greedy, next to an actively waiting OpenMP worker", GREEDY),
      );
    }
    await section(
      "sampling",
      async () => [
        await serverContender(`llama-server -t 2 (sampled)`, { binary, model, threads }),
        await engineContender(`prebuilt t=1 uv1 (sampled)`, { model, threads: 1, env: uv1 }),
        ...(omp
          ? [
              await engineContender(`native omp t=2 uv1 bind (sampled)`, {
                model,
                threads,
                nativeBuildDir: omp.dir,
                env: bound,
              }),
            ]
          : []),
      ],
      single("single stream, temperature 0.8 top_k 40 top_p 0.95", SAMPLED),
    );
  } else if (what === "concurrency") {
    for (const streams of [1, 2, 4]) {
      await section(
        `streams=${streams}`,
        async () => [
          await serverContender(`llama-server -t 2 -np 4`, {
            binary,
            model,
            threads: 2,
            parallel: 4,
            contextSize: 4096,
          }),
          await engineContender(`prebuilt t=1 seq=4 uv1`, {
            model,
            threads: 1,
            sequences: 4,
            contextSize: 1024,
            env: uv1,
          }),
          await engineContender(`prebuilt t=2 seq=4 uv1`, {
            model,
            threads: 2,
            sequences: 4,
            contextSize: 1024,
            env: uv1,
          }),
          ...(omp
            ? [
                await engineContender(`native omp t=2 seq=4 uv1 bind`, {
                  model,
                  threads: 2,
                  sequences: 4,
                  contextSize: 1024,
                  nativeBuildDir: omp.dir,
                  env: bound,
                }),
                await engineContender(`native omp t=2 seq=4 uv1 bind gather 0.2ms`, {
                  model,
                  threads: 2,
                  sequences: 4,
                  contextSize: 1024,
                  nativeBuildDir: omp.dir,
                  env: bound,
                  gatherMs: 0.2,
                }),
              ]
            : []),
        ],
        async (cs) =>
          formatRows(
            `${streams} concurrent streams (sum of stream rates), ${ROUNDS} rounds`,
            await compareConcurrent(cs, GREEDY, streams, ROUNDS),
          ),
      );
    }
  } else if (what === "recommended") {
    if (!omp) throw new Error("build the native omp variant first: node --import tsx test/bench/build-native.ts omp");
    await section(
      "recommended",
      async () => [
        await serverContender(`llama-server -t 1`, { binary, model, threads: 1 }),
        await engineContender(`worker t=1: prebuilt, uv1`, { model, threads: 1, env: uv1 }),
        await serverContender(`llama-server -t 2`, { binary, model, threads: 2 }),
        await engineContender(`worker t=2: native omp, uv1, bind`, {
          model,
          threads: 2,
          nativeBuildDir: omp.dir,
          env: bound,
        }),
      ],
      single("single stream, greedy (÷ref is against llama-server -t 1; compare t=2 rows with each other)", GREEDY),
    );
  } else {
    throw new Error(`unknown section "${what}"; choose threads, variants, knobs, concurrency or recommended`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
