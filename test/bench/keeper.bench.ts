// Issue 3's benchmark: a warm `rbee infer` from process start to first token (tiny model), and
// tokens/s through the whole keeper (registry → worker SSE → onToken) vs in-process node-llama-cpp
// on the `small` model, measured side by side.

import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { Keeper } from "../../extension/src/keeper/keeper";
import { LocalHive } from "../../extension/src/keeper/local-hive";
import { LocalConnector } from "../../extension/src/keeper/local-connector";
import { Registry } from "../../extension/src/keeper/registry";
import { ensureModel } from "../fixtures/models";
import { CLI_BUNDLE, newRbeeHome, runCli } from "../helpers/cli";
import { AGENT_BUNDLE } from "../helpers/hive";
import path from "node:path";
import { PROMPT, inProcessEngine, median, round } from "./common";

/** Spawns `rbee infer` and returns ms from spawn to the first byte on stdout. */
function timeToFirstToken(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const p = spawn(process.execPath, [CLI_BUNDLE, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "ignore"],
    });
    let first = 0;
    p.stdout.once("data", () => (first = performance.now() - t0));
    p.once("exit", (code) => (code === 0 && first ? resolve(first) : reject(new Error(`rbee infer exited ${code}`))));
  });
}

export async function benchKeeper(opts: { threads?: number; runs?: number } = {}): Promise<Record<string, number>> {
  const threads = opts.threads ?? 1;
  const runs = opts.runs ?? 5;
  const home = newRbeeHome();
  const env = { RBEE_HOME: home };
  try {
    // Warm start of the CLI on the tiny model.
    const tiny = `file:${ensureModel("tiny")}`;
    const args = ["infer", "--model", tiny, "--prompt", PROMPT, "--max-tokens", "8", "--threads", String(threads)];
    await runCli(args, env); // cold: starts the hive and the worker
    const warm: number[] = [];
    for (let i = 0; i < runs; i++) warm.push(await timeToFirstToken(args, env));

    // Tokens/s through the keeper in this process vs in-process node-llama-cpp, small model.
    const small = ensureModel("small");
    const registry = await Registry.open(path.join(home, "registry.sqlite"));
    const local = new LocalHive({ home: path.join(home, "hive"), agentScript: AGENT_BUNDLE });
    const keeper = new Keeper({ registry, nodes: new LocalConnector(local, registry) });
    const spec = { node: "localhost", model: `file:${small}`, threads, slots: 1 };
    const TOKENS = 128;
    const throughKeeper = async () => {
      let first = 0,
        last = 0,
        n = 0;
      await keeper.generate(
        spec,
        { kind: "inference", prompt: PROMPT, max_tokens: TOKENS, temperature: 0.8, top_k: 40, top_p: 0.95, seed: 7 },
        {
          onToken: () => {
            last = performance.now();
            if (!first) first = last;
            n++;
          },
        },
      );
      return (n - 1) / ((last - first) / 1000);
    };
    await throughKeeper(); // spawns the small worker
    const engine = await inProcessEngine({ modelPath: small, threads });
    await engine.run(TOKENS);
    const k: number[] = [],
      inproc: number[] = [];
    for (let i = 0; i < runs; i++) {
      inproc.push((await engine.run(TOKENS)).tokensPerSecond);
      k.push(await throughKeeper());
    }
    await engine.dispose();
    registry.close();
    await local.close();
    return {
      threads,
      warm_cli_start_to_first_token_ms_p50: round(median(warm), 0),
      keeper_tok_s: round(median(k), 1),
      in_process_tok_s: round(median(inproc), 1),
      ratio_keeper_over_in_process: round(median(k) / median(inproc), 3),
    };
  } finally {
    await runCli(["hive", "stop"], env);
    rmSync(home, { recursive: true, force: true });
  }
}

if (require.main === module) {
  benchKeeper({ threads: Number(process.env.RBEE_BENCH_THREADS ?? 1) }).then((r) => console.table(r));
}
