// Security regressions over SSH against a real sshd on 127.0.0.2 (docs/security.md): host key type
// downgrade (finding 6), and the keeper reaching a node's hive socket through stream-local
// forwarding while refusing any TCP address for it (finding 1).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { request } from "undici";
import { SshPool, type SshConnectOptions } from "../../extension/src/nodes/connection";
import { loadSshConfig } from "../../extension/src/nodes/ssh-config";
import { NodeError } from "../../extension/src/nodes/errors";
import { sshTransport } from "../../extension/src/nodes/ssh-transport";
import { RbeeError } from "../../hive-agent/src/protocol";
import { readPublicKey, startSshdCluster, type SshdCluster } from "../helpers/sshd";

let cluster: SshdCluster;
let n = 0;
before(async () => {
  cluster = await startSshdCluster({ nodes: [{ address: "127.0.0.2" }] });
});
after(async () => {
  await cluster?.stop();
});

function pool(lines: string[], opts: SshConnectOptions = {}): SshPool {
  const node = cluster.nodes[0];
  const file = path.join(cluster.dir, `ssh_config_sec_${++n}`);
  writeFileSync(
    file,
    [
      `Host n1`,
      `  HostName ${node.address}`,
      `  Port ${node.port}`,
      "  User root",
      "  IdentitiesOnly yes",
      `  IdentityFile ${cluster.clientKeyPath}`,
      ...lines.map((l) => "  " + l),
      "",
    ].join("\n"),
  );
  const index = loadSshConfig({ configPath: file, homeDir: cluster.dir });
  return new SshPool((alias) => index.node(alias), { agentSocket: undefined, ...opts });
}

describe("finding 6: host key type downgrade", () => {
  test("host-key-type-downgrade: a host known by another key type is refused by --accept-new-host-key, accept-new and no", async () => {
    const node = cluster.nodes[0];
    // known_hosts knows this host by an ECDSA key; the "node" (someone in the middle) offers only ed25519.
    const ecdsa = path.join(cluster.dir, "other_ecdsa_host_key");
    execFileSync("ssh-keygen", ["-q", "-t", "ecdsa", "-N", "", "-f", ecdsa], { stdio: "ignore" });
    const kh = path.join(cluster.dir, "known_hosts_ecdsa_only");
    const line = `[${node.address}]:${node.port} ${readPublicKey(ecdsa + ".pub").line}\n`;
    for (const [extra, opts] of [
      [[`UserKnownHostsFile ${kh}`], { acceptNewHostKey: true }],
      [[`UserKnownHostsFile ${kh}`, "StrictHostKeyChecking accept-new"], {}],
      [[`UserKnownHostsFile ${kh}`, "StrictHostKeyChecking no"], {}],
    ] as [string[], SshConnectOptions][]) {
      writeFileSync(kh, line);
      const p = pool(extra, opts);
      try {
        await assert.rejects(
          p.get("n1").exec("true"),
          (e: unknown) =>
            e instanceof NodeError && e.code === "SSH_HOST_KEY_CHANGED" && /ecdsa-sha2-nistp256/.test(e.message),
        );
        assert.equal(readFileSync(kh, "utf8"), line, "the downgraded key was written to known_hosts");
      } finally {
        p.close();
      }
    }
  });
});

describe("finding 1: hive sockets over SSH", () => {
  test("ssh-stream-local: the keeper reaches a Unix socket on the node over SSH, and no TCP address", async () => {
    const dir = path.join(cluster.dir, "hive-home");
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o700);
    const socketPath = path.join(dir, "hive.sock");
    const server = http.createServer((req, res) => res.end(`hello ${req.url}`));
    await new Promise<void>((r) => server.listen(socketPath, r));
    const p = pool([`UserKnownHostsFile ${cluster.knownHostsPath}`]);
    const transport = sshTransport(p.get("n1"));
    try {
      const ep = transport.endpoint(`unix:${socketPath}`, "key");
      const res = await request(`${ep.origin}/v1/health`, { dispatcher: ep.dispatcher });
      assert.equal(await res.body.text(), "hello /v1/health");
      assert.throws(
        () => transport.endpoint("http://127.0.0.1:8080", "key"),
        (e: unknown) => e instanceof RbeeError && /Unix sockets only/.test(e.message),
      );
    } finally {
      await transport.close();
      p.close();
      server.close();
    }
  });
});
