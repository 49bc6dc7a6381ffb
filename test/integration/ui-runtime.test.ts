// Where the local hive's program runs from (extension/src/stack/local-runtime.ts): in place when
// node-llama-cpp sits next to the bundle (a checkout), otherwise — a .vsix install — unpacked once
// per version from the runtime cache, whose tarballs come from a loopback npm registry here (the
// keeper's real fetcher, integrity-checked). Then a real local hive and worker run from it, an
// older local hive is upgraded on next use without losing its models, and a failed upgrade starts
// the previous one again.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { AGENT_BUNDLE, REPO_ROOT, collect } from "../helpers/hive";
import { findLlamaRuntime, LocalRuntime } from "../../extension/src/stack/local-runtime";
import { LocalHive } from "../../extension/src/keeper/local-hive";
import { loadNpmConfig } from "../../extension/src/nodes/npm-config";
import { RuntimeCache } from "../../extension/src/nodes/runtime-cache";
import { loadRuntimePins, runtimeSetFor, type NodePlatform } from "../../extension/src/nodes/runtime-packages";
import { AGENT_VERSION, RbeeError } from "../../hive-agent/src/protocol";
import { ensureModel } from "../fixtures/models";
import { ensureTestTarballs, startTestRegistry, type TestRegistry } from "../helpers/npm-registry";

const TOKEN = "local-runtime-token";
const PINS = path.join(REPO_ROOT, "dist", "runtime-pins.json");
const CPU: NodePlatform = { os: "linux", machine: "x86_64", musl: false, glibc: "2.36", gpus: [] };
let work = "";
let registry: TestRegistry;

function cacheFor(dir: string, registryUrl?: string): RuntimeCache {
  const env = registryUrl
    ? { npm_config_registry: registryUrl }
    : { npm_config_userconfig: registry.npmrc, RBEE_TEST_REGISTRY_TOKEN: TOKEN };
  return new RuntimeCache(dir, { npm: loadNpmConfig({ env, homeDir: work }) });
}

/** dist/ of an unpacked .vsix: the bundles and the pins, no node_modules anywhere above. */
function bundleOutsideRepo(): { dir: string; bundleDir: string; home: string } {
  const dir = mkdtempSync(path.join(work, "vsix-"));
  const bundleDir = path.join(dir, "extension", "dist");
  mkdirSync(bundleDir, { recursive: true });
  copyFileSync(AGENT_BUNDLE, path.join(bundleDir, "hive-agent.js"));
  copyFileSync(PINS, path.join(bundleDir, "runtime-pins.json"));
  return { dir, bundleDir, home: path.join(dir, "rbee-home") };
}

before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), "rbee-runtime-"));
  const pins = loadRuntimePins(PINS);
  await ensureTestTarballs(runtimeSetFor(CPU, pins, { withNode: false }).packages);
  registry = await startTestRegistry(path.join(work, "registry"), TOKEN);
});

after(async () => {
  await registry?.close();
  rmSync(work, { recursive: true, force: true });
});

test("a checkout runs the bundle in place: node-llama-cpp is found above dist/", () => {
  assert.equal(findLlamaRuntime(path.join(REPO_ROOT, "dist")), REPO_ROOT);
  const runtime = new LocalRuntime({
    bundleDir: path.join(REPO_ROOT, "dist"),
    home: "/nonexistent",
    version: "0.1.0",
    cache: cacheFor(path.join(work, "unused")),
  });
  assert.equal(runtime.ready(), AGENT_BUNDLE);
  assert.equal(runtime.agentScript, AGENT_BUNDLE);
});

test("no registry and nothing cached: the error says what to do, and nothing is marked installed", async () => {
  const { bundleDir, home } = bundleOutsideRepo();
  // A loopback port nobody listens on.
  const runtime = new LocalRuntime({
    bundleDir,
    home,
    version: "0.1.0",
    cache: cacheFor(path.join(work, "empty-cache"), "http://127.0.0.1:9/"),
    platform: CPU,
  });
  assert.equal(runtime.ready(), undefined);
  await assert.rejects(
    runtime.prepare(),
    (e: unknown) =>
      e instanceof RbeeError &&
      e.code === "BACKEND_UNAVAILABLE" &&
      /fetching .* failed/.test(e.message) &&
      /rbee runtime import DIR/.test(e.message),
  );
  assert.equal(runtime.ready(), undefined);
  assert.equal(existsSync(path.join(runtime.installDir, "hive-agent.js")), false);
});

test("a .vsix install: node-llama-cpp unpacked from the cache runs a real local hive and worker; another build of the bundle needs a new install", async () => {
  const { bundleDir, home } = bundleOutsideRepo();
  assert.equal(findLlamaRuntime(bundleDir), undefined);
  const cacheDir = path.join(work, "cache");
  const runtime = new LocalRuntime({ bundleDir, home, version: AGENT_VERSION, cache: cacheFor(cacheDir) });
  const lines: string[] = [];
  const script = await runtime.prepare((l) => lines.push(l));
  assert.equal(script, path.join(home, "agent", AGENT_VERSION, "hive-agent.js"));
  assert.ok(existsSync(path.join(runtime.installDir, "node_modules", "@node-llama-cpp", "linux-x64", "package.json")));
  assert.ok(lines.some((l) => /fetched \d+ packages/.test(l)));
  assert.equal(runtime.ready(), script);

  const hive = new LocalHive({
    home: path.join(home, "hive"),
    prepareAgent: () => runtime.prepare(),
    expectedVersion: AGENT_VERSION,
    daemonArgs: ["--native-build", "off"],
  });
  try {
    const { client, started } = await hive.ensure();
    assert.equal(started, true);
    const spawned = await client.spawn({
      model_ref: `file:${ensureModel("tiny")}`,
      slots: 1,
      threads: 1,
      context_size: 256,
    });
    let info = await client.worker(spawned.worker_id);
    for (let i = 0; info.state === "loading" && i < 600; i++) {
      await new Promise((r) => setTimeout(r, 100));
      info = await client.worker(spawned.worker_id);
    }
    assert.equal(info.state, "idle", JSON.stringify(info));
    const out = await collect(
      client.workerClient(info).inference({ prompt: "x", max_tokens: 4, temperature: 0, seed: 1 }),
    );
    assert.equal(out.filter((e) => e.type === "token").length, 4);
  } finally {
    await hive.stop();
    await hive.close();
  }

  // A second install of the same version (another window's runtime) downloads nothing.
  const before = registry.requests.length;
  const other = bundleOutsideRepo();
  await new LocalRuntime({
    bundleDir: other.bundleDir,
    home: other.home,
    version: AGENT_VERSION,
    cache: cacheFor(cacheDir),
  }).prepare();
  assert.equal(registry.requests.length, before);

  writeFileSync(path.join(bundleDir, "hive-agent.js"), readFileSync(AGENT_BUNDLE, "utf8") + "\n// another build\n");
  assert.equal(runtime.ready(), undefined, "a stale copy of the agent must not be run");
});

test("an older local hive is upgraded on next use and keeps its models; a failed upgrade starts the old one again", async () => {
  // The "older install": a real build that calls itself 0.0.9, inside the repo so it finds node_modules.
  const old = path.join(REPO_ROOT, ".cache", "agent-0.0.9");
  execFileSync(process.execPath, ["esbuild.mjs"], {
    cwd: REPO_ROOT,
    env: { ...process.env, RBEE_BUILD_VERSION: "0.0.9", RBEE_BUILD_OUT: old },
    stdio: "ignore",
  });
  const home = mkdtempSync(path.join(work, "upgrade-"));
  const args = ["--native-build", "off"];
  const previous = new LocalHive({ home, agentScript: path.join(old, "hive-agent.js"), daemonArgs: args });
  const current = new LocalHive({
    home,
    prepareAgent: async () => AGENT_BUNDLE,
    expectedVersion: AGENT_VERSION,
    daemonArgs: args,
  });
  try {
    await previous.ensure();
    assert.equal((await previous.status()).version, "0.0.9");
    const { client } = await previous.ensure();
    const model = readFileSync(ensureModel("tiny"));
    const server = http.createServer((_req, res) => res.end(model));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      const { download_id } = await client.download({
        model_ref: `http://127.0.0.1:${(server.address() as AddressInfo).port}/tiny.gguf`,
      });
      assert.equal((await collect(client.downloadProgress(download_id))).at(-1)?.stage, "complete");
    } finally {
      server.close();
    }
    const models = (await client.models()).map((m) => m.model_ref);
    assert.equal(models.length, 1);

    // A release whose daemon dies at start: the 0.0.9 hive comes back.
    const broken = path.join(work, "broken-hive-agent.js");
    writeFileSync(broken, `console.error("broken release"); process.exit(3);\n`);
    const failing = new LocalHive({
      home,
      prepareAgent: async () => broken,
      expectedVersion: "9.9.9",
      daemonArgs: args,
      startTimeoutMs: 5000,
    });
    await assert.rejects(failing.ensure(), /the previous local hive \(0\.0\.9\) was started again/);
    assert.equal((await previous.status()).version, "0.0.9");
    await failing.close();

    const r = await current.ensure((m) => assert.match(m ?? "", /upgrading the local hive from 0\.0\.9 to /));
    assert.equal(r.started, true);
    assert.equal((await current.status()).version, AGENT_VERSION);
    assert.deepEqual(
      (await r.client.models()).map((m) => m.model_ref),
      models,
      "the catalog survived the upgrade",
    );
    assert.equal((await current.ensure()).started, false, "the upgraded hive is used from then on");
  } finally {
    await current.stop();
    await current.close();
    await previous.close();
  }
});
