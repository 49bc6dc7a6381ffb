// CPU calibration end to end, through the rbee CLI and a real local hive: the hive measures two of
// node-llama-cpp's prebuilt CPU variants on its generated model (each run a real child process), keeps
// the figures in its home, and CPU workers load the winner. Other tests run with calibration off
// (test/run.mjs sets RBEE_CALIBRATE=off); here it is on, kept short with two variants that every
// x86-64 CPU runs (sse42, x64), two rounds and a few tokens.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ensureModel } from "../fixtures/models";
import { waitUntil } from "../helpers/wait";
import { newRbeeHome, runCli, startCli } from "../helpers/cli";
import { HiveClient } from "../../extension/src/keeper/hive-client";
import { loopbackTransport } from "../../extension/src/keeper/transport";
import { prebuiltCpuVariants } from "../../hive-agent/src/worker/cpu-variants";
import { decideDecodeBatching } from "../../hive-agent/src/worker/decode-batching";
import {
  installedPackageDir,
  nativeBuildStamp,
  nativeCmakeOptions,
  nativeEntry,
} from "../../hive-agent/src/worker/native-build";

const model = `file:${ensureModel("tiny")}`;
const VARIANTS = ["sse42", "x64"];
const runnable =
  process.platform === "linux" && VARIANTS.every((v) => prebuiltCpuVariants(installedPackageDir()).includes(v));

describe(
  "CPU calibration",
  { skip: !runnable && "needs node-llama-cpp's Linux x86-64 prebuilt with its CPU variants" },
  () => {
    const home = newRbeeHome();
    const hiveHome = path.join(home, "hive");
    const cacheFile = path.join(hiveHome, "cpu-calibration.json");
    const env = (extra = "") => ({
      RBEE_HOME: home,
      RBEE_CALIBRATE: "auto",
      RBEE_HIVE_ARGS: `--calibrate-variants ${VARIANTS.join(",")} --calibrate-rounds 2 --calibrate-tokens 8 ${extra}`,
    });
    const hiveLog = () => readFileSync(path.join(hiveHome, "hive.log"), "utf8");
    after(async () => {
      await runCli(["hive", "stop"], env());
      rmSync(home, { recursive: true, force: true });
    });

    async function localhost(e: NodeJS.ProcessEnv) {
      const r = await runCli(["nodes", "list", "--json"], e);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout).nodes as any[]).find((n) => n.alias === "localhost");
    }
    /** Polls `rbee nodes list --json` until the local hive's calibration is ready. */
    function calibrated(e: NodeJS.ProcessEnv) {
      return waitUntil(
        async () => {
          const row = await localhost(e);
          assert.notEqual(row.cpu_calibration?.state, "failed", JSON.stringify(row.cpu_calibration));
          return row.cpu_calibration?.state === "ready" && row;
        },
        { timeout: 240_000, intervalMs: 2000, what: "the local hive's calibration" },
      );
    }
    async function start(e: NodeJS.ProcessEnv) {
      const r = await runCli(["hive", "start"], e);
      assert.equal(r.code, 0, r.stderr);
    }
    async function stop(e: NodeJS.ProcessEnv) {
      const r = await runCli(["hive", "stop"], e);
      assert.equal(r.code, 0, r.stderr);
    }
    /** Spawns a CPU worker (rbee infer on the tiny model) and returns what the hive says of it. */
    async function cpuWorker(e: NodeJS.ProcessEnv) {
      const r = await runCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "2", "--json"], e);
      assert.equal(r.code, 0, r.stderr);
      const id = JSON.parse(r.stdout).worker_id;
      const list = JSON.parse((await runCli(["workers", "list", "--json"], e)).stdout).workers as any[];
      return list.find((w) => w.id === id);
    }

    test("a first start measures every candidate over the rounds, keeps the figures, and CPU workers load the winner", async () => {
      await start(env());
      const row = await calibrated(env());
      const file = JSON.parse(readFileSync(cacheFile, "utf8"));
      assert.deepEqual(file.results.map((r: any) => r.binary).sort(), ["prebuilt:sse42", "prebuilt:x64"]);
      for (const r of file.results) {
        assert.equal(r.runs.length, 2, `two rounds of ${r.binary}`);
        assert.ok(r.tokens_per_second > 0 && r.runs.every((x: number) => x > 0), JSON.stringify(r));
      }
      const best = [...file.results].sort((a: any, b: any) => b.tokens_per_second - a.tokens_per_second)[0];
      assert.equal(file.winner, best.binary);
      // What `rbee nodes list` shows is the hive's figure, in JSON and in the table.
      assert.equal(row.cpu_calibration.winner, file.winner);
      assert.equal(row.cpu_calibration.winner_tokens_per_second, best.tokens_per_second);
      assert.equal(row.cpu_calibration.threads, file.threads);
      const table = (await runCli(["nodes", "list"], env())).stdout;
      assert.match(table, /CPU BINARY/);
      assert.ok(table.includes(`${file.winner} ${best.tokens_per_second} tok/s`), table);
      assert.match(hiveLog(), new RegExp(`${file.winner} wins at ${file.threads} thread`));

      // Then the winner with one stream and two streams, batched and one at a time, and the decision.
      const check = file.streams_check;
      for (const figure of [
        check.single_tokens_per_second,
        check.two_streams_tokens_per_second,
        check.two_streams_one_at_a_time_tokens_per_second,
      ])
        assert.ok(figure > 0, JSON.stringify(check));
      const decision = decideDecodeBatching(
        check.two_streams_tokens_per_second,
        check.two_streams_one_at_a_time_tokens_per_second,
      );
      assert.equal(
        row.cpu_calibration.two_streams_one_at_a_time_tokens_per_second,
        check.two_streams_one_at_a_time_tokens_per_second,
      );
      assert.equal(row.cpu_calibration.decode_batching, decision);
      assert.equal(row.cpu_calibration.two_streams_tokens_per_second, check.two_streams_tokens_per_second);
      assert.match(
        hiveLog(),
        /2 streams: [\d.]+ tok\/s together, [\d.]+ one at a time \(1 stream [\d.]+\): (together|one-at-a-time)/,
      );

      const worker = await cpuWorker(env());
      assert.equal(worker.backend, "cpu");
      assert.equal(worker.cpu_binary, file.winner, "the worker loaded the winning variant");
      assert.equal(worker.decode_batching, decision, "the worker shares decodes as calibration decided");
      assert.match(hiveLog(), new RegExp(`ready after \\d+ ms on the ${file.winner} binary`));
    });

    test("a second start with the same node, binaries and threads takes the stored result without measuring", async () => {
      const before = JSON.parse(readFileSync(cacheFile, "utf8"));
      await stop(env());
      await start(env());
      const row = await calibrated(env());
      assert.equal(row.cpu_calibration.measured_at, before.measured_at);
      assert.equal(JSON.parse(readFileSync(cacheFile, "utf8")).measured_at, before.measured_at);
      assert.equal(
        hiveLog().match(/INFO {2}\[calibration\] measuring /g)?.length,
        1,
        "measured once, on the first start only",
      );
      assert.match(hiveLog(), /\[calibration\] cached result for/);
    });

    test("a stored one-at-a-time decision reaches CPU workers; --decode-batching overrides it", async () => {
      // This CPU batches well, so figures like those of a CPU where one at a time wins are written into
      // the stored result (same key, so the hive takes them as measured) to follow the decision to the workers.
      await stop(env());
      const measured = readFileSync(cacheFile, "utf8");
      const stored = JSON.parse(measured);
      const together = stored.streams_check.two_streams_tokens_per_second;
      writeFileSync(
        cacheFile,
        JSON.stringify({
          ...stored,
          streams_check: { ...stored.streams_check, two_streams_one_at_a_time_tokens_per_second: together * 2 },
        }),
      );
      try {
        await start(env());
        const row = await calibrated(env());
        assert.equal(row.cpu_calibration.decode_batching, "one-at-a-time");
        assert.match((await runCli(["nodes", "list"], env())).stdout, /streams decoded one at a time/);
        const worker = await cpuWorker(env());
        assert.equal(worker.decode_batching, "one-at-a-time");
        assert.match(hiveLog(), /ready after \d+ ms on the \S+ binary, decoding its streams one at a time/);

        await stop(env());
        await start(env("--decode-batching together"));
        assert.equal((await cpuWorker(env("--decode-batching together"))).decode_batching, "together");
      } finally {
        // As the test before left it: the hive running on the measured result.
        await stop(env());
        writeFileSync(cacheFile, measured);
        await start(env());
      }
    });

    test("a native build appearing while the hive runs is measured too, but never while a worker is generating", async () => {
      const e = env();
      // A long generation on the running CPU worker (tokens streaming = the worker is busy; 1500 tokens
      // of the tiny model last seconds, and the hive hears of the native build within milliseconds).
      const infer = startCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "1500"], e);
      await infer.waitForStdout(1);
      // A native build that does not load: its stamp matches this package and CPU, its entry throws.
      const nativeDir = path.join(hiveHome, "native");
      mkdirSync(path.dirname(nativeEntry(nativeDir)), { recursive: true });
      writeFileSync(nativeEntry(nativeDir), 'throw new Error("not a real build");\n');
      writeFileSync(path.join(nativeDir, "rbee-native-build.json"), nativeBuildStamp(nativeCmakeOptions()));
      // The hive notices it on its next capabilities call (here straight over its socket, at once).
      const transport = loopbackTransport();
      try {
        const client = new HiveClient({
          transport,
          baseUrl: `unix:${path.join(hiveHome, "hive.sock")}`,
          token: readFileSync(path.join(hiveHome, "token"), "utf8").trim(),
          nodeName: "localhost",
        });
        const caps = await client.capabilities();
        assert.ok(
          caps.cpu_calibration && ["waiting", "measuring"].includes(caps.cpu_calibration.state),
          JSON.stringify(caps.cpu_calibration),
        );
      } finally {
        await transport.close();
      }
      assert.equal((await infer.done).code, 0);
      const row = await calibrated(e);
      // The first run waited for the generation (or was stopped by it and done again).
      assert.match(
        hiveLog(),
        /\[calibration\] (waiting: worker w-[0-9a-f]{8} is busy|run of \S+ stopped \(worker w-[0-9a-f]{8} is busy\))/,
      );
      const native = row.cpu_calibration.results.find((r: any) => r.binary === "native");
      assert.match(native?.error ?? "", /native did not load/);
      assert.ok(["prebuilt:sse42", "prebuilt:x64"].includes(row.cpu_calibration.winner), row.cpu_calibration.winner);
    });

    test("another thread count measures again; a variant whose library is broken is recorded as unusable and the hive carries on", async () => {
      const before = JSON.parse(readFileSync(cacheFile, "utf8"));
      await stop(env());
      // The hive's private copy of the x64 variant (reused while its stamp matches) is damaged on disk;
      // the native build that does not load is still there.
      const lib = path.join(
        hiveHome,
        "cpu-variants",
        "x64",
        "node_modules",
        "@node-llama-cpp",
        "linux-x64",
        "bins",
        "linux-x64",
        "libggml-cpu-x64.so",
      );
      assert.ok(existsSync(lib), `the hive made its private copy at ${lib}`);
      rmSync(lib); // a new file, never a write through to the installed package
      writeFileSync(lib, "not a shared library");
      const threads = before.threads === 2 ? 1 : 2;
      const e = env(`--worker-threads ${threads}`);
      await start(e);
      const row = await calibrated(e);
      const file = JSON.parse(readFileSync(cacheFile, "utf8"));
      assert.equal(file.threads, threads);
      assert.ok(file.measured_at > before.measured_at, "measured again");
      const x64 = file.results.find((r: any) => r.binary === "prebuilt:x64");
      assert.equal(x64.tokens_per_second, undefined);
      assert.match(x64.error, /did not load|exit|killed/);
      assert.match(file.results.find((r: any) => r.binary === "native").error, /native did not load/);
      assert.equal(file.winner, "prebuilt:sse42");
      assert.equal(row.cpu_calibration.winner, "prebuilt:sse42");
      assert.match(hiveLog(), /prebuilt:x64 is unusable here/);
      const worker = await cpuWorker(e);
      assert.equal(worker.threads, threads);
      assert.equal(worker.cpu_binary, "prebuilt:sse42");
    });
  },
);
