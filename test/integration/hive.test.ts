// The hive daemon's API: auth, bad input, preflight errors, idle timeout, shutdown cascade, logs.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Agent, request } from "undici";
import { ensureModel } from "../fixtures/models";
import { spawnSync } from "node:child_process";
import { startHive, waitReady, collect, isAlive, AGENT_BUNDLE, type TestHive } from "../helpers/hive";
import { AGENT_VERSION } from "../../hive-agent/src/protocol";

const tiny = () => `file:${ensureModel("tiny")}`;

async function raw(hive: TestHive, method: string, p: string, body?: string, token: string | null = hive.token) {
  const res = await request(`http://localhost${p}`, {
    method: method as any,
    dispatcher: new Agent({ connect: { socketPath: hive.socketPath } }),
    headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), "content-type": "application/json" },
    body,
  });
  return { status: res.statusCode, body: (await res.body.json()) as any };
}

describe("hive API", () => {
  let hive: TestHive;
  before(async () => {
    hive = await startHive();
  });
  after(() => hive.stop());

  test("health reports version and api version", async () => {
    assert.deepEqual(await hive.client.health(), {
      status: "alive",
      version: AGENT_VERSION,
      api_version: "v1",
      pid: hive.proc.pid,
    });
  });

  test("capabilities detect the CPU backend, cores and RAM through node-llama-cpp", async () => {
    const caps = await hive.client.capabilities();
    assert.ok(caps.backends.includes("cpu"));
    assert.ok(caps.cpu_cores >= 1);
    assert.ok(caps.ram_total_bytes > 2 ** 30 && caps.ram_free_bytes > 0 && caps.ram_free_bytes <= caps.ram_total_bytes);
    for (const d of caps.devices) assert.ok(caps.backends.includes(d.backend));
    // The tests run hives with --native-build off (test/run.mjs sets RBEE_NATIVE_BUILD=off).
    assert.deepEqual(caps.native_build.state, "skipped");
    assert.match(caps.native_build.detail, /turned off \(--native-build off\); build it with rbee nodes build-native/);
  });

  test("a wrong or missing token gets 401 INVALID_API_KEY", async () => {
    const wrong = await raw(hive, "GET", "/v1/workers", undefined, "not-the-token-at-all");
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error.code, "INVALID_API_KEY");
    const missing = await raw(hive, "GET", "/v1/health", undefined, null);
    assert.equal(missing.status, 401);
    assert.match(missing.body.error.message, /Authorization/);
  });

  test("malformed JSON gets 400 INVALID_REQUEST; a missing field is named", async () => {
    const bad = await raw(hive, "POST", "/v1/workers/spawn", "{not json");
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, "INVALID_REQUEST");
    const missing = await raw(hive, "POST", "/v1/workers/spawn", JSON.stringify({ slots: 2 }));
    assert.equal(missing.status, 400);
    assert.match(missing.body.error.message, /model_ref/);
    const wrongType = await raw(hive, "POST", "/v1/workers/spawn", JSON.stringify({ model_ref: tiny(), slots: "two" }));
    assert.equal(wrongType.body.error.details.field, "slots");
  });

  test("a body over the size limit gets 413", async () => {
    const big = await raw(hive, "POST", "/v1/workers/spawn", JSON.stringify({ model_ref: "x".repeat(5 << 20) }));
    assert.equal(big.status, 413);
    assert.equal(big.body.error.code, "PAYLOAD_TOO_LARGE");
  });

  test("unknown endpoints get 404 with an envelope", async () => {
    const r = await raw(hive, "GET", "/v1/nope");
    assert.equal(r.status, 404);
    assert.equal(r.body.error.code, "NOT_FOUND");
  });

  test("an unknown model gets MODEL_NOT_FOUND", async () => {
    await assert.rejects(
      hive.client.spawn({ model_ref: "hf:nobody/nothing/x.gguf" }),
      (e: any) => e.code === "MODEL_NOT_FOUND" && /download/.test(e.message),
    );
    await assert.rejects(
      hive.client.spawn({ model_ref: "file:/nonexistent/model.gguf" }),
      (e: any) => e.code === "MODEL_NOT_FOUND",
    );
  });

  test("model refs that try to escape the models folder are refused", async () => {
    for (const ref of [
      "../../etc/passwd.gguf",
      "hf:owner/../../../x.gguf",
      "sub/../../x.gguf",
      "/etc/x.gguf",
      "file:relative.gguf",
    ])
      await assert.rejects(hive.client.spawn({ model_ref: ref }), (e: any) => e.code === "INVALID_REQUEST", ref);
  });

  test("a backend the node lacks gets BACKEND_UNAVAILABLE with what is available", async () => {
    const caps = await hive.client.capabilities();
    const missing = (["cuda", "metal", "vulkan"] as const).find((b) => !caps.backends.includes(b))!;
    await assert.rejects(
      hive.client.spawn({ model_ref: tiny(), backend: missing }),
      (e: any) => e.code === "BACKEND_UNAVAILABLE" && e.message.includes("cpu") && e.details.requested === missing,
    );
  });

  test("a worker that cannot fit in RAM is refused before loading with needed vs available", async () => {
    await assert.rejects(
      hive.client.spawn({ model_ref: tiny(), backend: "cpu", context_size: 1 << 22, slots: 64 }),
      (e: any) =>
        e.code === "INSUFFICIENT_RAM" &&
        e.details.needed_bytes > e.details.available_bytes &&
        /quantization/.test(e.message),
    );
    assert.equal((await hive.client.workers()).length, 0);
  });

  test("a file that is not a GGUF model is refused at preflight", async () => {
    const file = path.join(hive.home, "not-a-model.gguf");
    writeFileSync(file, "this is not a model");
    await assert.rejects(
      hive.client.spawn({ model_ref: `file:${file}` }),
      (e: any) => e.code === "MODEL_NOT_FOUND" && /not a GGUF model file/.test(e.message),
    );
  });

  test("tokens never appear in the hive's log", async () => {
    const s = await hive.client.spawn({ model_ref: tiny(), slots: 1, threads: 1 });
    const w = await waitReady(hive, s.worker_id);
    await collect(hive.client.workerClient(w).inference({ prompt: "x", max_tokens: 2 }));
    await raw(hive, "GET", "/v1/workers", undefined, "wrong-token-value-123456");
    await hive.client.shutdown(w.id);
    const log = hive.log();
    assert.match(log, /worker .* ready/);
    // A 1-thread CPU worker runs the prebuilt llama.cpp, and says why (no native build is used at 1 thread).
    assert.match(log, /loaded .* \(cpu, prebuilt \(one thread/);
    assert.ok(!log.includes(hive.token), "hive token leaked into the log");
    assert.ok(!log.includes(w.api_key), "worker key leaked into the log");
  });
});

describe("hive lifecycle", () => {
  test("the idle timeout stops a worker that is not used, but not one that is streaming", async () => {
    const hive = await startHive(["--idle-timeout-ms", "1500", "--health-interval-ms", "250"]);
    try {
      const idle = await waitReady(
        hive,
        (await hive.client.spawn({ model_ref: tiny(), slots: 1, threads: 1 })).worker_id,
      );
      const busy = await waitReady(
        hive,
        (await hive.client.spawn({ model_ref: tiny(), slots: 1, threads: 1 })).worker_id,
      );
      // Keep `busy` streaming for longer than the idle timeout.
      const streaming = collect(
        hive.client.workerClient(busy).inference({ prompt: "keep busy", max_tokens: 4000, temperature: 0 }),
      );
      const deadline = Date.now() + 10_000;
      while (isAlive(idle.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.ok(!isAlive(idle.pid), "idle worker still running");
      assert.ok(isAlive(busy.pid), "streaming worker was stopped");
      const events = await streaming;
      assert.equal(events.at(-1)?.type, "end");
      assert.match(hive.log(), /idle for/);
    } finally {
      await hive.stop();
    }
  });

  test("SIGTERM to the hive stops all its workers and removes hive.json", async () => {
    const hive = await startHive();
    try {
      assert.ok(existsSync(path.join(hive.home, "hive.json")));
      const a = (await hive.client.spawn({ model_ref: tiny(), slots: 1, threads: 1 })).worker_id;
      const b = (await hive.client.spawn({ model_ref: tiny(), slots: 1, threads: 1 })).worker_id;
      const pids = [(await waitReady(hive, a)).pid, (await waitReady(hive, b)).pid];
      hive.proc.kill("SIGTERM");
      const code = await new Promise((r) => hive.proc.once("exit", r));
      assert.equal(code, 0);
      for (const pid of pids) assert.ok(!isAlive(pid), `worker ${pid} survived the hive`);
      assert.ok(!existsSync(path.join(hive.home, "hive.json")));
    } finally {
      await hive.stop();
    }
  });

  test("workers of a hive killed with SIGKILL exit by themselves", async () => {
    const hive = await startHive();
    try {
      const w = await waitReady(hive, (await hive.client.spawn({ model_ref: tiny(), slots: 1, threads: 1 })).worker_id);
      hive.proc.kill("SIGKILL");
      const deadline = Date.now() + 10_000;
      while (isAlive(w.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.ok(!isAlive(w.pid), "orphan worker kept running");
    } finally {
      await hive.stop();
    }
  });

  test("the daemon refuses a non-loopback address, a missing token file and unknown modes", async () => {
    const r1 = spawnSync(
      process.execPath,
      [
        AGENT_BUNDLE,
        "daemon",
        "--listen",
        "http://0.0.0.0:0",
        "--token-file",
        "/nonexistent",
        "--home",
        "/tmp/rbee-never",
      ],
      { encoding: "utf8" },
    );
    assert.equal(r1.status, 1);
    assert.match(r1.stderr, /loopback|token file/);
    const r2 = spawnSync(process.execPath, [AGENT_BUNDLE, "daemon", "--home", "/tmp/rbee-never"], { encoding: "utf8" });
    assert.equal(r2.status, 2);
    assert.match(r2.stderr, /--token-file is required/);
    const r3 = spawnSync(
      process.execPath,
      [AGENT_BUNDLE, "daemon", "--token-file", "/nonexistent", "--home", "/tmp/rbee-never", "--native-build", "always"],
      { encoding: "utf8" },
    );
    assert.equal(r3.status, 2);
    assert.match(r3.stderr, /--native-build must be one of auto, off, got "always"/);
    const r4 = spawnSync(
      process.execPath,
      [
        AGENT_BUNDLE,
        "daemon",
        "--token-file",
        "/nonexistent",
        "--home",
        "/tmp/rbee-never",
        "--decode-batching",
        "alternate",
      ],
      { encoding: "utf8" },
    );
    assert.equal(r4.status, 2);
    assert.match(r4.stderr, /--decode-batching must be one of auto, together, one-at-a-time, got "alternate"/);
  });

  test("with --native-build auto a hive decides by itself, and says why it builds nothing here", async () => {
    // No cmake on the PATH: a node with 3+ cores is skipped for the missing tools, a 2-core one
    // (CI) for its cores. Either way no build starts, and the reason tells the user what to do.
    const binDir = mkdtempSync(path.join(tmpdir(), "rbee-bin-"));
    symlinkSync(process.execPath, path.join(binDir, "node"));
    const bare = await startHive(["--native-build", "auto"], { PATH: binDir });
    try {
      const caps = await bare.client.capabilities();
      const status = caps.native_build;
      assert.equal(status.state, "skipped");
      const expected =
        caps.cpu_cores <= 2
          ? /CPU cores: workers default to 1 thread/
          : /no cmake, a C\+\+ compiler or npm on this node; install cmake, a C\+\+ compiler and npm/;
      assert.match(status.detail, expected);
      assert.match(bare.log(), /native build skipped/);
    } finally {
      await bare.stop();
      rmSync(binDir, { recursive: true, force: true });
    }
  });
});
