// The extension's SSH nodes against a real sshd on loopback (test/helpers/sshd.ts): the ssh
// config's host in the node list, a probe that never prompts (an unknown host key fails it with
// a hint), deploy through the connection that asks (the host key question answered by the test),
// the node token kept in the token cache, a generation through the keeper's router, the worker in
// the probe and gone after a stop, the hive log fetched into a file.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ensureModel } from "../fixtures/models";
import { AGENT_BUNDLE, REPO_ROOT } from "../helpers/hive";
import { startSshdCluster, writeKnownHosts, type SshdCluster } from "../helpers/sshd";
import { RbeeServices, type Logger } from "../../extension/src/ui-core/services";
import type { TokenCache } from "../../extension/src/ui-core/nodes/ssh-node";
import type { UnknownHostKey } from "../../extension/src/nodes/connection";

describe("SSH nodes in the extension", () => {
  let cluster: SshdCluster;
  let services: RbeeServices;
  const tokens = new Map<string, string>();
  const tokenCache: TokenCache = { get: async (n) => tokens.get(n), set: async (n, t) => void tokens.set(n, t) };
  const asked: UnknownHostKey[] = [];
  const lines: string[] = [];
  const log: Logger = {
    trace: (m) => lines.push(m),
    info: (m) => lines.push(m),
    warn: (m) => lines.push(m),
    error: (m) => lines.push(m),
  };
  const hiveHome = () => path.join(cluster.node("node1").home, ".rbee", "hive");

  before(async () => {
    cluster = await startSshdCluster({ nodes: [{ address: "127.0.0.2" }] });
    writeFileSync(cluster.knownHostsPath, ""); // the host key is not known yet
    services = new RbeeServices({
      storageDir: path.join(cluster.dir, "storage"),
      bundleDir: path.join(REPO_ROOT, "dist"),
      extensionDir: REPO_ROOT,
      log,
      ssh: {
        configPath: () => cluster.sshConfigPath,
        tokens: tokenCache,
        prompts: {
          onUnknownHostKey: async (k) => {
            asked.push(k);
            return true;
          },
        },
        deploy: {
          agentScript: AGENT_BUNDLE,
          runtimeInstall: "copy",
          localNodeModules: path.join(REPO_ROOT, "node_modules"),
        },
      },
    });
  });

  after(async () => {
    await services?.dispose();
    await cluster?.stop();
  });

  test("the node list holds localhost, then the ssh config's host", async () => {
    const { nodes, errors } = await services.nodeList.list();
    assert.deepEqual(
      nodes.map((n) => [n.name, n.transport]),
      [
        ["localhost", "loopback"],
        ["node1", "ssh"],
      ],
    );
    assert.equal(nodes[1].host, "127.0.0.2");
    assert.deepEqual(errors, []);
  });

  test("a probe never asks about an unknown host key: the node shows unreachable with a hint", async () => {
    const snapshot = await (await services.controller("node1")).probe();
    assert.equal(snapshot.status, "unreachable");
    assert.match(snapshot.reason!, /Deploy \(▶\) asks whether to trust it/);
    assert.equal(asked.length, 0);
  });

  test("deploy asks once about the host key, installs and starts the hive; the probe shows it running", async () => {
    const controller = await services.controller("node1");
    const progress: string[] = [];
    await controller.deploy(
      () => {},
      (l) => progress.push(l),
    );
    assert.equal(asked.length, 1);
    assert.equal(asked[0].alias, "node1");
    assert.match(readFileSync(cluster.knownHostsPath, "utf8"), /127\.0\.0\.2/);
    assert.ok(progress.length > 0);
    // The node's token is cached (SecretStorage in VS Code) and is the hive's own.
    assert.equal(tokens.get("node1"), readFileSync(path.join(hiveHome(), "token"), "utf8").trim());
    const snapshot = await controller.probe();
    assert.equal(snapshot.status, "running", snapshot.reason);
    assert.ok(snapshot.backends.includes("cpu"));
  });

  test("a stale cached token is replaced by the node's when the hive refuses it", async () => {
    tokens.set("node1", "x".repeat(32));
    // A fresh controller state: the cached client was built with the right token.
    writeKnownHosts(cluster);
    const fresh = new RbeeServices({ ...services.opts, storageDir: path.join(cluster.dir, "storage2") });
    try {
      const snapshot = await (await fresh.controller("node1")).probe();
      assert.equal(snapshot.status, "running", snapshot.reason);
      assert.equal(tokens.get("node1"), readFileSync(path.join(hiveHome(), "token"), "utf8").trim());
    } finally {
      await fresh.dispose();
    }
  });

  test("a generation on node1 runs through SSH; its worker shows in the probe and goes after a stop", async () => {
    const model = `file:${ensureModel("tiny")}`;
    const keeper = await services.keeper();
    const result = await keeper.generate(
      { node: "node1", model },
      { kind: "inference", prompt: "def f():", max_tokens: 8 },
    );
    assert.equal(result.tokensOut, 8);
    const controller = await services.controller("node1");
    let snapshot = await controller.probe();
    assert.deepEqual(
      snapshot.workers.map((w) => w.id),
      [result.workerId],
    );
    const { registry } = await services.get();
    assert.deepEqual(
      (await registry.listWorkers({ node: "node1" })).map((w) => w.id),
      [result.workerId],
    );

    await (await controller.hive(false)).shutdown(result.workerId);
    snapshot = await controller.probe();
    assert.deepEqual(snapshot.workers, []);
    assert.deepEqual(await registry.listWorkers({ node: "node1" }), []);
  });

  test("the node's hive log is fetched into a local file; no secret reached the log", async () => {
    const file = await (await services.controller("node1")).logFile();
    assert.match(readFileSync(file, "utf8"), /listening on unix:\//);
    const token = readFileSync(path.join(hiveHome(), "token"), "utf8").trim();
    assert.equal(
      lines.some((l) => l.includes(token)),
      false,
    );
  });
});
