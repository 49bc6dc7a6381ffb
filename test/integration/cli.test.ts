// The `rbee` CLI end to end on localhost: the embedded default, warm starts, and every edge case of
// docs/edge-cases.md (EC1–EC10) provoked for real.
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ensureModel } from "../fixtures/models";
import { FakeHfHub } from "../helpers/fake-hf-hub";
import { REPO_ROOT, isAlive } from "../helpers/hive";
import { waitUntil } from "../helpers/wait";
import { newRbeeHome, runCli, startCli } from "../helpers/cli";

const model = `file:${ensureModel("tiny")}`;

async function hiveStatus(env: NodeJS.ProcessEnv) {
  return JSON.parse((await runCli(["hive", "status", "--json"], env)).stdout);
}
async function workers(env: NodeJS.ProcessEnv) {
  return JSON.parse((await runCli(["workers", "list", "--json"], env)).stdout).workers as any[];
}

describe("rbee CLI", () => {
  const home = newRbeeHome();
  const env = { RBEE_HOME: home };
  after(async () => {
    await runCli(["hive", "stop"], env);
    rmSync(home, { recursive: true, force: true });
  });

  test("infer starts the local hive, spawns a worker and streams exactly max_tokens; a second run reuses it", async () => {
    const cold = await runCli(
      ["infer", "--model", model, "--prompt", "def main():", "--max-tokens", "12", "--seed", "5", "--json"],
      env,
    );
    assert.equal(cold.code, 0, cold.stderr);
    const a = JSON.parse(cold.stdout);
    assert.equal(a.tokens_out, 12);
    assert.equal(a.stop_reason, "max_tokens");
    assert.equal(a.spawned, true);
    const warm = await runCli(
      ["infer", "--model", model, "--prompt", "def main():", "--max-tokens", "12", "--seed", "5", "--json"],
      env,
    );
    const b = JSON.parse(warm.stdout);
    assert.equal(b.spawned, false);
    assert.equal(b.worker_id, a.worker_id);
    assert.equal(b.text, a.text, "same seed, same text");
    assert.doesNotMatch(warm.stderr, /\[spawn\]/);
    assert.equal((await workers(env)).length, 1);
  });

  test("plain output: tokens on stdout, narration on stderr", async () => {
    const r = await runCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "8", "--seed", "1"], env);
    assert.equal(r.code, 0);
    const json = JSON.parse(
      (await runCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "8", "--seed", "1", "--json"], env))
        .stdout,
    );
    assert.equal(r.stdout, json.text + "\n");
    assert.match(r.stderr, /\[registry\]/);
    assert.ok(!r.stderr.includes(json.text));
  });

  test("usage errors exit 2 with help; --help exits 0", async () => {
    const r = await runCli(["infer", "--prompt", "x"], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--model is required/);
    assert.match(r.stderr, /usage: rbee infer/);
    assert.equal((await runCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "zero"], env)).code, 2);
    assert.equal((await runCli(["frobnicate"], env)).code, 2);
    const h = await runCli(["workers", "--help"], env);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /workers shutdown/);
  });

  test("EC3: not enough RAM → needed vs available and a smaller quantization suggested", async () => {
    const r = await runCli(
      ["infer", "--model", model, "--prompt", "x", "--context-size", String(1 << 22), "--slots", "64"],
      env,
    );
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /not enough RAM: the model needs about [\d.]+ GiB, [\d.]+ GiB is available; use a smaller quantization/,
    );
  });

  test("EC10: backend unavailable → requested vs available backends", async () => {
    const r = await runCli(["infer", "--model", model, "--prompt", "x", "--backend", "cuda"], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /backend cuda is not available on this node; available: .*cpu/);
    assert.match(r.stderr, /BACKEND_UNAVAILABLE/);
  });

  test("EC4: a worker killed mid-stream → 'stream closed unexpectedly', tokens n/N, partial text saved", async () => {
    const run = startCli(
      ["infer", "--model", model, "--prompt", "long", "--max-tokens", "6000", "--context-size", "8192", "--slots", "1"],
      env,
    );
    await run.waitForStdout(200);
    const w = (await workers(env)).find((x) => x.slots_total === 1)!;
    process.kill(w.pid, "SIGKILL");
    const r = await run.done;
    assert.equal(r.code, 1);
    const m = /stream closed unexpectedly after (\d+)\/6000 tokens.*saved in (\S+)$/m.exec(r.stderr);
    assert.ok(m, r.stderr);
    assert.ok(Number(m[1]) > 0 && Number(m[1]) < 6000);
    assert.equal(readFileSync(m[2], "utf8"), r.stdout.replace(/\n$/, ""));
  });

  test("EC5: Ctrl+C → DELETE sent (the slot frees at once), 'Cancelled.', exit 130", async () => {
    const run = startCli(["infer", "--model", model, "--prompt", "long", "--max-tokens", "3000"], env);
    await run.waitForStdout(100);
    run.proc.kill("SIGINT");
    const r = await run.done;
    assert.equal(r.code, 130);
    assert.match(r.stderr, /Cancelled\./);
    const w = (await workers(env)).find((x) => x.model_ref === model && x.slots_total === 2)!;
    assert.equal(w.slots_busy, 0);
  });

  test("EC6: a worker whose slots are full → retries after the configured waits, then a clear error", async () => {
    // A 1-slot worker kept busy by a long stream.
    const busyModel = `file:${ensureModel("tiny", 43)}`;
    const long = startCli(
      [
        "infer",
        "--model",
        busyModel,
        "--prompt",
        "busy",
        "--max-tokens",
        "8000",
        "--context-size",
        "8192",
        "--slots",
        "1",
      ],
      env,
    );
    await long.waitForStdout(50);
    const r = await runCli(["infer", "--model", busyModel, "--prompt", "x", "--max-tokens", "4"], {
      ...env,
      RBEE_BUSY_RETRY_MS: "100,200,300",
    });
    long.proc.kill("SIGINT");
    await long.done;
    assert.equal(r.code, 1);
    assert.match(r.stderr, /all slots busy: retry 1\/3[\s\S]*retry 3\/3/);
    assert.match(r.stderr, /stayed busy \(all 1 slots in use\) through 3 retries/);
  });

  test("EC9: a wrong token → authentication error saying where the token comes from", async () => {
    const tokenFile = path.join(home, "hive", "token");
    const good = readFileSync(tokenFile, "utf8");
    writeFileSync(tokenFile, "a-token-the-hive-does-not-know-1234");
    try {
      const r = await runCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "2"], env);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /refused/);
      assert.match(r.stderr, new RegExp(`token comes from ${tokenFile.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}`));
      assert.match(r.stderr, /INVALID_API_KEY/);
    } finally {
      writeFileSync(tokenFile, good);
    }
  });

  test("EC1: hive unreachable (and no auto-start) → 3 attempts, then what to check", async () => {
    const { pid } = await hiveStatus(env);
    process.kill(pid, "SIGKILL"); // hive.json stays behind, pointing at a closed port
    await waitUntil(() => !isAlive(pid), { timeout: 10_000, what: "the killed hive to exit" });
    const r = await runCli(["infer", "--model", model, "--prompt", "x", "--no-autostart"], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot connect to localhost .* after 3 attempts/);
    assert.match(r.stderr, /rbee hive start/);
    // Without --no-autostart the next run starts a new hive and works again.
    const ok = await runCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "2"], env);
    assert.equal(ok.code, 0, ok.stderr);
  });
});

describe("rbee CLI, hives with special settings", () => {
  test("EC7: loading past its limit → 'loading timed out' with the progress reached; the worker is stopped", async () => {
    const home = newRbeeHome();
    const env = { RBEE_HOME: home, RBEE_LOAD_TIMEOUT_MS: "150" };
    try {
      const r = await runCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "2"], env);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /loading timed out: .* reached \d+% in 0 s; the worker was stopped/);
      assert.equal((await workers(env)).length, 0);
    } finally {
      await runCli(["hive", "stop"], env);
      rmSync(home, { recursive: true, force: true });
    }
  });

  test("EC2: a download that keeps failing gives up after 6 tries with the last error", async () => {
    const hub = new FakeHfHub(); // MOCK of the Hugging Face hub
    await hub.start();
    hub.hostInRepo("acme", "flaky-GGUF", "m-Q4_K_M.gguf", {
      data: readFileSync(ensureModel("tiny")),
      alwaysFail: { kind: "cut", afterBytes: 1000 },
    });
    const home = newRbeeHome();
    const env = { RBEE_HOME: home, HF_ENDPOINT: hub.url, RBEE_HIVE_ARGS: "--download-backoff-ms 20" };
    try {
      const r = await runCli(["infer", "--model", "hf:acme/flaky-GGUF", "--prompt", "x"], env);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /download attempt 5\/6 failed/);
      assert.match(
        r.stderr,
        /failed after 6 attempts: connection closed after 6000 of \d+ bytes \(.*\) \[DOWNLOAD_FAILED\]/,
      );
    } finally {
      await runCli(["hive", "stop"], env);
      await hub.stop();
      rmSync(home, { recursive: true, force: true });
    }
  });

  test("models download fetches into the node's catalog with progress; models list shows it", async () => {
    const hub = new FakeHfHub(); // MOCK of the Hugging Face hub
    await hub.start();
    const data = readFileSync(ensureModel("tiny"));
    hub.hostInRepo("acme", "coder-GGUF", "coder-Q4_K_M.gguf", { data });
    const home = newRbeeHome();
    const env = { RBEE_HOME: home, HF_ENDPOINT: hub.url };
    try {
      const r = await runCli(["models", "download", "hf:acme/coder-GGUF"], env);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /downloading 100%/);
      const localPath = /→ (\S+)$/m.exec(r.stdout)?.[1];
      assert.match(localPath ?? "", /hf\/acme\/coder-GGUF\/coder-Q4_K_M\.gguf$/);
      const list = JSON.parse((await runCli(["models", "list", "--json"], env)).stdout).models;
      assert.ok(
        list.some(
          (m: any) =>
            m.model_ref === "hf:acme/coder-GGUF" && m.local_path === localPath && m.size_bytes === data.length,
        ),
      );
      // A second download of the same ref in JSON mode reports the completed file.
      const again = JSON.parse((await runCli(["models", "download", "hf:acme/coder-GGUF", "--json"], env)).stdout);
      assert.equal(again.stage, "complete");
      assert.equal(again.local_path, localPath);
      const missing = await runCli(["models", "download", "hf:nobody/nothing"], env);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /MODEL_NOT_FOUND/);
    } finally {
      await runCli(["hive", "stop"], env);
      await hub.stop();
      rmSync(home, { recursive: true, force: true });
    }
  });

  test("EC8: a hive of another major version → both versions and how to upgrade", async () => {
    // A real hive-agent build that calls itself 9.0.0, inside the repo so it finds node_modules.
    const out = path.join(REPO_ROOT, ".cache", "agent-9.0.0");
    execFileSync(process.execPath, ["esbuild.mjs"], {
      cwd: REPO_ROOT,
      env: { ...process.env, RBEE_BUILD_VERSION: "9.0.0", RBEE_BUILD_OUT: out },
    });
    const home = newRbeeHome();
    const env = { RBEE_HOME: home, RBEE_AGENT_SCRIPT: path.join(out, "hive-agent.js") };
    try {
      const r = await runCli(["infer", "--model", model, "--prompt", "x"], env);
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        /localhost runs hive-agent 9\.0\.0 but this rbee is 0\.\d+\.\d+; upgrade the node with "rbee nodes deploy localhost"/,
      );
      assert.match(r.stderr, /VERSION_MISMATCH/);
    } finally {
      await runCli(["hive", "stop"], env);
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe("rbee CLI and a damaged registry", () => {
  test("a corrupt registry is moved aside with a warning and rebuilt from what the hive reports", async () => {
    const home = newRbeeHome();
    const env = { RBEE_HOME: home };
    try {
      const first = JSON.parse(
        (await runCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "2", "--json"], env)).stdout,
      );
      writeFileSync(path.join(home, "registry.sqlite"), "garbage, not SQLite at all");
      const r = await runCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "2", "--json"], env);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /corrupt/i);
      const second = JSON.parse(r.stdout);
      assert.equal(second.spawned, false, "the running worker was found again through the hive");
      assert.equal(second.worker_id, first.worker_id);
      // The rebuilt registry knows the worker again: the next run takes the warm path.
      const third = await runCli(["infer", "--model", model, "--prompt", "x", "--max-tokens", "2"], env);
      assert.doesNotMatch(third.stderr, /\[node\]/);
      assert.ok(readdirSync(home).some((f) => f.startsWith("registry.sqlite.corrupt-")));
    } finally {
      await runCli(["hive", "stop"], env);
      rmSync(home, { recursive: true, force: true });
    }
  });
});
