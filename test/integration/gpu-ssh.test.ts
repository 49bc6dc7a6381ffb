// A two-GPU SSH node: a real sshd on 127.0.0.5 whose sessions see two software Vulkan GPUs
// (test/helpers/lavapipe.ts), the hive deployed there by the rbee CLI, workers placed on its GPUs.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { ensureModel } from "../fixtures/models";
import { newRbeeHome, runCli } from "../helpers/cli";
import { softwareGpus } from "../helpers/lavapipe";
import { startSshdCluster, type SshdCluster } from "../helpers/sshd";

const tiny = (seed: number) => `file:${ensureModel("tiny", seed)}`;

describe("rbee CLI with a two-GPU SSH node", () => {
  let cluster: SshdCluster;
  const home = newRbeeHome();
  const env = { RBEE_HOME: home, RBEE_RUNTIME_INSTALL: "copy" };
  let args: string[];
  const cli = async (...a: string[]) => {
    const r = await runCli([...a, ...args], env);
    assert.equal(r.code, 0, `rbee ${a.join(" ")}: ${r.stderr}`);
    return r;
  };

  before(async () => {
    const gpus = softwareGpus(2);
    cluster = await startSshdCluster({
      nodes: [{ alias: "gpubox", address: "127.0.0.5", env: gpus.visible as Record<string, string> }],
    });
    args = ["--ssh-config", cluster.sshConfigPath];
  });
  after(async () => {
    await runCli(["nodes", "uninstall", "gpubox", ...args], env);
    await cluster.stop();
    rmSync(home, { recursive: true, force: true });
  });

  test("two models go to two GPUs without asking; nodes list shows each GPU with its worker; workers stop frees it", async () => {
    await cli("nodes", "deploy", "gpubox", "--idle-timeout", "0");
    for (const seed of [42, 43]) {
      const r = JSON.parse(
        (
          await cli(
            "infer",
            "--node",
            "gpubox",
            "--model",
            tiny(seed),
            "--prompt",
            "x",
            "--max-tokens",
            "2",
            "--context-size",
            "512",
            "--slots",
            "1",
            "--json",
          )
        ).stdout,
      );
      assert.equal(r.tokens_out, 2);
    }
    const workers = JSON.parse((await cli("workers", "list", "--node", "gpubox", "--json")).stdout).workers;
    assert.deepEqual(
      workers.map((w: any) => w.backend),
      ["vulkan", "vulkan"],
    );
    assert.deepEqual(workers.map((w: any) => w.devices[0]).sort(), [0, 1], "both workers on one GPU");
    // The hive was deployed with --idle-timeout 0: its workers are never stopped for idleness.
    assert.deepEqual(
      workers.map((w: any) => w.keep_alive_s),
      [0, 0],
    );

    const node = JSON.parse((await cli("nodes", "list", "--json")).stdout).nodes.find((n: any) => n.alias === "gpubox");
    assert.deepEqual(node.backends, ["vulkan", "cpu"]);
    assert.deepEqual(
      node.gpus.map((g: any) => [g.backend, g.index, g.workers.length]),
      [
        ["vulkan", 0, 1],
        ["vulkan", 1, 1],
      ],
    );
    const table = (await cli("nodes", "list")).stdout;
    assert.match(table, /vulkan:0 llvmpipe[^;]* GiB free \[w-[0-9a-f]+\]; vulkan:1 llvmpipe/);

    const health = JSON.parse((await cli("workers", "health", "--node", "gpubox", "--json")).stdout).workers;
    assert.deepEqual(
      health.map((h: any) => h.answered),
      [true, true],
    );

    const first = workers.find((w: any) => w.devices[0] === 0);
    await cli("workers", "stop", first.id, "--node", "gpubox");
    const after = JSON.parse((await cli("nodes", "list", "--json")).stdout).nodes.find(
      (n: any) => n.alias === "gpubox",
    );
    assert.deepEqual(
      after.gpus.map((g: any) => g.workers.length),
      [0, 1],
    );
    const second = workers.find((w: any) => w.devices[0] === 1);
    await cli("workers", "shutdown", "--id", second.id, "--node", "gpubox");
    const none = JSON.parse((await cli("nodes", "list", "--json")).stdout).nodes.find((n: any) => n.alias === "gpubox");
    assert.deepEqual(
      none.gpus.map((g: any) => g.workers.length),
      [0, 0],
    );
  });

  test("placement and keep-alive flags are checked before anything starts (exit 2 with what to type)", async () => {
    const bad = [
      [["--keep-alive", "soon"], /--keep-alive must be seconds or a duration like 30s, 5m, 2h \(0 = never\)/],
      [["--device", "1", "--devices", "0,1"], /give either --device or --devices/],
      [["--devices", "0,x"], /--devices must be an integer/],
    ] as const;
    for (const [flags, message] of bad) {
      const r = await runCli(
        ["infer", "--node", "gpubox", "--model", tiny(42), "--prompt", "x", ...flags, ...args],
        env,
      );
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
    }
    const r = await runCli(["hive", "start", "--idle-timeout", "forever"], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--idle-timeout must be/);
  });
});
