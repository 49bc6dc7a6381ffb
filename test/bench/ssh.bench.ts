// SSH path benchmark on a real sshd node (127.0.0.2): first deploy and no-op re-deploy times,
// decode tokens/s through the SSH transport vs in-process node-llama-cpp on the `small` model
// (same threads, same sampling), and the first-token overhead of SSH over plain loopback.
// Run alone (after `node esbuild.mjs`): `node --import tsx test/bench/ssh.bench.ts`.

import { existsSync } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { HiveClient, WorkerClient } from "../../extension/src/keeper/hive-client";
import { loopbackTransport } from "../../extension/src/keeper/transport";
import { SshPool } from "../../extension/src/nodes/connection";
import { deployHive } from "../../extension/src/nodes/deploy";
import { loadSshConfig } from "../../extension/src/nodes/ssh-config";
import { sshTransport } from "../../extension/src/nodes/ssh-transport";
import { ensureModel } from "../fixtures/models";
import { startSshdCluster } from "../helpers/sshd";
import { PROMPT, inProcessEngine, median, timeStream, type Run } from "./common";

const REPO = path.resolve(__dirname, "..", "..");
const BUNDLE = path.join(REPO, "dist", "hive-agent.js");
const TOKENS = 200;
const RUNS = Number(process.env.RBEE_BENCH_RUNS ?? 5);
const THREADS = 1;

const timedStream = (worker: WorkerClient) =>
  timeStream(
    () => worker.inference({ prompt: PROMPT, max_tokens: TOKENS, temperature: 0.8, top_k: 40, top_p: 0.95, seed: 7 }),
    TOKENS,
  );

export async function benchSsh(): Promise<Record<string, number>> {
  if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: run node esbuild.mjs first`);
  const modelPath = ensureModel("small");
  const cluster = await startSshdCluster({ nodes: [{ address: "127.0.0.2" }] });
  const index = loadSshConfig({ configPath: cluster.sshConfigPath, homeDir: cluster.dir });
  const deployOpts = {
    agentScript: BUNDLE,
    runtimeInstall: "copy" as const,
    localNodeModules: path.join(REPO, "node_modules"),
  };
  const pools: SshPool[] = [];
  const newPool = () => {
    const p = new SshPool((a) => index.node(a));
    pools.push(p);
    return p;
  };
  try {
    const firstDeploy = await deployHive(newPool().get("node1"), deployOpts);
    const noop: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const r = await deployHive(newPool().get("node1"), deployOpts); // a fresh SSH connection each time
      if (r.changed) throw new Error("re-deploy was not a no-op");
      noop.push(performance.now() - t0);
    }

    const pool = newPool();
    const conn = pool.get("node1");
    const ssh = sshTransport(conn);
    const loop = loopbackTransport();
    const hive = new HiveClient({
      transport: ssh,
      baseUrl: firstDeploy.address,
      token: firstDeploy.token,
      nodeName: "node1",
    });
    const spawned = await hive.spawn({ model_ref: `file:${modelPath}`, slots: 1, threads: THREADS, context_size: 512 });
    let info = await hive.worker(spawned.worker_id);
    while (info.state === "loading") {
      await new Promise((r) => setTimeout(r, 100));
      info = await hive.worker(spawned.worker_id);
    }
    const overSsh = hive.workerClient(info);
    // The node is this machine, so the worker is also reachable directly: the loopback reference.
    const overLoopback = new WorkerClient(loop, info.url, info.api_key, "node1-direct");
    await timedStream(overSsh); // warm-up: first channel, caches

    // Interleaved rounds, so load from other processes on the machine hits every path alike.
    const engine = await inProcessEngine({ modelPath, threads: THREADS, contextSize: 512 });
    const base: Run[] = [];
    const sshRuns: Run[] = [];
    const loopRuns: Run[] = [];
    for (let r = 0; r < RUNS; r++) {
      base.push(await engine.run(TOKENS));
      sshRuns.push(await timedStream(overSsh));
      loopRuns.push(await timedStream(overLoopback));
    }
    await engine.dispose();
    await hive.shutdown(info.id);
    await ssh.close();
    await loop.close();

    const inProc = median(base.map((r) => r.tokensPerSecond));
    const viaSsh = median(sshRuns.map((r) => r.tokensPerSecond));
    const viaLoop = median(loopRuns.map((r) => r.tokensPerSecond));
    return {
      first_deploy_ms: firstDeploy.durationMs,
      noop_redeploy_ms_median: median(noop),
      noop_redeploy_ms_max: Math.max(...noop),
      in_process_tok_s: inProc,
      loopback_tok_s: viaLoop,
      ssh_tok_s: viaSsh,
      ssh_over_in_process_ratio: viaSsh / inProc,
      first_token_ms_loopback: median(loopRuns.map((r) => r.firstTokenMs)),
      first_token_ms_ssh: median(sshRuns.map((r) => r.firstTokenMs)),
      first_token_overhead_ms: median(sshRuns.map((r) => r.firstTokenMs)) - median(loopRuns.map((r) => r.firstTokenMs)),
    };
  } finally {
    for (const p of pools) p.close();
    await cluster.stop();
  }
}

if (require.main === module) {
  benchSsh().then(
    (r) => {
      for (const [k, v] of Object.entries(r)) console.log(`${k.padEnd(28)} ${v.toFixed(k.includes("ratio") ? 3 : 1)}`);
      process.exit(0);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
