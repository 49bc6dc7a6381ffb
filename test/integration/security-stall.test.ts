// Reliability regressions (docs/security.md): a stream that goes silent ends with STREAM_STALLED
// instead of hanging the CLI or the editor, and the hive counts a busy worker that makes no progress
// as unhealthy.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { HiveClient } from "../../extension/src/keeper/hive-client";
import { RbeeError, unixAddress } from "../../hive-agent/src/protocol";
import { Supervisor } from "../../hive-agent/src/hive/supervisor";
import { createLogger } from "../../hive-agent/src/util/log";
import { LISTENING_PREFIX } from "../../hive-agent/src/worker/spawn-plan";
import { ensureModel } from "../fixtures/models";
import { startHive, waitReady } from "../helpers/hive";

describe("reliability: stalls", () => {
  test(
    "stream-stall-limit: a worker frozen mid-stream (SIGSTOP) ends the stream with STREAM_STALLED",
    { timeout: 120_000 },
    async () => {
      const hive = await startHive();
      let pid = 0;
      try {
        const spawned = await hive.client.spawn({
          model_ref: `file:${ensureModel("tiny")}`,
          slots: 1,
          threads: 1,
          context_size: 512,
        });
        const w = await waitReady(hive, spawned.worker_id);
        pid = w.pid;
        const client = new HiveClient({
          transport: hive.transport,
          baseUrl: hive.address,
          token: hive.token,
          nodeName: "localhost",
          stallLimitMs: 1500,
        }).workerClient(w);
        const events: string[] = [];
        const err = await (async () => {
          try {
            for await (const e of client.inference({ prompt: "x", max_tokens: 400, seed: 1 })) {
              events.push(e.type);
              if (e.type === "token" && events.length === 3) process.kill(pid, "SIGSTOP"); // stuck mid-decode
            }
          } catch (e) {
            return e;
          }
          return undefined;
        })();
        assert.ok(err instanceof RbeeError, `the stream ended without an error: ${events.join(",")}`);
        assert.equal(err.code, "STREAM_STALLED");
        assert.match(err.message, /sent nothing for 2 s/);
      } finally {
        if (pid) process.kill(pid, "SIGCONT");
        await hive.stop();
      }
    },
  );

  test(
    "busy-without-progress: the hive stops a worker that answers 'busy' but produces nothing within the stall limit",
    { timeout: 60_000 },
    async () => {
      // A stand-in worker process (a real one cannot be made to hang inside llama.cpp on demand): it
      // listens where it is told and answers health as a worker stuck mid-decode does, busy forever.
      const home = mkdtempSync(path.join(tmpdir(), "rbee-stall-"));
      chmodSync(home, 0o700);
      mkdirSync(path.join(home, "workers"), { mode: 0o700 });
      const script = path.join(home, "stuck-worker.js");
      writeFileSync(
        script,
        `const http = require("node:http");
const args = process.argv.slice(3);
const listen = args[args.indexOf("--listen") + 1].slice("unix:".length);
const since = Date.now();
http.createServer((req, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({
  status: "alive", state: "busy", slots_total: 1, slots_busy: 1, last_activity: Date.now(), last_progress: since,
}))).listen(listen, () => process.stdout.write(${JSON.stringify(LISTENING_PREFIX)} + "unix:" + listen + "\\n"));
process.stdin.resume();
`,
      );
      const sup = new Supervisor(
        {
          agentScript: script,
          hiveUrl: () => unixAddress(path.join(home, "hive.sock")),
          workerAddress: (id) => unixAddress(path.join(home, "workers", `${id}.sock`)),
          healthIntervalMs: 200,
          maxHealthFailures: 2,
          gracefulShutdownMs: 1000,
          loadTimeoutMs: 60_000,
          stallLimitMs: 1000,
        },
        createLogger("test-supervisor"),
      );
      sup.start();
      try {
        const w = await sup.spawn({
          modelRef: "stuck",
          modelPath: "/nonexistent.gguf",
          backend: "cpu",
          device: 0,
          contextSize: 64,
          slots: 1,
          threads: 1,
          placement: { devices: [], pins: [], bytes: [0] },
          keepAliveMs: 0,
        });
        sup.onReady({ worker_id: w.id, url: w.url, model_ref: "stuck", backend: "cpu", device: 0 });
        const deadline = Date.now() + 30_000;
        let failure: unknown;
        while (!failure && Date.now() < deadline) {
          try {
            sup.get(w.id);
            await new Promise((r) => setTimeout(r, 100));
          } catch (e) {
            failure = e;
          }
        }
        assert.ok(failure instanceof RbeeError, "the stuck worker is still listed as healthy");
        assert.equal(failure.code, "WORKER_CRASHED");
        assert.match(failure.message, /no progress/);
      } finally {
        await sup.shutdownAll();
        rmSync(home, { recursive: true, force: true });
      }
    },
  );
});
