// The gateway over SSH nodes (real sshd on 127.0.0.2 and 127.0.0.3): `node/model` forces a node, two
// nodes serving one model share its requests, and a node whose worker dies before the first token
// hands its requests to the other node.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { ensureModel } from "../fixtures/models";
import { newRbeeHome, runCli } from "../helpers/cli";
import { gatewayConfigPath, startGateway, until, writeGatewayConfig, type RunningGateway } from "../helpers/gateway";
import { startSshdCluster, type SshdCluster } from "../helpers/sshd";

const model = `file:${ensureModel("tiny")}`;

describe("rbee serve over SSH nodes", () => {
  let cluster: SshdCluster;
  const home = newRbeeHome();
  let env: NodeJS.ProcessEnv;
  let args: string[];
  let gw: RunningGateway;

  before(async () => {
    cluster = await startSshdCluster({ nodes: [{ address: "127.0.0.2" }, { address: "127.0.0.3" }] });
    env = { RBEE_HOME: home, RBEE_RUNTIME_INSTALL: "copy" };
    args = ["--ssh-config", cluster.sshConfigPath];
    writeGatewayConfig(gatewayConfigPath(home), {
      aliases: { tiny: model },
      spawn: { backend: "cpu", threads: 1, slots: 2 },
    });
    gw = await startGateway(args, env);
  });
  after(async () => {
    await gw?.stop();
    for (const n of ["node1", "node2"]) await runCli(["nodes", "uninstall", n, ...args], env);
    await cluster.stop();
    rmSync(home, { recursive: true, force: true });
  });

  const complete = (modelName: string, prompt: string) =>
    gw.fetch("/v1/completions", {
      method: "POST",
      body: JSON.stringify({ model: modelName, prompt, max_tokens: 16, seed: 1 }),
    });

  test("node/model starts and uses a worker on that node (the keeper deploys the hive on first use)", async () => {
    for (const node of ["node1", "node2"]) {
      const r = await complete(`${node}/tiny`, "def f():");
      assert.equal(r.status, 200, await r.clone().text());
      assert.equal(r.headers.get("x-rbee-node"), node);
      assert.equal(((await r.json()) as any).model, `${node}/tiny`);
      const workers = JSON.parse(
        (await runCli(["workers", "list", "--node", node, "--json", ...args], env)).stdout,
      ).workers;
      assert.equal(workers.length, 1);
    }
  });

  test("requests for the model spread over both nodes", async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => complete("tiny", `request ${i}`)));
    assert.ok(answers.every((r) => r.status === 200));
    const nodes = answers.map((r) => r.headers.get("x-rbee-node"));
    assert.deepEqual([...new Set(nodes)].sort(), ["node1", "node2"], nodes.join(","));
  });

  test("a node whose worker dies before the first token: its requests complete on the other node", async () => {
    const [w1] = JSON.parse(
      (await runCli(["workers", "list", "--node", "node1", "--json", ...args], env)).stdout,
    ).workers;
    const failoversBefore = await gw.metric("rbee_gateway_failovers_total");
    // Held still, node1's worker takes requests (both its slots) and says nothing.
    process.kill(w1.pid, "SIGSTOP");
    let answers: Response[];
    try {
      const pending = Array.from({ length: 6 }, (_, i) => complete("tiny", `in flight ${i}`));
      await until(
        "node1 to hold two requests",
        async () => (await gw.metric("rbee_gateway_inflight", { node: "node1", model })) === 2,
      );
      process.kill(w1.pid, "SIGKILL");
      answers = await Promise.all(pending);
    } finally {
      try {
        process.kill(w1.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    for (const r of answers) {
      assert.equal(r.status, 200, await r.clone().text());
      assert.equal(((await r.json()) as any).usage.completion_tokens, 16);
      assert.equal(r.headers.get("x-rbee-node"), "node2");
    }
    assert.equal((await gw.metric("rbee_gateway_failovers_total")) - failoversBefore, 2);
    // The dead worker is forgotten: the next request goes straight to node2.
    const next = await complete("tiny", "after");
    assert.equal(next.status, 200);
    assert.equal(next.headers.get("x-rbee-node"), "node2");
  });
});
