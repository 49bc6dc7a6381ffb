// Deploying the hive-agent over SSH to real sshd nodes (127.0.0.2, 127.0.0.3; 127.0.0.4 has no
// `node` on its PATH): install, health and inference through the SSH transport, no-op re-deploy,
// upgrade that keeps the model catalog, logs, uninstall, and the clear error for a node without Node.js.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { appendFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, statSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { SshPool } from "../../extension/src/nodes/connection";
import { loadSshConfig } from "../../extension/src/nodes/ssh-config";
import {
  deployHive,
  hiveLogs,
  hiveStatus,
  uninstallHive,
  type DeployEvent,
  type DeployOptions,
} from "../../extension/src/nodes/deploy";
import { SshConnector } from "../../extension/src/nodes/ssh-connector";
import { NodeError } from "../../extension/src/nodes/errors";
import { AGENT_VERSION } from "../../hive-agent/src/protocol";
import { ensureModel } from "../fixtures/models";
import { AGENT_BUNDLE, REPO_ROOT, collect, isAlive as alive } from "../helpers/hive";
import { startSshdCluster, type SshdCluster } from "../helpers/sshd";
import { waitUntil } from "../helpers/wait";

let cluster: SshdCluster;
let modelServer: http.Server;
let modelUrl = "";
let nextBundle = "";
let nextVersion = "";
const NODE_MODULES = path.join(REPO_ROOT, "node_modules");
const base: DeployOptions = { agentScript: AGENT_BUNDLE, runtimeInstall: "copy", localNodeModules: NODE_MODULES };

function newPool(): SshPool {
  const index = loadSshConfig({ configPath: cluster.sshConfigPath, homeDir: cluster.dir });
  return new SshPool((alias) => index.node(alias));
}

function hiveHome(alias: string): string {
  return path.join(cluster.node(alias).home, ".rbee", "hive");
}

function pgrep(pattern: string): string[] {
  try {
    return execFileSync("pgrep", ["-f", pattern], { encoding: "utf8" }).trim().split("\n").filter(Boolean);
  } catch {
    return []; // exit 1: no match
  }
}

before(async () => {
  assert.ok(existsSync(AGENT_BUNDLE), `${AGENT_BUNDLE} is missing: run through test/run.mjs, which builds first`);
  cluster = await startSshdCluster({
    nodes: [{ address: "127.0.0.2" }, { address: "127.0.0.3" }, { address: "127.0.0.4", withoutNode: true }],
  });
  // The next version of the agent, built the way a release would be.
  const [maj, min, patch] = AGENT_VERSION.split(".").map(Number);
  nextVersion = `${maj}.${min}.${patch + 1}`;
  const out = mkdtempSync(path.join(cluster.dir, "build-next-"));
  execFileSync(process.execPath, ["esbuild.mjs"], {
    cwd: REPO_ROOT,
    env: { ...process.env, RBEE_BUILD_VERSION: nextVersion, RBEE_BUILD_OUT: out },
    stdio: "ignore",
  });
  nextBundle = path.join(out, "hive-agent.js");
  // The model the nodes download into their catalogs, served on loopback.
  const model = readFileSync(ensureModel("tiny"));
  modelServer = http.createServer((_req, res) => res.end(model));
  await new Promise<void>((r) => modelServer.listen(0, "127.0.0.1", r));
  modelUrl = `http://127.0.0.1:${(modelServer.address() as AddressInfo).port}/tiny.gguf`;
});

after(async () => {
  modelServer?.close();
  await cluster?.stop();
});

describe("deploy over SSH", () => {
  const firstPids = new Map<string, number>();

  test("first deploy to both nodes: every step reported, token 0600, hive detached and healthy through SSH", async () => {
    for (const alias of ["node1", "node2"]) {
      const events: DeployEvent[] = [];
      const pool = newPool();
      let r;
      try {
        r = await deployHive(pool.get(alias), { ...base, onProgress: (e) => events.push(e) });
      } finally {
        pool.close(); // the hive must outlive the SSH connection that started it
      }
      assert.equal(r.changed, true);
      assert.equal(r.version, AGENT_VERSION);
      assert.equal(r.runtime, "copied");
      assert.deepEqual(r.backends, ["cpu"]);
      assert.equal(r.agentDir, path.join(cluster.node(alias).home, ".rbee", "agent", AGENT_VERSION));
      const done = events.filter((e) => e.status === "done").map((e) => e.step);
      assert.deepEqual(done, [
        "connect",
        "probe",
        "upload",
        "runtime",
        "activate",
        "token",
        "start",
        "health",
        "cleanup",
      ]);
      assert.ok(
        events.some((e) => e.status === "progress"),
        "the copy reports byte progress",
      );

      const tokenFile = path.join(hiveHome(alias), "token");
      assert.equal(statSync(tokenFile).mode & 0o777, 0o600);
      assert.equal(readFileSync(tokenFile, "utf8"), r.token);
      assert.ok(r.token.length >= 40);
      assert.ok(existsSync(path.join(r.agentDir, "node_modules", "node-llama-cpp", "package.json")));
      assert.ok(existsSync(path.join(r.agentDir, "node_modules", "@node-llama-cpp", "linux-x64", "package.json")));
      assert.ok(
        !existsSync(path.join(r.agentDir, "node_modules", "node-llama-cpp", "llama", "llama.cpp")),
        "source-build files are not copied",
      );
      assert.ok(alive(r.pid));
      firstPids.set(alias, r.pid);

      const again = newPool();
      try {
        const s = await hiveStatus(again.get(alias));
        assert.deepEqual(
          { running: s.running, healthy: s.healthy, version: s.version, pid: s.pid },
          { running: true, healthy: true, version: AGENT_VERSION, pid: r.pid },
        );
      } finally {
        again.close();
      }
    }
    assert.notEqual(firstPids.get("node1"), firstPids.get("node2"), "each node runs its own hive");
  });

  test("infer on each node through the SSH transport (model downloaded into the node's catalog)", async () => {
    const pool = newPool();
    const connector = new SshConnector(pool, { deploy: base });
    try {
      for (const alias of ["node1", "node2"]) {
        const { hive } = await connector.connect(alias, () => {});
        const { download_id } = await hive.download({ model_ref: modelUrl });
        const progress = await collect(hive.downloadProgress(download_id));
        assert.equal(progress.at(-1)?.stage, "complete", JSON.stringify(progress.at(-1)));
        assert.ok((await hive.models()).some((m) => m.model_ref === modelUrl));

        const spawned = await hive.spawn({ model_ref: modelUrl, slots: 1, threads: 1, context_size: 512 });
        const info = await waitUntil(
          async () => {
            const w = await hive.worker(spawned.worker_id);
            return w.state !== "loading" && w;
          },
          { timeout: 120_000, intervalMs: 100, what: `worker ${spawned.worker_id} on ${alias} to finish loading` },
        );
        assert.equal(info.state, "idle");
        const events = await collect(
          hive.workerClient(info).inference({ prompt: "def add(a, b):", max_tokens: 12, temperature: 0, seed: 1 }),
        );
        const tokens = events.filter((e) => e.type === "token");
        const end = events.find((e) => e.type === "end");
        assert.equal(tokens.length, 12, JSON.stringify(events.at(-1)));
        assert.equal(end?.type === "end" && end.stop_reason, "max_tokens");
        await hive.shutdown(info.id);
      }
    } finally {
      await connector.close();
    }
  });

  // How long it takes is a benchmark figure (npm run bench -- deploy), not a test: a loaded machine
  // would make a time limit fail a correct no-op.
  test("re-deploying the same version is a no-op: nothing copied, the running hive left alone", async () => {
    const pool = newPool();
    try {
      const r = await deployHive(pool.get("node1"), base);
      assert.equal(r.changed, false);
      assert.equal(r.runtime, "present");
      assert.equal(r.pid, firstPids.get("node1"), "the running hive was left alone");
    } finally {
      pool.close();
    }
  });

  test("a new version replaces the old one, reuses its runtime and keeps the model catalog", async () => {
    const pool = newPool();
    try {
      const oldPid = firstPids.get("node1")!;
      const r = await deployHive(pool.get("node1"), { ...base, agentScript: nextBundle });
      assert.equal(r.changed, true);
      assert.equal(r.version, nextVersion);
      assert.equal(r.runtime, "reused", "node-llama-cpp is the same: moved, not copied again");
      assert.notEqual(r.pid, oldPid);
      assert.equal(alive(oldPid), false, "the old hive was stopped");
      assert.deepEqual(
        readdirSync(path.join(cluster.node("node1").home, ".rbee", "agent")),
        [nextVersion],
        "the old version is gone",
      );

      const connector = new SshConnector(pool, { deploy: { ...base, agentScript: nextBundle } });
      const { hive } = await connector.connect("node1", () => {});
      assert.equal((await hive.health()).version, nextVersion);
      assert.ok(
        (await hive.models()).some((m) => m.model_ref === modelUrl),
        "the catalog survived the upgrade",
      );
      await connector.close();
    } finally {
      pool.close();
    }
  });

  test("logs: the last lines, and following new lines until aborted", async () => {
    const pool = newPool();
    try {
      const text = (await collect(hiveLogs(pool.get("node2"), { lines: 50 }))).join("");
      assert.match(text, /rbee hive listening on unix:\/\S+\/hive\.sock/);

      const ac = new AbortController();
      const seen: string[] = [];
      const follow = (async () => {
        for await (const chunk of hiveLogs(pool.get("node2"), { lines: 0, follow: true, signal: ac.signal })) {
          seen.push(chunk);
          if (seen.join("").includes("marker-from-test")) ac.abort();
        }
      })();
      // The line must be written after the remote tail has opened the log at its end: wait for the
      // process, then append until the line arrives (tail may still be opening the file).
      const tailRunning = () => pgrep(`tail -n 0 -f ${hiveHome("node2")}`).length > 0;
      await waitUntil(tailRunning, { timeout: 10_000, what: "the remote tail -f to start" });
      await waitUntil(
        () => {
          if (ac.signal.aborted) return true;
          appendFileSync(path.join(hiveHome("node2"), "hive.log"), "marker-from-test\n");
          return false;
        },
        { timeout: 10_000, intervalMs: 250, what: "the appended line to reach the follower" },
      );
      await follow;
      assert.match(seen.join(""), /marker-from-test/);
      assert.ok(!seen.join("").includes("listening"), "lines: 0 starts at the end");
      // The remote `tail -f` must not linger on the node after the abort.
      await waitUntil(() => !tailRunning(), { timeout: 5000, what: "the remote tail to end after the abort" });
    } finally {
      pool.close();
    }
  });

  test("uninstall stops the hive and removes the agent, keeping the models", async () => {
    const pool = newPool();
    try {
      const pid = firstPids.get("node2")!;
      assert.deepEqual(await uninstallHive(pool.get("node2")), { removed: true });
      assert.equal(alive(pid), false);
      assert.equal(existsSync(path.join(cluster.node("node2").home, ".rbee", "agent")), false);
      assert.equal(
        existsSync(path.join(cluster.node("node2").home, ".rbee", "runtime")),
        false,
        "the runtime goes too",
      );
      assert.equal(existsSync(path.join(hiveHome("node2"), "token")), false);
      const models = readdirSync(path.join(hiveHome("node2"), "models"), { recursive: true }).map(String);
      assert.ok(
        models.includes("catalog.json") && models.some((f) => f.endsWith("tiny.gguf")),
        `models kept: ${models}`,
      );
      const s = await hiveStatus(pool.get("node2"));
      assert.deepEqual({ running: s.running, installed: s.installedVersions }, { running: false, installed: [] });
      await assert.rejects(
        collect(hiveLogs(pool.get("node2"))),
        (e: unknown) => e instanceof NodeError && e.code === "HIVE_NOT_DEPLOYED",
      );
      const manual = new SshConnector(pool, { autoDeploy: false });
      await assert.rejects(
        manual.connect("node2", () => {}),
        (e: unknown) =>
          e instanceof NodeError && e.code === "HIVE_NOT_DEPLOYED" && /rbee nodes deploy node2/.test(e.message),
      );
    } finally {
      pool.close();
    }
  });

  test("two deploys at once (two windows) install once and leave one hive running", async () => {
    const pools = [newPool(), newPool()];
    try {
      const results = await Promise.all(pools.map((p) => deployHive(p.get("node2"), base)));
      assert.deepEqual(
        results.map((r) => r.changed).sort(),
        [false, true],
        "the second waited for the lock, then found it done",
      );
      assert.equal(results[0].pid, results[1].pid);
      assert.equal(results[0].token, results[1].token);
      assert.deepEqual(
        pgrep(`hive-agent.js daemon .*${hiveHome("node2")}`).map(Number),
        [results[0].pid],
        "one hive, not two",
      );
      assert.equal(
        existsSync(path.join(cluster.node("node2").home, ".rbee", "deploy.lock")),
        false,
        "the lock was released",
      );
    } finally {
      for (const p of pools) p.close();
    }
  });

  test("a node without a usable `node` gets NODE_JS_MISSING with the fix, and nothing is installed", async () => {
    const pool = newPool();
    try {
      await assert.rejects(deployHive(pool.get("node3"), base), (e: unknown) => {
        assert.ok(e instanceof NodeError, String(e));
        assert.equal(e.code, "NODE_JS_MISSING");
        assert.match(e.message, /node3 has no `node` on its PATH: install Node\.js 20 or newer/);
        assert.match(e.message, /ssh node3 'command -v node; node --version'/);
        return true;
      });
      assert.equal(existsSync(path.join(cluster.node("node3").home, ".rbee")), false);
    } finally {
      pool.close();
    }
  });
});
