// The gateway's queue, for real: a one-slot worker held still (SIGSTOP) so requests pile up at the
// gateway, then let go. Requests start in arrival order; a client that leaves is dropped from the queue
// at once; past the queue's size or wait limit the answer is 429 / 503 with Retry-After.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import path from "node:path";
import { ensureModel } from "../fixtures/models";
import { newRbeeHome, runCli } from "../helpers/cli";
import { gatewayConfigPath, startGateway, until, writeGatewayConfig, type RunningGateway } from "../helpers/gateway";

const model = `file:${ensureModel("tiny")}`;

describe("rbee serve: queueing", () => {
  const home = newRbeeHome();
  const env = { RBEE_HOME: home };
  let gw: RunningGateway;
  let pid: number;

  before(async () => {
    writeGatewayConfig(gatewayConfigPath(home), {
      aliases: { tiny: model },
      spawn: { backend: "cpu", threads: 1, slots: 1 },
      queue: { size: 10, waitMs: 60_000 },
    });
    gw = await startGateway([], env);
    const warm = await gw.fetch("/v1/completions", {
      method: "POST",
      body: JSON.stringify({ model: "tiny", prompt: "x", max_tokens: 2 }),
    });
    assert.equal(warm.status, 200);
    const workers = JSON.parse((await runCli(["workers", "list", "--json"], env)).stdout).workers;
    assert.equal(workers.length, 1);
    assert.equal(workers[0].slots_total, 1);
    pid = workers[0].pid;
  });
  after(async () => {
    await gw?.stop();
    await runCli(["hive", "stop"], env);
    rmSync(home, { recursive: true, force: true });
  });

  const complete = (g: RunningGateway, prompt: string, init: RequestInit = {}) =>
    g.fetch("/v1/completions", {
      method: "POST",
      body: JSON.stringify({ model: "tiny", prompt, max_tokens: 8 }),
      ...init,
    });
  const depth = (g: RunningGateway) => g.metric("rbee_gateway_queue_depth", { model });

  test("more requests than slots: all complete, in arrival order; a client that leaves the queue is dropped at once", async () => {
    const order: number[] = [];
    const pending: Promise<void>[] = [];
    const send = (i: number) =>
      complete(gw, `request ${i}`).then(async (r) => {
        assert.equal(r.status, 200, await r.clone().text());
        assert.equal(((await r.json()) as any).usage.completion_tokens, 8);
        order.push(i);
      });
    process.kill(pid, "SIGSTOP");
    try {
      pending.push(send(1));
      await until(
        "request 1 to take the slot",
        async () => (await gw.metric("rbee_gateway_inflight", { model })) === 1,
      );
      for (let i = 2; i <= 5; i++) {
        pending.push(send(i));
        await until(`request ${i} to queue`, async () => (await depth(gw)) === i - 1);
      }
      const leaving = new AbortController();
      const left = complete(gw, "leaves", { signal: leaving.signal }).catch((e) => e);
      await until("the leaving request to queue", async () => (await depth(gw)) === 5);
      leaving.abort();
      await until("the queue to drop it", async () => (await depth(gw)) === 4);
      assert.equal((await left).name, "AbortError");
    } finally {
      process.kill(pid, "SIGCONT");
    }
    await Promise.all(pending);
    assert.deepEqual(order, [1, 2, 3, 4, 5]);
    assert.equal(await depth(gw), 0);
  });

  test("past the queue's size: 429 at once; past its wait limit: 503; both with Retry-After", async () => {
    // A second gateway on the same registry and worker, with a queue of one and a short wait.
    const strict = await startGateway(
      [
        "--config",
        writeGatewayConfig(path.join(home, "strict.json"), {
          aliases: { tiny: model },
          queue: { size: 1, waitMs: 800 },
        }),
      ],
      env,
    );
    process.kill(pid, "SIGSTOP");
    try {
      const first = complete(strict, "first");
      await until(
        "the first request to take the slot",
        async () => (await strict.metric("rbee_gateway_inflight", { model })) === 1,
      );
      const waiting = complete(strict, "second");
      await until("the second request to queue", async () => (await depth(strict)) === 1);
      const full = await complete(strict, "third");
      assert.equal(full.status, 429);
      assert.ok(Number(full.headers.get("retry-after")) >= 1);
      const body = (await full.json()) as any;
      assert.equal(body.error.type, "rate_limit_error");
      assert.match(body.error.message, /queue holds 1/);
      const late = await waiting;
      assert.equal(late.status, 503);
      assert.ok(Number(late.headers.get("retry-after")) >= 1);
      assert.match(((await late.json()) as any).error.message, /within 800 ms/);
      assert.equal(await strict.metric("rbee_gateway_rejected_total", { reason: "queue_full" }), 1);
      assert.equal(await strict.metric("rbee_gateway_rejected_total", { reason: "wait_timeout" }), 1);
      process.kill(pid, "SIGCONT");
      assert.equal((await first).status, 200);
    } finally {
      process.kill(pid, "SIGCONT");
      await strict.stop();
    }
  });
});
