// The install path's figures: first deploy to a bare node over loopback SSH (seconds, MB uploaded,
// with an empty and with a warm runtime cache), the same against the development copy path, the
// no-op re-deploy (hash check included; target ≤ 1 s), and the local hive's cold start from a .vsix
// install (runtime unpacked from the cache, then started) against a warm start.
// Tarballs come from a loopback npm registry fed from npm's cache (test/helpers/npm-registry.ts).

import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { LocalHive } from "../../extension/src/keeper/local-hive";
import { SshPool } from "../../extension/src/nodes/connection";
import { deployHive, type DeployOptions } from "../../extension/src/nodes/deploy";
import { loadNpmConfig } from "../../extension/src/nodes/npm-config";
import { RuntimeCache } from "../../extension/src/nodes/runtime-cache";
import { loadRuntimePins, runtimeSetFor } from "../../extension/src/nodes/runtime-packages";
import { loadSshConfig } from "../../extension/src/nodes/ssh-config";
import { LocalRuntime } from "../../extension/src/stack/local-runtime";
import { AGENT_VERSION } from "../../hive-agent/src/protocol";
import { ensureTestTarballs, startTestRegistry } from "../helpers/npm-registry";
import { startSshdCluster } from "../helpers/sshd";
import { median, round } from "./common";

const REPO = path.resolve(__dirname, "..", "..");
const BUNDLE = path.join(REPO, "dist", "hive-agent.js");
const PINS = path.join(REPO, "dist", "runtime-pins.json");
const TOKEN = "bench-token";

export async function benchDeploy(): Promise<Record<string, number>> {
  const pins = loadRuntimePins(PINS);
  const set = runtimeSetFor({ os: "linux", machine: "x86_64", musl: false, glibc: "2.36", gpus: [] }, pins, {
    withNode: true,
  });
  await ensureTestTarballs([set.node!, ...set.packages]);
  const work = mkdtempSync(path.join(os.tmpdir(), "rbee-bench-deploy-"));
  const registry = await startTestRegistry(path.join(work, "registry"), TOKEN);
  const cluster = await startSshdCluster({
    nodes: [{ address: "127.0.0.41", bare: true }, { address: "127.0.0.42", bare: true }, { address: "127.0.0.43" }],
  });
  const index = loadSshConfig({ configPath: cluster.sshConfigPath, homeDir: cluster.dir });
  const pools: SshPool[] = [];
  const conn = (alias: string) => {
    const p = new SshPool((a) => index.node(a));
    pools.push(p);
    return p.get(alias);
  };
  const cacheDir = path.join(work, "cache");
  const cache = () =>
    new RuntimeCache(cacheDir, {
      npm: loadNpmConfig({
        env: { npm_config_userconfig: registry.npmrc, RBEE_TEST_REGISTRY_TOKEN: TOKEN },
        homeDir: work,
      }),
    });
  const opts = (): DeployOptions => ({ agentScript: BUNDLE, pins, cache: cache() });
  const timed = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
    const t0 = performance.now();
    const r = await fn();
    return [r, (performance.now() - t0) / 1000];
  };
  try {
    const [cold, coldS] = await timed(() => deployHive(conn("node1"), opts()));
    const fetched = registry.requests.length;
    const [warm, warmS] = await timed(() => deployHive(conn("node2"), opts()));
    const [copy, copyS] = await timed(() =>
      deployHive(conn("node3"), {
        agentScript: BUNDLE,
        runtimeInstall: "copy",
        localNodeModules: path.join(REPO, "node_modules"),
      }),
    );
    const noop: number[] = [];
    for (let i = 0; i < 5; i++) {
      const [r, s] = await timed(() => deployHive(conn("node1"), opts())); // a fresh SSH connection each time
      if (r.changed) throw new Error("re-deploy was not a no-op");
      noop.push(s * 1000);
    }

    // The local hive of a .vsix install: dist/ without node_modules anywhere above it.
    const bundleDir = path.join(work, "vsix", "extension", "dist");
    mkdirSync(bundleDir, { recursive: true });
    copyFileSync(BUNDLE, path.join(bundleDir, "hive-agent.js"));
    copyFileSync(PINS, path.join(bundleDir, "runtime-pins.json"));
    const home = path.join(work, "rbee-home");
    const runtime = new LocalRuntime({ bundleDir, home, version: AGENT_VERSION, cache: cache() });
    const hive = new LocalHive({
      home: path.join(home, "hive"),
      prepareAgent: () => runtime.prepare(),
      expectedVersion: AGENT_VERSION,
      daemonArgs: ["--native-build", "off"],
    });
    const [, localColdS] = await timed(() => hive.ensure());
    await hive.stop();
    const [, localWarmS] = await timed(() => hive.ensure());
    await hive.stop();
    await hive.close();

    return {
      "first deploy, empty cache: s": round(coldS),
      "first deploy, empty cache: MB uploaded": round(cold.uploadedBytes / 1e6, 1),
      "tarballs fetched (first deploy only)": fetched,
      "first deploy, warm cache (2nd node): s": round(warmS),
      "first deploy, warm cache: MB uploaded": round(warm.uploadedBytes / 1e6, 1),
      "dev copy path (system node, tar|gzip): s": round(copyS),
      "dev copy path: MB sent (uncompressed)": round(copy.uploadedBytes / 1e6, 1),
      "warm-cache deploy / copy path (x)": round(warmS / copyS),
      "no-op re-deploy, median ms (hash check, fresh SSH)": round(median(noop), 0),
      "no-op re-deploy / 1 s target (x)": round(median(noop) / 1000),
      "local hive cold start from .vsix (unpack + start): s": round(localColdS),
      "local hive warm start: s": round(localWarmS),
      "cold / warm local start (x)": round(localColdS / localWarmS),
    };
  } finally {
    for (const p of pools) p.close();
    await registry.close();
    await cluster.stop();
    rmSync(work, { recursive: true, force: true });
  }
}
