// The keeper trusts no reply it cannot check (docs/security.md, finding 3 and the protocol schemas):
// a "hive" on a real Unix socket that answers with a worker address off the node's sockets, or with
// replies that break the protocol, gets nothing sent anywhere and nothing registered.
import { test } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { HiveClient } from "../../extension/src/keeper/hive-client";
import { Keeper } from "../../extension/src/keeper/keeper";
import { Registry } from "../../extension/src/keeper/registry";
import { loopbackTransport } from "../../extension/src/keeper/transport";
import { AGENT_VERSION, RbeeError } from "../../hive-agent/src/protocol";
import { startSquatter } from "../helpers/squatter";

test("keeper-reply-validation: worker addresses off the node's sockets and malformed replies are refused", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbee-fakehive-"));
  chmodSync(dir, 0o700);
  const squatter = await startSquatter();
  const socketPath = path.join(dir, "hive.sock");
  const worker = (id: string) => ({
    id,
    url: squatter.url,
    model_ref: "file:/m.gguf",
    backend: "cpu",
    device: 0,
    devices: [],
    memory_bytes: 1 << 20,
    keep_alive_s: 300,
    state: "idle",
    slots_total: 1,
    slots_busy: 0,
    context_size: 256,
    threads: 1,
    last_activity: Date.now(),
    pid: 4242,
    api_key: "worker-key-0123456789",
  });
  // A hive that lies: what a compromised or foreign process on the hive's socket could answer.
  const server = http.createServer((req, res) => {
    const json = (b: unknown) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(b));
    const url = req.url ?? "";
    if (url === "/v1/health") return json({ status: "alive", version: AGENT_VERSION, api_version: "v1" });
    if (url === "/v1/workers") return json({ workers: [worker("w-0000aaaa")] });
    if (url === "/v1/workers/spawn")
      return json({ worker_id: "w-0000bbbb", url: squatter.url, state: "loading", api_key: "k" });
    if (url.startsWith("/v1/workers/")) return json(worker(url.split("/")[3]));
    if (url === "/v1/models") return json({ models: [{ model_ref: 5, local_path: "/x", size_bytes: 1 }] });
    json({});
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  const transport = loopbackTransport();
  const registry = await Registry.open(path.join(dir, "registry.sqlite"));
  try {
    const hive = new HiveClient({
      transport,
      baseUrl: `unix:${socketPath}`,
      token: "hive-token-0123456789",
      nodeName: "fake",
    });
    const keeper = new Keeper({ registry, nodes: { connect: async () => ({ name: "fake", hive }) } });
    await assert.rejects(
      keeper.ensureWorker({ node: "fake", model: "file:/m.gguf" }),
      (e: unknown) => e instanceof RbeeError && e.code === "WORKER_NOT_FOUND" && /not its socket/.test(e.message),
    );
    assert.deepEqual(await registry.listWorkers(), [], "a worker at a foreign address was registered");
    assert.throws(
      () => hive.workerClient(worker("w-0000aaaa")),
      (e: unknown) => e instanceof RbeeError && e.code === "WORKER_NOT_FOUND",
    );
    // Its own socket is accepted.
    assert.ok(hive.workerClient({ ...worker("w-0000cccc"), url: `unix:${dir}/workers/w-0000cccc.sock` }));
    await assert.rejects(
      hive.models(),
      (e: unknown) => e instanceof RbeeError && e.code === "INVALID_REPLY" && /model_ref/.test(e.message),
    );
    assert.deepEqual(squatter.requests, [], "something reached the address the fake hive named");
  } finally {
    registry.close();
    await transport.close();
    server.close();
    await squatter.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
