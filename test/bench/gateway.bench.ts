// The gateway's cost and its use (issue 13), on the `small` model, one thread per worker:
//   1. the same streamed request (llama.cpp's /completion, the worker's own sampling) through
//      `rbee serve` and straight to the worker with the keeper's client, interleaved: tokens/s ratio
//      (target ≥ 0.98) and first-token overhead (target ≤ 3 ms);
//   2. aggregate tokens/s of 8 concurrent clients when the gateway spreads them over two SSH nodes
//      (sshd on 127.0.0.2/.3, workers of 4 slots) vs when they all go to one (`node1/small`).
// On one machine both "nodes" share its cores, so (2) is bounded by the cores there are.

import { rmSync } from "node:fs";
import { createParser } from "eventsource-parser";
import { Agent, request } from "undici";
import { performance } from "node:perf_hooks";
import { WorkerClient } from "../../extension/src/keeper/hive-client";
import { Registry, defaultRegistryPath } from "../../extension/src/keeper/registry";
import { loopbackTransport } from "../../extension/src/keeper/transport";
import { ensureModel } from "../fixtures/models";
import { newRbeeHome, runCli } from "../helpers/cli";
import { gatewayConfigPath, startGateway, writeGatewayConfig, type RunningGateway } from "../helpers/gateway";
import { startSshdCluster } from "../helpers/sshd";
import { PROMPT, median, round, timeStream, type Run } from "./common";

const TOKENS = 200;
const RUNS = Number(process.env.RBEE_BENCH_RUNS ?? 5);
const SAMPLING = { temperature: 0.8, top_k: 40, top_p: 0.95, seed: 7 };
const agent = new Agent({ keepAliveTimeout: 30_000, pipelining: 0 });

/**
 * A streamed /completion through the gateway, read the way the keeper reads a worker (undici's
 * request and eventsource-parser), so both sides of the ratio pay the same client costs.
 */
async function viaGateway(gw: RunningGateway, model: string, tokens = TOKENS): Promise<Run & { gatewayMs: number }> {
  const t0 = performance.now();
  const res = await request(`${gw.url}/completion`, {
    method: "POST",
    dispatcher: agent,
    headers: { authorization: `Bearer ${gw.token}`, "content-type": "application/json" },
    body: JSON.stringify({ model, prompt: PROMPT, n_predict: tokens, stream: true, ...SAMPLING }),
  });
  if (res.statusCode !== 200) throw new Error(`gateway answered ${res.statusCode}: ${await res.body.text()}`);
  let first = 0,
    last = 0,
    n = 0;
  const parser = createParser({
    onEvent: (m) => {
      const event = JSON.parse(m.data);
      if (event.stop) n = event.tokens_predicted;
      else {
        last = performance.now();
        if (!first) first = last;
      }
    },
  });
  const decoder = new TextDecoder();
  for await (const chunk of res.body) parser.feed(decoder.decode(chunk as Buffer, { stream: true }));
  if (n !== tokens) throw new Error(`expected ${tokens} tokens, got ${n}`);
  const own = Number(/gateway;dur=([\d.]+)/.exec(String(res.headers["server-timing"] ?? ""))?.[1] ?? NaN);
  return { tokens: n, tokensPerSecond: (n - 1) / ((last - first) / 1000), firstTokenMs: first - t0, gatewayMs: own };
}

async function overhead(model: string): Promise<Record<string, number>> {
  const home = newRbeeHome();
  const env = { RBEE_HOME: home };
  writeGatewayConfig(gatewayConfigPath(home), {
    aliases: { small: model },
    spawn: { backend: "cpu", threads: 1, slots: 1, contextSize: 1024 },
  });
  const gw = await startGateway([], env);
  const loop = loopbackTransport();
  try {
    await viaGateway(gw, "small"); // cold: hive and worker start
    const registry = await Registry.open(defaultRegistryPath(env));
    const [w] = await registry.listWorkers();
    registry.close();
    const direct = new WorkerClient(loop, w.url, w.api_key, "direct");
    const directRun = () =>
      timeStream(() => direct.inference({ prompt: PROMPT, max_tokens: TOKENS, ...SAMPLING }), TOKENS);
    await directRun();
    const d: Run[] = [],
      g: (Run & { gatewayMs: number })[] = [];
    for (let i = 0; i < RUNS; i++) {
      d.push(await directRun());
      g.push(await viaGateway(gw, "small"));
    }
    const dTps = median(d.map((r) => r.tokensPerSecond)),
      gTps = median(g.map((r) => r.tokensPerSecond));
    const dFirst = median(d.map((r) => r.firstTokenMs)),
      gFirst = median(g.map((r) => r.firstTokenMs));
    return {
      direct_tok_s: round(dTps, 1),
      gateway_tok_s: round(gTps, 1),
      ratio_gateway_over_direct_tok_s: round(gTps / dTps, 3),
      direct_first_token_ms: round(dFirst, 1),
      gateway_first_token_ms: round(gFirst, 1),
      gateway_first_token_overhead_ms: round(gFirst - dFirst, 1),
      // From the request's arrival at the gateway to its departure for the worker (Server-Timing).
      gateway_own_ms_before_worker: round(median(g.map((r) => r.gatewayMs)), 2),
    };
  } finally {
    await gw.stop();
    await loop.close();
    await runCli(["hive", "stop"], env);
    rmSync(home, { recursive: true, force: true });
  }
}

async function spread(model: string): Promise<Record<string, number>> {
  const home = newRbeeHome();
  const cluster = await startSshdCluster({ nodes: [{ address: "127.0.0.2" }, { address: "127.0.0.3" }] });
  const env = { RBEE_HOME: home, RBEE_RUNTIME_INSTALL: "copy" };
  const args = ["--ssh-config", cluster.sshConfigPath];
  writeGatewayConfig(gatewayConfigPath(home), {
    aliases: { small: model },
    spawn: { backend: "cpu", threads: 1, slots: 4, contextSize: 1024 },
  });
  const gw = await startGateway(args, env);
  const CLIENTS = 8,
    EACH = 64;
  const aggregate = async (name: string) => {
    const t0 = performance.now();
    const runs = await Promise.all(Array.from({ length: CLIENTS }, () => viaGateway(gw, name, EACH)));
    return runs.reduce((n, r) => n + r.tokens, 0) / ((performance.now() - t0) / 1000);
  };
  try {
    for (const node of ["node1", "node2"]) await viaGateway(gw, `${node}/small`, 4); // deploys and starts both workers
    const one: number[] = [],
      two: number[] = [];
    for (let i = 0; i < Math.max(3, Math.ceil(RUNS / 2)); i++) {
      one.push(await aggregate("node1/small"));
      two.push(await aggregate("small"));
    }
    return {
      one_node_8_clients_tok_s: round(median(one), 1),
      two_nodes_8_clients_tok_s: round(median(two), 1),
      ratio_two_nodes_over_one: round(median(two) / median(one), 3),
    };
  } finally {
    await gw.stop();
    for (const n of ["node1", "node2"]) await runCli(["nodes", "uninstall", n, ...args], env);
    await cluster.stop();
    rmSync(home, { recursive: true, force: true });
  }
}

export async function benchGateway(): Promise<Record<string, number>> {
  const model = `file:${ensureModel("small")}`;
  try {
    return {
      ...(await overhead(model)),
      ...(process.env.RBEE_BENCH_GATEWAY_SPREAD === "0" ? {} : await spread(model)),
    };
  } finally {
    await agent.close();
  }
}

if (require.main === module) {
  benchGateway().then(
    (r) => console.table(r),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
