// The rbee CLI with SSH nodes from an ssh config: real sshd on 127.0.0.2 and 127.0.0.3 (loopback only).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { ensureModel } from "../fixtures/models";
import { AGENT_VERSION } from "../../hive-agent/src/protocol";
import { newRbeeHome, runCli } from "../helpers/cli";
import { startSshdCluster, type SshdCluster } from "../helpers/sshd";

const model = `file:${ensureModel("tiny")}`;

describe("rbee CLI over SSH", () => {
  let cluster: SshdCluster;
  const home = newRbeeHome();
  let env: NodeJS.ProcessEnv;
  let args: string[];

  before(async () => {
    cluster = await startSshdCluster({ nodes: [{ address: "127.0.0.2" }, { address: "127.0.0.3" }] });
    env = { RBEE_HOME: home, RBEE_RUNTIME_INSTALL: "copy" };
    args = ["--ssh-config", cluster.sshConfigPath];
  });
  after(async () => {
    for (const n of ["node1", "node2"]) await runCli(["nodes", "uninstall", n, ...args], env);
    await cluster.stop();
    rmSync(home, { recursive: true, force: true });
  });

  test("nodes list shows localhost and every Host of the ssh config, not yet deployed", async () => {
    const r = await runCli(["nodes", "list", "--json", ...args], env);
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout).nodes;
    assert.deepEqual(
      rows.map((n: any) => n.alias),
      ["localhost", "node1", "node2"],
    );
    assert.equal(rows[1].host, "127.0.0.2");
    assert.equal(rows[1].status, "not deployed");
    assert.equal(rows[1].reachable, true);
  });

  test("infer on an SSH node deploys the hive on first use and streams through the SSH connection", async () => {
    const r = await runCli(
      [
        "infer",
        "--node",
        "node1",
        "--model",
        model,
        "--prompt",
        "def f():",
        "--max-tokens",
        "10",
        "--seed",
        "3",
        "--json",
        ...args,
      ],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.tokens_out, 10);
    assert.equal(out.spawned, true);
    const list = JSON.parse((await runCli(["nodes", "list", "--json", ...args], env)).stdout).nodes;
    const n1 = list.find((n: any) => n.alias === "node1");
    assert.equal(n1.status, "running");
    assert.ok(n1.backends.includes("cpu"));
    // RBEE_NATIVE_BUILD=off (test/run.mjs) reaches the hive the keeper started over SSH.
    assert.deepEqual(n1.native_build?.state, "skipped");
    assert.match(n1.native_build.detail, /turned off/);
    const workers = JSON.parse(
      (await runCli(["workers", "list", "--node", "node1", "--json", ...args], env)).stdout,
    ).workers;
    assert.equal(workers.length, 1);
    assert.equal(workers[0].api_key, undefined, "worker keys are not printed");
    // Warm: the second run reuses the worker on node1.
    const again = JSON.parse(
      (
        await runCli(
          [
            "infer",
            "--node",
            "node1",
            "--model",
            model,
            "--prompt",
            "def f():",
            "--max-tokens",
            "10",
            "--seed",
            "3",
            "--json",
            ...args,
          ],
          env,
        )
      ).stdout,
    );
    assert.equal(again.spawned, false);
    assert.equal(again.text, out.text);
  });

  test("nodes deploy: first deploy, then a no-op; status and logs", async () => {
    const first = await runCli(["nodes", "deploy", "node2", "--json", ...args], env);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(JSON.parse(first.stdout).changed, true);
    assert.equal(JSON.parse(first.stdout).token, undefined, "the token is never printed");
    const again = await runCli(["nodes", "deploy", "node2", ...args], env);
    assert.match(again.stdout, /already runs hive-agent .*nothing to do/);
    const status = JSON.parse((await runCli(["nodes", "status", "node2", "--json", ...args], env)).stdout);
    assert.equal(status.running, true);
    assert.equal(status.healthy, true);
    const logs = await runCli(["logs", "--node", "node2", ...args], env);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /rbee hive .* listening on unix:\/\S+\/hive\.sock/);
  });

  test("an unknown host key is refused unless --accept-new-host-key, which records it", async () => {
    const known = cluster.knownHostsPath;
    const saved = readFileSync(known, "utf8");
    writeFileSync(
      known,
      saved
        .split("\n")
        .filter((l) => !l.includes("127.0.0.3"))
        .join("\n"),
    );
    try {
      const refused = await runCli(["nodes", "status", "node2", ...args], env);
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /SSH_HOST_KEY_UNKNOWN/);
      assert.match(refused.stderr, /SHA256:/);
      const accepted = await runCli(["nodes", "status", "node2", "--accept-new-host-key", ...args], env);
      assert.equal(accepted.code, 0, accepted.stderr);
      assert.match(readFileSync(known, "utf8"), /127\.0\.0\.3/);
    } finally {
      writeFileSync(known, saved);
    }
  });

  test("an alias that is not in the ssh config gets a clear error", async () => {
    const r = await runCli(["infer", "--node", "nosuchhost", "--model", model, "--prompt", "x", ...args], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /NODE_UNKNOWN/);
  });

  test("nodes deploy localhost starts this version's local hive; other node subcommands point at rbee hive", async () => {
    try {
      const r = await runCli(["nodes", "deploy", "localhost", "--json", ...args], env);
      assert.equal(r.code, 0, r.stderr);
      const s = JSON.parse(r.stdout);
      assert.equal(s.running, true);
      assert.equal(s.version, AGENT_VERSION);
      const again = JSON.parse((await runCli(["nodes", "deploy", "localhost", "--json", ...args], env)).stdout);
      assert.deepEqual([again.started, again.pid], [false, s.pid]);
      const status = await runCli(["nodes", "status", "localhost", ...args], env);
      assert.equal(status.code, 2);
      assert.match(status.stderr, /rbee hive start\|stop\|status/);
    } finally {
      await runCli(["hive", "stop"], env);
    }
  });
});
