// The CUDA check of the worker, for a GPU machine: the hive detects the GPU, preflights VRAM, and a
// CUDA worker streams through SSE as fast as node-llama-cpp's CUDA build in-process. Bundled to one JS
// file by make-kit.sh and run there by run-on-device.sh; prints one JSON object.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { HiveClient } from "../../../extension/src/keeper/hive-client";
import { loopbackTransport } from "../../../extension/src/keeper/transport";
import { ensureModel } from "../../fixtures/models";
import { PROMPT, inProcessEngine, median, round, timeStream } from "../common";

const TOKENS = 256;
// RBEE_KIT_GPU=false dry-runs the whole check on a CPU machine.
const BACKEND = process.env.RBEE_KIT_GPU === "false" ? "cpu" : "cuda";
const RUNS = 5;

async function main() {
  const agent = process.env.RBEE_AGENT_SCRIPT!;
  const modelPath = ensureModel("small");
  const home = mkdtempSync(path.join(tmpdir(), "rbee-gpu-"));
  const token = randomBytes(24).toString("base64url");
  writeFileSync(path.join(home, "token"), token, { mode: 0o600 });
  const hiveProc = spawn(
    process.execPath,
    [agent, "daemon", "--token-file", path.join(home, "token"), "--home", home, "--native-build", "off"],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  const address = await new Promise<string>((resolve) =>
    hiveProc.stdout!.on("data", (d) => {
      const m = /listening on (\S+)/.exec(String(d));
      if (m) resolve(m[1]);
    }),
  );
  const transport = loopbackTransport();
  const hive = new HiveClient({ transport, baseUrl: address, token, nodeName: "gpu" });
  const out: Record<string, unknown> = {};
  try {
    const caps = await hive.capabilities();
    out.capabilities = caps;
    // VRAM preflight refuses what cannot fit, before loading.
    try {
      await hive.spawn({ model_ref: `file:${modelPath}`, backend: BACKEND, context_size: 1 << 22, slots: 64 });
      out.vram_preflight = "NOT REFUSED";
    } catch (e: any) {
      out.vram_preflight = `${e.code}: ${e.message}`;
    }
    const t0 = performance.now();
    const s = await hive.spawn({ model_ref: `file:${modelPath}`, backend: BACKEND, slots: 4, context_size: 2048 });
    let w = await hive.worker(s.worker_id);
    while (w.state === "loading") {
      await new Promise((r) => setTimeout(r, 50));
      w = await hive.worker(s.worker_id);
    }
    out.worker_load_ms = round(performance.now() - t0, 0);
    // Placement: the worker went to a GPU by itself and sees only that one.
    out.worker_devices = w.devices;
    out.worker_gpu_devices = w.gpu_devices;
    const client = hive.workerClient(w);
    const stream = () =>
      timeStream(
        () =>
          client.inference({ prompt: PROMPT, max_tokens: TOKENS, temperature: 0.8, top_k: 40, top_p: 0.95, seed: 7 }),
        TOKENS,
      );
    const engine = await inProcessEngine({
      modelPath,
      threads: 4,
      gpu: BACKEND === "cpu" ? undefined : BACKEND,
      contextSize: 2048,
    });
    await stream();
    await engine.run(TOKENS);
    const ws: number[] = [],
      is: number[] = [],
      wf: number[] = [],
      inf: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const a = await engine.run(TOKENS);
      is.push(a.tokensPerSecond);
      inf.push(a.firstTokenMs);
      const b = await stream();
      ws.push(b.tokensPerSecond);
      wf.push(b.firstTokenMs);
    }
    await engine.dispose();
    Object.assign(out, {
      worker_sse_tok_s: round(median(ws), 1),
      in_process_tok_s: round(median(is), 1),
      ratio: round(median(ws) / median(is), 3),
      first_token_ms_worker: round(median(wf), 2),
      first_token_ms_in_process: round(median(inf), 2),
    });
    for (const n of [1, 2, 4]) {
      const t = performance.now();
      const rs = await Promise.all(
        Array.from({ length: n }, (_, k) =>
          timeStream(() => client.inference({ prompt: PROMPT, max_tokens: TOKENS, seed: k + 1 }), TOKENS),
        ),
      );
      out[`aggregate_tok_s_${n}`] = round((rs.reduce((x, r) => x + r.tokens, 0) / (performance.now() - t)) * 1000, 1);
    }
    // The same model on the machine's CPU, through a worker too: what the GPU buys.
    await hive.shutdown(w.id);
    const c = await hive.spawn({
      model_ref: `file:${modelPath}`,
      backend: "cpu",
      slots: 1,
      context_size: 2048,
      threads: 8,
    });
    let cw = await hive.worker(c.worker_id);
    while (cw.state === "loading") {
      await new Promise((r) => setTimeout(r, 50));
      cw = await hive.worker(c.worker_id);
    }
    const cpuRuns: number[] = [];
    for (let i = 0; i < 3; i++)
      cpuRuns.push(
        (
          await timeStream(
            () => hive.workerClient(cw).inference({ prompt: PROMPT, max_tokens: TOKENS, seed: 7 }),
            TOKENS,
          )
        ).tokensPerSecond,
      );
    out.cpu_worker_tok_s = round(median(cpuRuns), 1);
    out.gpu_over_cpu = round(median(ws) / median(cpuRuns), 2);
  } catch (e) {
    out.error = String((e as Error).stack ?? e);
  } finally {
    hiveProc.kill("SIGTERM");
    await transport.close();
  }
  console.log(JSON.stringify(out, null, 2));
  const devices =
    (out.capabilities as { devices?: { backend: string }[] } | undefined)?.devices?.filter((d) => d.backend === BACKEND)
      .length ?? 0;
  console.log(
    `SUMMARY backend=${BACKEND} devices=${devices} placed_on=${JSON.stringify(out.worker_devices)} sees=${(out.worker_gpu_devices as string[] | undefined)?.length ?? 0} ` +
      `worker=${out.worker_sse_tok_s} tok/s in_process=${out.in_process_tok_s} ratio=${out.ratio} cpu_worker=${out.cpu_worker_tok_s} gpu/cpu=${out.gpu_over_cpu}` +
      `${out.error ? " ERROR" : ""}`,
  );
  process.exit(0);
}
main();
