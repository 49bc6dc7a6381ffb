// A worker writes each token's SSE frame once the next decode has been handed to llama.cpp, so the
// socket write and the client's wake-up run while the next token is computed instead of between two
// decodes (hive-agent/src/worker/token-frames.ts) — and concurrent streams still share every decode.
//
// The real engine and server on a generated model, in-process, with a real HTTP client on the
// worker's Unix socket. To see the order of events the test watches the engine's decodes and samplings
// (test/helpers/decode-spy.ts) and wraps ServerResponse.write — instrumentation only, nothing is
// faked. If a node-llama-cpp upgrade changes the internals the spy wraps, this test fails, and
// token-frames.ts must be checked again.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Engine } from "../../hive-agent/src/worker/engine";
import { WorkerServer } from "../../hive-agent/src/worker/server";
import { createLogger } from "../../hive-agent/src/util/log";
import { ensureModel } from "../fixtures/models";
import { spyOnDecodes } from "../helpers/decode-spy";

const KEY = "k".repeat(32);
let engine: Engine;
let server: WorkerServer;
let socketPath: string;
let dir: string;
/** What happened, in order: a decode handed to llama.cpp (with its sequence ids), a token sampled, a token frame written. */
/** A write of token frames carries `frames` of them (several where the worker coalesced them). */
let log: Array<{ kind: "decode"; seqs: number[] } | { kind: "sample" } | { kind: "write"; frames: number }> = [];
const originalWrite = http.ServerResponse.prototype.write;

before(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "rbee-frames-"));
  socketPath = path.join(dir, "w.sock");
  server = new WorkerServer(KEY, "file:tiny", createLogger("test worker"));
  await server.listen(`unix:${socketPath}`);
  engine = await Engine.load({
    modelPath: ensureModel("tiny"),
    backend: "cpu",
    contextSize: 512,
    slots: 2,
    threads: 1,
  });
  server.setReady(engine);
  spyOnDecodes(engine, {
    decode: (items) => log.push({ kind: "decode", seqs: items.map((i) => i.seq) }),
    sample: () => log.push({ kind: "sample" }),
  });
  http.ServerResponse.prototype.write = function (this: http.ServerResponse, chunk: unknown, ...rest: unknown[]) {
    if (typeof chunk === "string" && chunk.startsWith('data: {"type":"token"'))
      log.push({ kind: "write", frames: [...chunk.matchAll(/^data: /gm)].length });
    return (originalWrite as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof http.ServerResponse.prototype.write;
});

after(async () => {
  http.ServerResponse.prototype.write = originalWrite;
  await server.stop();
  await engine.dispose();
  rmSync(dir, { recursive: true, force: true });
});

/** Streams one completion over the worker's socket; returns its token events' indexes and texts. */
function stream(body: object): Promise<Array<{ i: number; t: string }>> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        path: "/v1/inference",
        method: "POST",
        headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
      },
      (res) => {
        let buf = "";
        const tokens: Array<{ i: number; t: string }> = [];
        res.setEncoding("utf8");
        res.on("data", (d: string) => (buf += d));
        res.on("end", () => {
          for (const frame of buf.split("\n\n")) {
            if (!frame.startsWith("data: {")) continue;
            const e = JSON.parse(frame.slice(6)) as { type: string; i: number; t: string };
            if (e.type === "token") tokens.push(e);
          }
          resolve(tokens);
        });
      },
    );
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

/**
 * Walks the log: how many token frames and writes there were, how many writes came after a decode
 * that followed the last sampling, and how many frames the first write carried.
 */
function writesAfterNextDecode() {
  let decodedSinceSample = false;
  let after = 0;
  let frames = 0;
  let writes = 0;
  let first = 0;
  for (const e of log) {
    if (e.kind === "sample") decodedSinceSample = false;
    else if (e.kind === "decode") decodedSinceSample = true;
    else {
      if (writes++ === 0) first = e.frames;
      frames += e.frames;
      if (decodedSinceSample) after++;
    }
  }
  return { frames, writes, after, first };
}

test("token frames are written after the next decode has been dispatched, the first at once and the rest coalesced", async () => {
  log = [];
  const tokens = await stream({ prompt: "def fib(n):", max_tokens: 24, seed: 1 });
  assert.deepEqual(
    tokens.map((e) => e.i),
    [...Array(24).keys()],
  );
  const { frames, writes, after, first } = writesAfterNextDecode();
  assert.equal(frames, 24);
  assert.equal(first, 1, "the first token's frame goes out on its own, at once");
  // The tiny model decodes a token in about a millisecond: 23 frames in 20 ms windows take a few writes.
  assert.ok(writes < 12, `${writes} writes for 24 frames: not coalesced`);
  // The last write (the stream's last frames) has no next decode: it goes out with the end event.
  assert.equal(after, writes - 1, `only ${after} of ${writes} writes came after the next decode was dispatched`);
});

test("two concurrent streams through the server share each decode batch", async () => {
  log = [];
  const [a, b] = await Promise.all([
    stream({ prompt: "def f0(x):", max_tokens: 24, seed: 1 }),
    stream({ prompt: "def f1(x):", max_tokens: 24, seed: 2 }),
  ]);
  assert.equal(a.length, 24);
  assert.equal(b.length, 24);
  const decodes = log.filter((e): e is { kind: "decode"; seqs: number[] } => e.kind === "decode");
  // 23 steps after the first tokens, plus the prompts: about 25 batches when the streams share them,
  // about 48 when each stream's token goes in a batch of its own.
  assert.ok(decodes.length <= 24 + 3, `${decodes.length} decode batches for 2 × 24 tokens`);
  assert.ok(
    decodes.filter((d) => d.seqs.length === 2).length >= 21,
    `batches: ${JSON.stringify(decodes.map((d) => d.seqs))}`,
  );
  // A stream held at the step gate for the other one leaves its frame to the step's decode too.
  const { frames, writes, after } = writesAfterNextDecode();
  assert.equal(frames, 48);
  assert.equal(
    after,
    writes - 2,
    `${after} of ${writes} writes came after the next decode was dispatched (each stream's last has none)`,
  );
});
