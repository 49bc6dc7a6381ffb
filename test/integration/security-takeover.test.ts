// Security regressions (docs/security.md), reproduced for real on loopback: another local user
// taking over a port a stopped rbee process freed, and a worker being re-pointed through the hive.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import path from "node:path";
import { Agent, request } from "undici";
import { Registry } from "../../extension/src/keeper/registry";
import { ensureModel } from "../fixtures/models";
import { newRbeeHome, runCli } from "../helpers/cli";
import { startHive, waitReady, isAlive, collect } from "../helpers/hive";
import { HiveClient } from "../../extension/src/keeper/hive-client";
import { RbeeError } from "../../hive-agent/src/protocol";
import { FAKE_COMPLETION, startSquatter } from "../helpers/squatter";

const model = `file:${ensureModel("tiny")}`;

describe("finding 1: loopback port takeover", () => {
  test("takeover-registry: a fresh registry entry naming a loopback port never gets the prompt or the worker key", async () => {
    const home = newRbeeHome();
    const env = { RBEE_HOME: home };
    const squatter = await startSquatter();
    try {
      // What a worker stopped by its idle timeout left behind: a fresh, ready entry whose port is now someone else's.
      const registry = await Registry.open(path.join(home, "registry.sqlite"));
      await registry.upsertNode({ alias: "localhost", host: "127.0.0.1", transport: "loopback" });
      await registry.upsertWorker({
        id: "w-0badc0de",
        node: "localhost",
        model_ref: model,
        url: squatter.url,
        backend: "cpu",
        device: 0,
        state: "idle",
        slots_total: 1,
        api_key: "the-real-worker-key-0123456789",
        last_health_at: Date.now(),
      });
      registry.close();
      const r = await runCli(
        ["infer", "--model", model, "--prompt", "my secret prompt", "--max-tokens", "4", "--seed", "1"],
        env,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(squatter.requests, [], "the squatter was sent something");
      assert.ok(!r.stdout.includes(FAKE_COMPLETION), "the squatter's completion was printed");
      const after = await Registry.open(path.join(home, "registry.sqlite"));
      assert.equal(
        await after.getWorker("w-0badc0de"),
        undefined,
        "the entry that points off the node's sockets is dropped",
      );
      after.close();
    } finally {
      await runCli(["hive", "stop"], env);
      await squatter.close();
      rmSync(home, { recursive: true, force: true });
    }
  });

  test("takeover-hive-json: hive.json left by a killed hive never leads the hive token (or a signal) to another process", async () => {
    const home = newRbeeHome();
    const env = { RBEE_HOME: home };
    const squatter = await startSquatter();
    // An unrelated process of the user's, whose pid a stale hive.json names.
    const bystander = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
    try {
      mkdirSync(path.join(home, "hive"), { recursive: true, mode: 0o700 });
      writeFileSync(path.join(home, "hive", "token"), "the-hive-token-0123456789abcdef", { mode: 0o600 });
      for (const info of [
        { pid: bystander.pid, port: squatter.port, version: "0.1.0", api_version: "v1" }, // the old format
        { pid: bystander.pid, address: squatter.url, version: "0.1.0", api_version: "v1" },
        { pid: bystander.pid, address: `unix:/tmp/elsewhere-${process.pid}.sock`, version: "0.1.0", api_version: "v1" },
      ]) {
        writeFileSync(path.join(home, "hive", "hive.json"), JSON.stringify(info));
        const status = await runCli(["hive", "status", "--json"], env);
        assert.equal(JSON.parse(status.stdout).running, false, status.stderr);
        const stop = await runCli(["hive", "stop"], env);
        assert.equal(stop.code, 0, stop.stderr);
        assert.ok(isAlive(bystander.pid!), "rbee hive stop signalled the pid hive.json named");
      }
      assert.deepEqual(squatter.requests, [], "the squatter was sent something (the hive token)");
    } finally {
      bystander.kill("SIGKILL");
      await squatter.close();
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe("finding 3: worker re-pointing", () => {
  test("repoint-worker: the hive token cannot re-point a worker, workers never hold it, and the worker key goes nowhere else", async () => {
    const hive = await startHive();
    const squatter = await startSquatter();
    try {
      const spawned = await hive.client.spawn({ model_ref: model, slots: 1, threads: 1, context_size: 256 });
      const w = await waitReady(hive, spawned.worker_id);
      const raw = (body: unknown, token: string, extra: Record<string, string> = {}) =>
        request("http://localhost/v1/workers/ready", {
          method: "POST",
          dispatcher: new Agent({ connect: { socketPath: hive.socketPath } }),
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...extra },
          body: JSON.stringify(body),
        });
      const evil = { worker_id: w.id, url: squatter.url, model_ref: model, backend: "cpu", device: 0 };
      const r1 = await raw(evil, hive.token);
      assert.equal(r1.statusCode, 401, await r1.body.text());
      const r2 = await raw(evil, hive.token, { "x-rbee-worker": w.id });
      assert.equal(r2.statusCode, 401, await r2.body.text());
      // Health checks (a listing refreshes every worker) still go to the worker's own socket.
      const listed = (await hive.client.workers()).find((x) => x.id === w.id)!;
      assert.equal(listed.url, `unix:${hive.home}/workers/${w.id}.sock`);
      assert.notEqual(listed.state, "stopping");
      assert.deepEqual(squatter.requests, []);
      // A worker's environment holds its own keys only, not the hive token.
      const environ = readFileSync(`/proc/${w.pid}/environ`, "utf8");
      assert.ok(!environ.includes(hive.token), "the worker holds the hive token");
    } finally {
      await squatter.close();
      await hive.stop();
    }
  });
});

describe("finding 1: TCP only where there are no Unix sockets", () => {
  test("tcp-fallback-server-proof: over loopback TCP the server proves its key before anything is sent; a squatter gets only a nonce", async () => {
    const hive = await startHive(["--listen", "http://127.0.0.1:0"]);
    const squatter = await startSquatter();
    try {
      assert.match(hive.address, /^http:\/\/127\.0\.0\.1:\d+$/);
      const spawned = await hive.client.spawn({ model_ref: model, slots: 1, threads: 1, context_size: 256 });
      const w = await waitReady(hive, spawned.worker_id);
      assert.match(w.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const events = [];
      for await (const e of hive.client.workerClient(w).inference({ prompt: "x", max_tokens: 3, seed: 1 }))
        events.push(e.type);
      assert.deepEqual(events, ["started", "token", "token", "token", "end"]);
      // The same client code pointed at a squatter's port: refused before the token or prompt leave.
      const fake = new HiveClient({
        transport: hive.transport,
        baseUrl: squatter.url,
        token: hive.token,
        nodeName: "localhost",
        retry: { attempts: 1 },
      });
      await assert.rejects(
        fake.health(),
        (e: unknown) => e instanceof RbeeError && e.code === "INVALID_API_KEY" && /could not prove/.test(e.message),
      );
      const fakeWorker = new HiveClient({
        transport: hive.transport,
        baseUrl: hive.address,
        token: hive.token,
        nodeName: "localhost",
      }).workerClient({ ...w, url: squatter.url });
      await assert.rejects(collect(fakeWorker.inference({ prompt: "my secret prompt", max_tokens: 3 })));
      assert.ok(
        squatter.requests.length > 0 &&
          squatter.requests.every((r) => r.url === "/v1/hello" && r.authorization === undefined && r.body === ""),
        JSON.stringify(squatter.requests),
      );
    } finally {
      await squatter.close();
      await hive.stop();
    }
  });
});
