// Where the local hive's program runs from (extension/src/ui/nodes/local-runtime.ts): in place when
// node-llama-cpp sits next to the bundle, from ~/.rbee/agent/<version> once installed there, and a
// clear error when npm is missing or fails. npm runs for real, offline with an empty cache, so the
// failure is real and no traffic leaves the machine.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { AGENT_BUNDLE, REPO_ROOT } from "../helpers/hive";
import { findLlamaRuntime, LocalRuntime } from "../../extension/src/ui/nodes/local-runtime";
import { RbeeError } from "../../hive-agent/src/protocol";

function bundleOutsideRepo(): { dir: string; bundleDir: string; home: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), "rbee-runtime-"));
  const bundleDir = path.join(dir, "extension", "dist");
  mkdirSync(bundleDir, { recursive: true });
  copyFileSync(AGENT_BUNDLE, path.join(bundleDir, "hive-agent.js"));
  return { dir, bundleDir, home: path.join(dir, "rbee-home") };
}

test("a checkout runs the bundle in place: node-llama-cpp is found above dist/", () => {
  assert.equal(findLlamaRuntime(path.join(REPO_ROOT, "dist")), REPO_ROOT);
  const runtime = new LocalRuntime({ bundleDir: path.join(REPO_ROOT, "dist"), home: "/nonexistent", version: "0.1.0", llamaVersion: "3.21.1" });
  assert.equal(runtime.ready(), AGENT_BUNDLE);
  assert.equal(runtime.agentScript, AGENT_BUNDLE);
});

test("an installed runtime for this exact bundle is used; another build of the bundle needs a new install", () => {
  const { dir, bundleDir, home } = bundleOutsideRepo();
  try {
    assert.equal(findLlamaRuntime(bundleDir), undefined);
    const runtime = new LocalRuntime({ bundleDir, home, version: "0.1.0", llamaVersion: "3.21.1" });
    assert.equal(runtime.ready(), undefined);
    assert.equal(runtime.installDir, path.join(home, "agent", "0.1.0"));
    mkdirSync(path.join(runtime.installDir, "node_modules", "node-llama-cpp"), { recursive: true });
    writeFileSync(path.join(runtime.installDir, "node_modules", "node-llama-cpp", "package.json"), "{}");
    copyFileSync(AGENT_BUNDLE, path.join(runtime.installDir, "hive-agent.js"));
    assert.equal(runtime.ready(), path.join(runtime.installDir, "hive-agent.js"));
    writeFileSync(path.join(bundleDir, "hive-agent.js"), readFileSync(AGENT_BUNDLE, "utf8") + "\n// another build\n");
    assert.equal(runtime.ready(), undefined, "a stale copy of the agent must not be run");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("no npm: the error says what is missing and what to install", async () => {
  const { dir, bundleDir, home } = bundleOutsideRepo();
  try {
    const runtime = new LocalRuntime({ bundleDir, home, version: "0.1.0", llamaVersion: "3.21.1", npm: path.join(dir, "no-such-npm") });
    await assert.rejects(runtime.prepare(), (e: unknown) => e instanceof RbeeError && e.code === "BACKEND_UNAVAILABLE" && /npm .* was not found/.test(e.message) && /Node\.js 20/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("npm failing (offline, empty cache): the error carries npm's exit code and output; nothing is marked installed", async () => {
  const { dir, bundleDir, home } = bundleOutsideRepo();
  const saved = { offline: process.env.npm_config_offline, cache: process.env.npm_config_cache };
  process.env.npm_config_offline = "true";
  process.env.npm_config_cache = path.join(dir, "empty-npm-cache");
  try {
    const runtime = new LocalRuntime({ bundleDir, home, version: "0.1.0", llamaVersion: "3.21.1" });
    const lines: string[] = [];
    await assert.rejects(runtime.prepare((l) => lines.push(l)), (e: unknown) => e instanceof RbeeError && e.code === "BACKEND_UNAVAILABLE" && /npm install of node-llama-cpp failed with exit code [1-9]/.test(e.message));
    assert.ok(lines.some((l) => /installing node-llama-cpp 3\.21\.1/.test(l)));
    assert.deepEqual(JSON.parse(readFileSync(path.join(runtime.installDir, "package.json"), "utf8")).dependencies, { "node-llama-cpp": "3.21.1" });
    assert.equal(existsSync(path.join(runtime.installDir, "hive-agent.js")), false);
    assert.equal(runtime.ready(), undefined);
  } finally {
    if (saved.offline === undefined) delete process.env.npm_config_offline;
    else process.env.npm_config_offline = saved.offline;
    if (saved.cache === undefined) delete process.env.npm_config_cache;
    else process.env.npm_config_cache = saved.cache;
    rmSync(dir, { recursive: true, force: true });
  }
});
