// SSH connections against real sshd nodes on 127.0.0.2 and 127.0.0.3: exec, shared connection,
// host key policy, authentication (files, passphrases, agent), ProxyJump, the error taxonomy,
// and the keeper transport over forwardOut channels, including a connection killed mid-stream.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import dgram from "node:dgram";
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { Resolver } from "node:dns/promises";
import { request } from "undici";
import { SshPool, type SshConnectOptions } from "../../extension/src/nodes/connection";
import { loadSshConfig } from "../../extension/src/nodes/ssh-config";
import { checkHostKey, fingerprintSha256 } from "../../extension/src/nodes/known-hosts";
import { NodeError } from "../../extension/src/nodes/errors";
import { sshTransport } from "../../extension/src/nodes/ssh-transport";
import { readPublicKey, startSshdCluster, writeKnownHosts, type SshdCluster } from "../helpers/sshd";
import { waitUntil } from "../helpers/wait";

let cluster: SshdCluster;
let configCounter = 0;

before(async () => {
  cluster = await startSshdCluster({ nodes: [{ address: "127.0.0.2" }, { address: "127.0.0.3" }] });
});
after(async () => {
  await cluster?.stop();
});

/** A pool over an ssh config written for this test (extra text is appended). */
function poolFor(configText: string, opts: SshConnectOptions = {}): SshPool {
  const file = path.join(cluster.dir, `ssh_config_${++configCounter}`);
  writeFileSync(file, configText);
  const index = loadSshConfig({ configPath: file, homeDir: cluster.dir });
  return new SshPool((alias) => index.node(alias), { agentSocket: undefined, ...opts });
}

function clusterPool(opts: SshConnectOptions = {}): SshPool {
  return poolFor(readFileSync(cluster.sshConfigPath, "utf8"), opts);
}

function hostBlock(alias: string, n: { address: string; port: number }, extra: string[] = []): string {
  return [
    `Host ${alias}`,
    `  HostName ${n.address}`,
    `  Port ${n.port}`,
    "  User root",
    "  IdentitiesOnly yes",
    ...extra.map((l) => "  " + l),
    "",
  ].join("\n");
}

function acceptedLogins(alias: string): number {
  return (
    cluster
      .node(alias)
      .log()
      .match(/Accepted publickey/g) ?? []
  ).length;
}

async function rejectsWith(p: Promise<unknown>, code: string, message?: RegExp): Promise<NodeError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof NodeError, `expected a NodeError, got ${err}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

describe("connect and exec", () => {
  test("both nodes run commands in their own HOME; stdout, stderr, exit code and stdin come back", async () => {
    const pool = clusterPool();
    try {
      for (const node of cluster.nodes) {
        const conn = pool.get(node.alias);
        const r = await conn.exec('printf %s "$HOME"; echo err >&2; exit 3');
        assert.deepEqual(r, { code: 3, signal: undefined, stdout: node.home, stderr: "err\n" });
        const echo = await conn.exec("cat", { stdin: "through stdin" });
        assert.equal(echo.stdout, "through stdin");
      }
      await rejectsWith(
        pool.get("node1").execChecked("echo boom >&2; exit 7", "the boom step"),
        "REMOTE_COMMAND_FAILED",
        /the boom step on node1 failed \(exit 7\): boom/,
      );
    } finally {
      pool.close();
    }
  });

  test("one shared connection per node: concurrent commands log in once", async () => {
    const pool = clusterPool();
    const before = acceptedLogins("node2");
    try {
      const conn = pool.get("node2");
      assert.equal(pool.get("node2"), conn);
      const results = await Promise.all([1, 2, 3, 4, 5].map((i) => conn.exec(`echo ${i}`)));
      assert.deepEqual(
        results.map((r) => r.stdout.trim()),
        ["1", "2", "3", "4", "5"],
      );
      assert.equal(acceptedLogins("node2") - before, 1);
    } finally {
      pool.close();
    }
  });
});

describe("host keys", () => {
  test("an unknown host key is refused by default, with its fingerprint, and nothing is recorded", async () => {
    const kh = path.join(cluster.dir, "empty_known_hosts_1");
    const node = cluster.node("node1");
    const pool = poolFor(hostBlock("n1", node, [`IdentityFile ${cluster.clientKeyPath}`, `UserKnownHostsFile ${kh}`]));
    const logStart = node.log().length;
    try {
      const err = await rejectsWith(pool.get("n1").exec("true"), "SSH_HOST_KEY_UNKNOWN", /accept-new-host-key/);
      assert.ok(err.message.includes(fingerprintSha256(node.hostKeyBlob)), err.message);
      assert.equal(existsSync(kh), false, "a refused key is not recorded");
      // No credential before the host key is verified: sshd saw the connection end before any
      // authentication (it names the user only once one is attempted; VERBOSE logs each key offered).
      const ended = /Connection (closed|reset) by|Disconnected from|publickey|Accepted/;
      const seen = await waitUntil(() => ended.test(node.log().slice(logStart)) && node.log().slice(logStart), {
        timeout: 10_000,
        what: "sshd to log the end of the refused connection",
      });
      assert.doesNotMatch(
        seen,
        /publickey|authenticating user|invalid user|Accepted/i,
        `a credential reached the node:\n${seen}`,
      );
    } finally {
      pool.close();
    }
  });

  test("the callback sees the fingerprint; declining refuses, accepting records the key", async () => {
    const kh = path.join(cluster.dir, "empty_known_hosts_2");
    const node = cluster.node("node2");
    const asked: string[] = [];
    let answer = false;
    const pool = poolFor(hostBlock("n2", node, [`IdentityFile ${cluster.clientKeyPath}`, `UserKnownHostsFile ${kh}`]), {
      onUnknownHostKey: async (q) => {
        asked.push(`${q.host}:${q.port} ${q.keyType} ${q.fingerprint} -> ${q.knownHostsFile}`);
        return answer;
      },
    });
    try {
      await rejectsWith(pool.get("n2").exec("true"), "SSH_HOST_KEY_UNKNOWN");
      answer = true;
      assert.equal((await pool.get("n2").exec("echo ok")).stdout, "ok\n");
      const expected = `${node.address}:${node.port} ssh-ed25519 ${fingerprintSha256(node.hostKeyBlob)} -> ${kh}`;
      assert.deepEqual(asked, [expected, expected]);
      assert.equal(checkHostKey([kh], node.address, node.port, node.hostKeyBlob).status, "match");
    } finally {
      pool.close();
    }
  });

  test("acceptNewHostKey records the key (hashed when HashKnownHosts yes) and the next connect needs no flag", async () => {
    const kh = path.join(cluster.dir, "empty_known_hosts_3");
    const node = cluster.node("node1");
    const text = hostBlock("n1", node, [
      `IdentityFile ${cluster.clientKeyPath}`,
      `UserKnownHostsFile ${kh}`,
      "HashKnownHosts yes",
    ]);
    const first = poolFor(text, { acceptNewHostKey: true });
    try {
      await first.get("n1").exec("true");
    } finally {
      first.close();
    }
    const recorded = readFileSync(kh, "utf8");
    assert.match(recorded, /^\|1\|/, "hashed entry");
    assert.ok(!recorded.includes(node.address));
    const second = poolFor(text); // no flag, no callback
    try {
      assert.equal((await second.get("n1").exec("echo again")).stdout, "again\n");
    } finally {
      second.close();
    }
  });

  test("a changed host key is refused with the new and the recorded fingerprints, even with acceptNewHostKey", async () => {
    const node = cluster.node("node2");
    const kh = path.join(cluster.dir, "known_hosts_before_rotation");
    writeFileSync(kh, `[${node.address}]:${node.port} ${node.hostPublicKey}\n`);
    const oldFingerprint = fingerprintSha256(node.hostKeyBlob);
    await node.rotateHostKey(); // the host was "reinstalled" (or someone is in the middle)
    writeKnownHosts(cluster);
    const pool = poolFor(hostBlock("n2", node, [`IdentityFile ${cluster.clientKeyPath}`, `UserKnownHostsFile ${kh}`]), {
      acceptNewHostKey: true,
    });
    try {
      const err = await rejectsWith(pool.get("n2").exec("true"), "SSH_HOST_KEY_CHANGED", /HOST KEY CHANGED/);
      assert.ok(err.message.includes(fingerprintSha256(node.hostKeyBlob)), "new fingerprint shown");
      assert.ok(err.message.includes(oldFingerprint), "recorded fingerprint shown");
      assert.match(err.message, /ssh-keygen -R/);
      assert.equal(readFileSync(kh, "utf8").trim().split("\n").length, 1, "the changed key was not recorded");
    } finally {
      pool.close();
    }
  });
});

describe("authentication", () => {
  test("a key the node does not accept gives SSH_AUTH_FAILED naming the key, without retries", async () => {
    const node = cluster.node("node1");
    const pool = poolFor(
      hostBlock("n1", node, [
        `IdentityFile ${cluster.strangerKeyPath}`,
        `UserKnownHostsFile ${cluster.knownHostsPath}`,
      ]),
    );
    try {
      const started = Date.now();
      const err = await rejectsWith(pool.get("n1").exec("true"), "SSH_AUTH_FAILED", /ssh-copy-id n1/);
      assert.ok(err.message.includes(cluster.strangerKeyPath), err.message);
      assert.ok(Date.now() - started < 2000, "auth failures are not retried");
    } finally {
      pool.close();
    }
  });

  test("an encrypted identity file is unlocked through the passphrase callback (a wrong answer is asked again)", async () => {
    const keyPath = path.join(cluster.dir, "encrypted_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "correct horse", "-f", keyPath], { stdio: "ignore" });
    cluster.authorize(readPublicKey(keyPath + ".pub").line);
    const node = cluster.node("node2");
    const text = hostBlock("n2", node, [`IdentityFile ${keyPath}`, `UserKnownHostsFile ${cluster.knownHostsPath}`]);

    const noPrompt = poolFor(text);
    try {
      await rejectsWith(noPrompt.get("n2").exec("true"), "SSH_AUTH_FAILED", /encrypted .*ssh-add/);
    } finally {
      noPrompt.close();
    }

    const attempts: number[] = [];
    const pool = poolFor(text, {
      askPassphrase: async (req) => {
        assert.equal(req.keyPath, keyPath);
        attempts.push(req.attempt);
        return req.attempt === 1 ? "wrong" : "correct horse";
      },
    });
    try {
      assert.equal((await pool.get("n2").exec("echo unlocked")).stdout, "unlocked\n");
      assert.deepEqual(attempts, [1, 2]);
    } finally {
      pool.close();
    }
  });

  test("keys held by ssh-agent (SSH_AUTH_SOCK) are used", async (t) => {
    const sock = path.join(cluster.dir, "agent.sock");
    const agent = spawn("ssh-agent", ["-D", "-a", sock], { stdio: "ignore" });
    t.after(() => {
      agent.kill();
    });
    for (let i = 0; i < 50 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 20));
    const agentKey = path.join(cluster.dir, "agent_only_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", agentKey], { stdio: "ignore" });
    cluster.authorize(readPublicKey(agentKey + ".pub").line);
    execFileSync("ssh-add", ["-q", agentKey], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: "ignore" });
    const node = cluster.node("node1");
    // No usable identity file: only the agent can authenticate.
    const text = [
      `Host n1`,
      `  HostName ${node.address}`,
      `  Port ${node.port}`,
      "  User root",
      `  IdentityFile ${path.join(cluster.dir, "absent_key")}`,
      `  UserKnownHostsFile ${cluster.knownHostsPath}`,
      "",
    ].join("\n");
    const withAgent = poolFor(text, { agentSocket: sock });
    try {
      assert.equal((await withAgent.get("n1").exec("echo via agent")).stdout, "via agent\n");
    } finally {
      withAgent.close();
    }
    const withoutAgent = poolFor(text + "  IdentityAgent none\n");
    try {
      await rejectsWith(withoutAgent.get("n1").exec("true"), "SSH_AUTH_FAILED", /absent_key: no such file/);
    } finally {
      withoutAgent.close();
    }
  });
});

describe("connection errors", () => {
  test("a refused port gives SSH_CONNECTION_REFUSED after 3 tries with 0/200/400 ms backoff", async () => {
    const port = await freePort("127.0.0.4");
    const pool = poolFor(hostBlock("dead", { address: "127.0.0.4", port }, [`IdentityFile ${cluster.clientKeyPath}`]));
    const started = Date.now();
    await rejectsWith(pool.get("dead").exec("true"), "SSH_CONNECTION_REFUSED", /no SSH server listens/);
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 600 && elapsed < 3000, `3 attempts take about 600 ms, took ${elapsed}`);
  });

  test("a server that never speaks SSH gives SSH_TIMEOUT after the connect timeout", async (t) => {
    const silent = net.createServer(() => {}); // accepts, says nothing
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    t.after(() => {
      silent.close();
    });
    const port = (silent.address() as net.AddressInfo).port;
    const pool = poolFor(hostBlock("mute", { address: "127.0.0.1", port }, [`IdentityFile ${cluster.clientKeyPath}`]), {
      connectTimeoutMs: 300,
      retryDelaysMs: [0],
    });
    const started = Date.now();
    await rejectsWith(pool.get("mute").exec("true"), "SSH_TIMEOUT", /timed out after 0.3 s/);
    assert.ok(Date.now() - started >= 290);
    pool.close();
  });

  test("a host name that does not resolve gives SSH_DNS_FAILED (resolved by a DNS server on loopback)", async (t) => {
    const dns = await nxdomainServer();
    t.after(() => dns.close());
    const resolver = new Resolver();
    resolver.setServers([`127.0.0.1:${dns.port}`]);
    const pool = poolFor(
      hostBlock("ghost", { address: "no-such-node.rbee.test", port: 22 }, [`IdentityFile ${cluster.clientKeyPath}`]),
      {
        resolveHost: async (h) => (await resolver.resolve4(h))[0],
      },
    );
    await rejectsWith(
      pool.get("ghost").exec("true"),
      "SSH_DNS_FAILED",
      /cannot resolve host name "no-such-node.rbee.test"/,
    );
    assert.ok(dns.queries() >= 1, "the loopback DNS server was asked");
  });
});

describe("ProxyJump", () => {
  test("reaches node2 through node1; losing the jump connection fails, the next call reconnects", async () => {
    const n1 = cluster.node("node1");
    const n2 = cluster.node("node2");
    const common = [`IdentityFile ${cluster.clientKeyPath}`, `UserKnownHostsFile ${cluster.knownHostsPath}`];
    const pool = poolFor(hostBlock("bastion", n1, common) + hostBlock("inner", n2, [...common, "ProxyJump bastion"]));
    try {
      const before1 = acceptedLogins("node1");
      const before2 = acceptedLogins("node2");
      const r = await pool.get("inner").exec('printf %s "$HOME"');
      assert.equal(r.stdout, n2.home, "the command ran on node2");
      assert.equal(acceptedLogins("node1") - before1, 1, "one login on the jump host");
      assert.equal(acceptedLogins("node2") - before2, 1);

      n1.killSessions(); // the jump host drops every connection
      await waitUntil(() => !pool.get("inner").isConnected, { timeout: 5000, what: "the inner connection to drop" });
      const again = await pool.get("inner").exec("echo back");
      assert.equal(again.stdout, "back\n");
      assert.equal(acceptedLogins("node1") - before1, 2, "the jump connection was reopened");
    } finally {
      pool.close();
    }
  });
});

describe("transport over forwardOut", () => {
  let server: http.Server;
  let port = 0;
  before(async () => {
    server = http.createServer((req, res) => {
      if (req.url === "/hello") {
        res.end(`hello ${req.headers.authorization ?? ""}`);
        return;
      }
      // /stream: one line every 50 ms for up to 10 s, like an SSE token stream.
      res.writeHead(200, { "content-type": "text/event-stream" });
      let i = 0;
      const timer = setInterval(() => {
        res.write(`data: ${i++}\n\n`);
        if (i > 200) {
          clearInterval(timer);
          res.end();
        }
      }, 50);
      res.on("close", () => clearInterval(timer));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    port = (server.address() as net.AddressInfo).port;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  test("an HTTP request reaches 127.0.0.1 on the node through the SSH connection", async () => {
    const pool = clusterPool();
    const transport = sshTransport(pool.get("node1"));
    try {
      const res = await request(`http://127.0.0.1:${port}/hello`, {
        dispatcher: transport.dispatcher,
        headers: { authorization: "Bearer t" },
      });
      assert.equal(res.statusCode, 200);
      assert.equal(await res.body.text(), "hello Bearer t");
      assert.equal(transport.description, "ssh node1");
      assert.ok(pool.get("node1").isConnected, "the request opened the node's SSH connection");
    } finally {
      await transport.close();
      pool.close();
    }
  });

  test("killing the SSH connection mid-stream fails the stream with SSH_CONNECTION_LOST; the next request reconnects", async () => {
    const pool = clusterPool();
    const conn = pool.get("node2");
    const transport = sshTransport(conn);
    try {
      const res = await request(`http://127.0.0.1:${port}/stream`, { dispatcher: transport.dispatcher });
      const chunks: string[] = [];
      const failure = (async () => {
        for await (const chunk of res.body) {
          chunks.push(String(chunk));
          if (chunks.length === 3) cluster.node("node2").killSessions();
        }
      })();
      const err = await failure.then(
        () => assert.fail("the stream ended cleanly although its connection was killed"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof NodeError, `stream error is ${err}`);
      assert.equal(err.code, "SSH_CONNECTION_LOST");
      assert.match(err.message, /node2 .*was lost; the next request reconnects/);
      assert.ok(chunks.length >= 3 && chunks.length < 100, `stream cut early (${chunks.length} chunks)`);

      const res2 = await request(`http://127.0.0.1:${port}/hello`, { dispatcher: transport.dispatcher });
      assert.equal(await res2.body.text(), "hello ");
      assert.ok(conn.isConnected);
    } finally {
      await transport.close();
      pool.close();
    }
  });

  test("a port with nothing listening on the node is SSH_CHANNEL_FAILED, and the connection stays usable", async () => {
    const pool = clusterPool();
    const conn = pool.get("node1");
    try {
      const dead = await freePort("127.0.0.1");
      await rejectsWith(conn.forwardOut("127.0.0.1", dead), "SSH_CHANNEL_FAILED", /nothing answered/);
      assert.equal((await conn.exec("echo still")).stdout, "still\n");
    } finally {
      pool.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------

async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, address, () => {
      const p = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(p));
    });
  });
}

/** A DNS server on 127.0.0.1 that answers NXDOMAIN to every query. */
async function nxdomainServer(): Promise<{ port: number; queries: () => number; close: () => void }> {
  const sock = dgram.createSocket("udp4");
  let count = 0;
  sock.on("message", (msg, rinfo) => {
    count++;
    // Header + the question only: QR=1 with RD copied, RA=1, RCODE=3 (NXDOMAIN), no records.
    let end = 12;
    while (end < msg.length && msg[end] !== 0) end += msg[end] + 1;
    const reply = Buffer.from(msg.subarray(0, end + 5));
    reply[2] = 0x80 | (msg[2] & 0x01);
    reply[3] = 0x83;
    reply.writeUInt16BE(1, 4);
    reply.fill(0, 6, 12);
    sock.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", r));
  return { port: sock.address().port, queries: () => count, close: () => sock.close() };
}
