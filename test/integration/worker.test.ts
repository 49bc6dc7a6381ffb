// The worker through the real hive: spawn → ready → streams, slots, cancellation, crashes.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { ensureModel } from "../fixtures/models";
import { startHive, waitReady, collect, isAlive, type TestHive } from "../helpers/hive";
import type { StreamEvent, WorkerInfo } from "../../hive-agent/src/protocol";
import type { WorkerClient } from "../../extension/src/keeper/hive-client";

const tokens = (events: StreamEvent[]) =>
  events.filter((e): e is Extract<StreamEvent, { type: "token" }> => e.type === "token");
const endOf = (events: StreamEvent[]) =>
  events.find((e): e is Extract<StreamEvent, { type: "end" }> => e.type === "end");
const text = (events: StreamEvent[]) =>
  tokens(events)
    .map((e) => e.t)
    .join("");

describe("worker", () => {
  let hive: TestHive;
  let worker: WorkerInfo;
  let client: WorkerClient;
  const modelRef = `file:${ensureModel("tiny")}`;

  before(async () => {
    hive = await startHive();
    const spawned = await hive.client.spawn({ model_ref: modelRef, slots: 2, threads: 1, context_size: 4096 });
    assert.equal(spawned.state, "loading");
    assert.equal(spawned.url, `unix:${hive.home}/workers/${spawned.worker_id}.sock`);
    worker = await waitReady(hive, spawned.worker_id);
    client = hive.client.workerClient(worker);
  });
  after(() => hive.stop());

  test("a completion streams exactly max_tokens token events, then end", async () => {
    const events = await collect(
      client.inference({ prompt: "def fib(n):", max_tokens: 24, seed: 1, temperature: 0.7 }),
    );
    assert.equal(events[0].type, "started");
    assert.equal(tokens(events).length, 24);
    assert.deepEqual(
      tokens(events).map((e) => e.i),
      [...Array(24).keys()],
    );
    const end = endOf(events)!;
    assert.equal(end.stop_reason, "max_tokens");
    assert.equal(end.tokens_out, 24);
    assert.equal(events.at(-1), end, "end is the last event");
    assert.ok(text(events).length > 0);
  });

  test("the same seed gives the same tokens; another seed does not", async () => {
    const req = { prompt: "x = ", max_tokens: 32, temperature: 1, seed: 1234 };
    const a = text(await collect(client.inference(req)));
    const b = text(await collect(client.inference(req)));
    const c = text(await collect(client.inference({ ...req, seed: 99 })));
    assert.equal(a, b);
    assert.notEqual(a, c);
  });

  test("infill streams a fill-in-the-middle completion", async () => {
    const events = await collect(
      client.infill({
        prefix: "def add(a, b):\n    return ",
        suffix: "\n\nprint(add(1, 2))\n",
        max_tokens: 8,
        seed: 3,
      }),
    );
    assert.equal(endOf(events)?.tokens_out, 8);
    assert.equal(tokens(events).length, 8);
  });

  test("chat applies the model's chat template and streams a reply", async () => {
    const events = await collect(
      client.chat({
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Hello?" },
        ],
        max_tokens: 10,
        seed: 3,
      }),
    );
    assert.equal(endOf(events)?.tokens_out, 10);
  });

  test("a stop sequence ends the stream before the stop text", async () => {
    const full = await collect(client.inference({ prompt: "abc", max_tokens: 20, seed: 7, temperature: 0 }));
    const pieces = tokens(full).map((e) => e.t);
    const stop = pieces[5].trim() ? pieces[5] : pieces[6];
    const cut = text(full).indexOf(stop);
    const events = await collect(
      client.inference({ prompt: "abc", max_tokens: 20, seed: 7, temperature: 0, stop: [stop] }),
    );
    assert.equal(endOf(events)?.stop_reason, "stop_sequence");
    assert.equal(text(events), text(full).slice(0, cut));
  });

  test("two streams run at once on a 2-slot worker and a third gets ALL_SLOTS_BUSY", async () => {
    const a = client.inference({ prompt: "one", max_tokens: 1500, seed: 1 });
    const b = client.inference({ prompt: "two", max_tokens: 1500, seed: 2 });
    // Pull the first event of each so both hold a slot.
    const [a0, b0] = await Promise.all([a.next(), b.next()]);
    assert.equal((a0.value as StreamEvent).type, "started");
    assert.equal((b0.value as StreamEvent).type, "started");
    await assert.rejects(
      collect(client.inference({ prompt: "three", max_tokens: 5 })),
      (e: any) => e.code === "ALL_SLOTS_BUSY",
    );
    const [ra, rb] = await Promise.all([collect(a), collect(b)]);
    assert.equal(endOf(ra)?.tokens_out, 1500);
    assert.equal(endOf(rb)?.tokens_out, 1500);
  });

  test("cancel by AbortSignal sends DELETE: the stream ends with stop_reason cancelled, fast, and the slot is free", async () => {
    const abort = new AbortController();
    const events: StreamEvent[] = [];
    let abortedAt = 0;
    for await (const e of client.inference({ prompt: "long", max_tokens: 3000, seed: 1 }, abort.signal)) {
      events.push(e);
      if (e.type === "token" && e.i === 20) {
        abortedAt = performance.now();
        abort.abort();
      }
    }
    const elapsed = performance.now() - abortedAt;
    const end = endOf(events)!;
    assert.equal(end.stop_reason, "cancelled");
    assert.ok(end.tokens_out < 3000);
    assert.ok(elapsed < 1000, `cancel took ${elapsed} ms`);
    const w = await hive.client.worker(worker.id);
    assert.equal(w.slots_busy, 0);
    // Both slots are usable again.
    const again = await Promise.all([
      collect(client.inference({ prompt: "a", max_tokens: 3 })),
      collect(client.inference({ prompt: "b", max_tokens: 3 })),
    ]);
    assert.deepEqual(
      again.map((r) => endOf(r)?.tokens_out),
      [3, 3],
    );
  });

  test("DELETE of a request id stops that request within 100 ms; DELETE is idempotent", async () => {
    const stream = client.inference({ request_id: "req-delete-1", prompt: "long", max_tokens: 3000, seed: 1 });
    const events: StreamEvent[] = [];
    let t0 = 0;
    for await (const e of stream) {
      events.push(e);
      if (e.type === "token" && e.i === 10) {
        t0 = performance.now();
        await client.cancel("req-delete-1");
      }
      if (e.type === "end") break;
    }
    const elapsed = performance.now() - t0;
    assert.equal(endOf(events)?.stop_reason, "cancelled");
    assert.ok(elapsed < 100, `cancelled in ${elapsed.toFixed(1)} ms`);
    await client.cancel("req-delete-1");
    await client.cancel("never-existed");
  });

  test("a client that hangs up frees its slot", async () => {
    const it = client.inference({ prompt: "hang", max_tokens: 3000, seed: 1 });
    for await (const e of it) if (e.type === "token" && e.i === 5) break; // leaving the loop closes the connection
    const deadline = Date.now() + 2000;
    let busy = 1;
    while (Date.now() < deadline && busy > 0) {
      busy = (await hive.client.worker(worker.id)).slots_busy;
      if (busy) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(busy, 0);
  });

  test("bad requests get INVALID_REQUEST naming the field", async () => {
    await assert.rejects(
      collect(client.inference({ prompt: "x", max_tokens: 0 })),
      (e: any) => e.code === "INVALID_REQUEST" && /max_tokens/.test(e.message),
    );
    await assert.rejects(
      collect(client.chat({ messages: [{ role: "robot" as any, content: "x" }], max_tokens: 1 })),
      (e: any) => e.code === "INVALID_REQUEST" && /messages\[0\]\.role/.test(e.message),
    );
    await assert.rejects(
      collect(client.inference({ prompt: "x", max_tokens: 5000 })),
      (e: any) => e.code === "INVALID_REQUEST" && /context/.test(e.message),
    );
  });

  test("a worker killed with SIGKILL mid-stream: the stream ends with an error event, the hive reports WORKER_CRASHED and drops it", async () => {
    const spawned = await hive.client.spawn({ model_ref: modelRef, slots: 1, threads: 1 });
    const w = await waitReady(hive, spawned.worker_id);
    const events: StreamEvent[] = [];
    for await (const e of hive.client.workerClient(w).inference({ prompt: "die", max_tokens: 3000 })) {
      events.push(e);
      if (e.type === "token" && e.i === 10) process.kill(w.pid, "SIGKILL");
    }
    const last = events.at(-1)!;
    assert.equal(last.type, "error");
    assert.equal((last as any).code, "WORKER_CRASHED");
    // The hive learns of the death from the process's exit, a moment after the stream broke.
    let report: any;
    const deadline = Date.now() + 5000;
    while (!report && Date.now() < deadline) {
      await hive.client.worker(w.id).then(
        () => new Promise((r) => setTimeout(r, 20)),
        (e) => (report = e),
      );
    }
    assert.equal(report?.code, "WORKER_CRASHED");
    assert.match(report.message, /SIGKILL/);
    assert.ok(!(await hive.client.workers()).some((x) => x.id === w.id));
  });

  test("shutdown stops a worker and frees its process", async () => {
    const spawned = await hive.client.spawn({ model_ref: modelRef, slots: 1, threads: 1 });
    const w = await waitReady(hive, spawned.worker_id);
    await hive.client.shutdown(w.id);
    assert.ok(!isAlive(w.pid));
    await assert.rejects(hive.client.worker(w.id), (e: any) => e.code === "WORKER_NOT_FOUND");
  });
});
