// Security regressions for the hive's HTTP server (docs/security.md): slow or idle clients cannot
// hold its descriptors (finding 5), a malformed %-escape is a 400 without a stack trace (Low).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect, type Socket } from "node:net";
import { startHive, type TestHive } from "../helpers/hive";

/** Resolves with true once the server closes the socket, false if it is still open at the deadline. */
function closedWithin(sock: Socket, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (sock.destroyed || sock.readableEnded) return resolve(true);
    const t = setTimeout(() => resolve(false), ms);
    const done = () => (clearTimeout(t), resolve(true));
    sock.once("end", done);
    sock.once("close", done);
    sock.resume();
  });
}

function open(hive: TestHive): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ path: hive.socketPath }, () => resolve(s));
    s.once("error", reject);
  });
}

describe("finding 5: slow clients", () => {
  let hive: TestHive;
  before(async () => {
    hive = await startHive(["--request-timeout-ms", "1500", "--max-connections", "8"]);
  });
  after(() => hive.stop());

  test("slow-client-headers: a client that never finishes its request is cut off", async () => {
    const sock = await open(hive);
    sock.write("GET /v1/health HTTP/1.1\r\nhost: x\r\n"); // and never the blank line
    assert.ok(await closedWithin(sock, 15_000), "the half-sent request kept its connection open");
  });

  test("slow-client-body: a body trickled byte by byte is cut off at the request timeout", async () => {
    const sock = await open(hive);
    sock.write(
      `POST /v1/workers/spawn HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${hive.token}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{`,
    );
    const trickle = setInterval(() => sock.writable && sock.write(" "), 200);
    try {
      assert.ok(await closedWithin(sock, 15_000), "the trickling client kept its connection open");
    } finally {
      clearInterval(trickle);
    }
  });

  test("slow-client-401: a refused request does not keep its socket", async () => {
    const sock = await open(hive);
    sock.write("GET /v1/workers HTTP/1.1\r\nhost: x\r\nauthorization: Bearer wrong-token-0123456789\r\n\r\n");
    let head = "";
    sock.on("data", (d) => (head += d));
    assert.ok(await closedWithin(sock, 5000), "the 401 left the connection open for more tries");
    assert.match(head, /^HTTP\/1\.1 401/);
    assert.match(head, /connection: close/i);
  });

  test("slow-client-max-connections: connections beyond --max-connections are closed at once", async () => {
    const held: Socket[] = [];
    try {
      for (let i = 0; i < 8; i++) held.push(await open(hive));
      const extra = await open(hive);
      assert.ok(await closedWithin(extra, 5000), "a ninth connection was accepted");
      // The hive still serves once they go.
      for (const s of held) s.destroy();
      const deadline = Date.now() + 10_000;
      let ok = false;
      while (!ok && Date.now() < deadline)
        ok = await hive.client.health().then(
          () => true,
          () => false,
        );
      assert.ok(ok);
    } finally {
      for (const s of held) s.destroy();
    }
  });

  test("bad-percent-escape: a malformed %-escape gets a 400 INVALID_REQUEST, no stack trace", async () => {
    const sock = await open(hive);
    let text = "";
    sock.on("data", (d) => (text += d));
    sock.write(
      `GET /v1/workers/%E0%A4%A HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${hive.token}\r\nconnection: close\r\n\r\n`,
    );
    assert.ok(await closedWithin(sock, 5000));
    assert.match(text, /^HTTP\/1\.1 400/);
    assert.match(text, /"code":"INVALID_REQUEST"/);
    assert.doesNotMatch(text + hive.log(), /URIError|at decodeURIComponent/);
  });
});
