// One error base for rbee's three families (hive-agent/src/util/coded-error.ts): whether each code may be retried,
// and the helpers that read codes and retriability off any error, rbee's own or Node's, undici's and
// the ones they wrap. Real failures only: a refused TCP connect, a fetch that fails, a missing file, a
// Unix-socket hive that drops connections.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { request } from "undici";
import { CodedError, errorCode, isRetriable } from "../../hive-agent/src/util/coded-error";
import { retry } from "../../hive-agent/src/util/retry";
import { ERROR_CODES, ERROR_RETRIABLE, RbeeError } from "../../hive-agent/src/protocol";
import { NODE_ERROR_CODES, NODE_ERROR_RETRIABLE, NodeError } from "../../extension/src/nodes/errors";
import { REGISTRY_ERROR_RETRIABLE, RegistryError } from "../../extension/src/keeper/registry-types";
import { StreamInterruptedError } from "../../extension/src/keeper/keeper";
import { HiveClient } from "../../extension/src/keeper/hive-client";
import { loopbackTransport } from "../../extension/src/keeper/transport";

test("each family decides retriable in its table: what a moment may fix is retriable, what repeats is not", () => {
  assert.deepEqual(Object.keys(ERROR_RETRIABLE).sort(), [...ERROR_CODES].sort(), "every protocol code has an entry");
  assert.deepEqual(
    Object.keys(NODE_ERROR_RETRIABLE).sort(),
    [...NODE_ERROR_CODES].sort(),
    "every node code has an entry",
  );
  const retriableOf = (make: (code: string) => CodedError) => (codes: readonly string[]) =>
    codes.filter((c) => make(c).retriable).sort();
  assert.deepEqual(retriableOf((c) => new RbeeError(c as any, "x"))(ERROR_CODES), [
    "ALL_SLOTS_BUSY",
    "CONNECTION_TIMEOUT",
    "DOWNLOAD_FAILED",
    "NODE_UNREACHABLE",
    "SHUTTING_DOWN",
    "WORKER_NOT_READY",
  ]);
  assert.deepEqual(retriableOf((c) => new NodeError(c as any, "x"))(NODE_ERROR_CODES), [
    "SSH_CHANNEL_FAILED",
    "SSH_CONNECTION_LOST",
    "SSH_CONNECTION_REFUSED",
    "SSH_FAILED",
    "SSH_TIMEOUT",
  ]);
  assert.deepEqual(retriableOf((c) => new RegistryError(c as any, "x"))(Object.keys(REGISTRY_ERROR_RETRIABLE)), [
    "REGISTRY_LOCK_TIMEOUT",
  ]);
  // A broken stream is reported, never replayed: what was generated is already in a file.
  assert.equal(new StreamInterruptedError("broke", "partial", undefined, 3, 10).retriable, false);
  // All of them are CodedErrors with the same shape; codes, messages, details and causes are kept as given.
  const cause = new Error("socket hang up");
  const e = new NodeError("SSH_CONNECTION_LOST", "lost gpu1", { alias: "gpu1" }, { cause });
  assert.ok(e instanceof CodedError && e instanceof Error);
  assert.equal(e.name, "NodeError");
  assert.deepEqual(
    [e.code, e.message, e.details, e.cause],
    ["SSH_CONNECTION_LOST", "lost gpu1", { alias: "gpu1" }, cause],
  );
  assert.equal(new RegistryError("REGISTRY_IO", "disk").name, "RegistryError");
  assert.ok(
    !Object.keys(new RbeeError("INTERNAL", "x")).includes("retriable"),
    "not an own property: envelopes and comparisons see no new field",
  );
  assert.deepEqual(new RbeeError("NOT_FOUND", "gone").toEnvelope(), { error: { code: "NOT_FOUND", message: "gone" } });
});

test("errorCode and isRetriable read Node's system errors and undici's, and their causes", async () => {
  // A port nothing listens on: take one, then close it.
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise((r) => probe.close(r));

  const refused = await new Promise<Error>((resolve) => net.connect(port, "127.0.0.1").once("error", resolve));
  assert.equal(errorCode(refused), "ECONNREFUSED");
  assert.equal(isRetriable(refused), true);

  const viaUndici = await request(`http://127.0.0.1:${port}/`).then(
    () => assert.fail("connected"),
    (e: unknown) => e,
  );
  assert.equal(errorCode(viaUndici), "ECONNREFUSED");
  assert.equal(isRetriable(viaUndici), true);

  // fetch wraps it: a TypeError("fetch failed") with no code of its own, the refusal as its cause.
  const viaFetch = await fetch(`http://127.0.0.1:${port}/`).then(
    () => assert.fail("connected"),
    (e: unknown) => e,
  );
  assert.equal((viaFetch as { code?: unknown }).code, undefined);
  assert.equal(errorCode(viaFetch), "ECONNREFUSED");
  assert.equal(isRetriable(viaFetch), true);

  const missing = await readFile(path.join(os.tmpdir(), "rbee-no-such-file-" + process.pid)).then(
    () => assert.fail("read"),
    (e: unknown) => e,
  );
  assert.equal(errorCode(missing), "ENOENT");
  assert.equal(isRetriable(missing), false, "a missing file stays missing");

  assert.equal(errorCode(new Error("no code")), undefined);
  assert.equal(isRetriable(new Error("no code")), false);
  assert.equal(isRetriable("a string"), false);
  // A CodedError's own verdict wins over its cause's, and a plain error around a CodedError takes the CodedError's.
  assert.equal(isRetriable(new NodeError("SSH_AUTH_FAILED", "refused", undefined, { cause: refused })), false);
  assert.equal(isRetriable(new Error("request failed", { cause: new NodeError("SSH_CONNECTION_LOST", "lost") })), true);
  assert.equal(
    errorCode(new Error("request failed", { cause: new NodeError("SSH_AUTH_FAILED", "refused") })),
    "SSH_AUTH_FAILED",
  );
});

test("retry's default policy is the error's own: retriable failures are tried again, others thrown at once", async () => {
  let tries = 0;
  await assert.rejects(
    retry(
      async () => {
        tries++;
        throw new RbeeError("INVALID_API_KEY", "wrong key");
      },
      { delaysMs: [1, 1] },
    ),
    /wrong key/,
  );
  assert.equal(tries, 1);
  tries = 0;
  const r = await retry(
    async () => {
      if (++tries < 3) throw new RbeeError("NODE_UNREACHABLE", "not yet");
      return "up";
    },
    { delaysMs: [1, 1] },
  );
  assert.deepEqual([r, tries], ["up", 3]);
});

test("the hive client retries a hive whose socket drops connections, through the real loopback transport", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "rbee-retry-"));
  const socket = path.join(dir, "hive.sock");
  let connections = 0;
  let dropFirst = 2;
  const server = http.createServer((req, res) => {
    if (req.url === "/v1/health") {
      res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ status: "alive", version: "0.1.0", api_version: "v1" }));
    } else
      res
        .writeHead(401, { "content-type": "application/json" })
        .end(JSON.stringify({ error: { code: "INVALID_API_KEY", message: "no" } }));
  });
  // The first connections are cut before any byte is answered: what a hive restarting or an SSH channel dropping looks like.
  server.on("connection", (s) => {
    connections++;
    if (dropFirst > 0) {
      dropFirst--;
      s.destroy();
    }
  });
  await new Promise<void>((r) => server.listen(socket, r));
  const transport = loopbackTransport({ keepAliveTimeoutMs: 1 });
  t.after(async () => {
    await transport.close();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });
  const client = new HiveClient({
    transport,
    baseUrl: `unix:${socket}`,
    token: "t",
    nodeName: "test-hive",
    retry: { attempts: 3, baseMs: 1 },
  });

  // Two dropped connections, then an answer: the third try succeeds.
  assert.equal((await client.health()).status, "alive");
  assert.equal(connections, 3);

  // An HTTP error answer is the hive's verdict, not a broken connection: one try, its own code.
  connections = 0;
  await assert.rejects(client.workers(), (e) => e instanceof RbeeError && e.code === "INVALID_API_KEY");
  assert.equal(connections <= 1, true, `${connections} connections for one refused call`);

  // Dropped every time: after the policy's 3 tries, NODE_UNREACHABLE naming them. (A fresh transport, so no
  // connection kept alive from above answers.)
  connections = 0;
  dropFirst = Infinity;
  const fresh = loopbackTransport();
  t.after(() => fresh.close());
  const client2 = new HiveClient({
    transport: fresh,
    baseUrl: `unix:${socket}`,
    token: "t",
    nodeName: "test-hive",
    retry: { attempts: 3, baseMs: 1 },
  });
  await assert.rejects(
    client2.health(),
    (e) => e instanceof RbeeError && e.code === "NODE_UNREACHABLE" && /after 3 attempts/.test(e.message) && e.retriable,
  );
  assert.equal(connections, 3);
});
