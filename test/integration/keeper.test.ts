// The keeper in a long-lived process (as in the extension host): it survives its node's hive dying
// between two generations — the stale worker and the stale connection are both dropped, and the
// second generation runs on a fresh hive and worker.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import path from "node:path";
import { Keeper } from "../../extension/src/keeper/keeper";
import { LocalConnector } from "../../extension/src/keeper/local-connector";
import { LocalHive } from "../../extension/src/keeper/local-hive";
import { Registry } from "../../extension/src/keeper/registry";
import { ensureModel } from "../fixtures/models";
import { newRbeeHome } from "../helpers/cli";
import { AGENT_BUNDLE, isAlive } from "../helpers/hive";
import { waitUntil } from "../helpers/wait";

test("a keeper whose hive died between two generations reconnects, respawns and streams", async () => {
  const home = newRbeeHome();
  const registry = await Registry.open(path.join(home, "registry.sqlite"));
  const local = new LocalHive({ home: path.join(home, "hive"), agentScript: AGENT_BUNDLE });
  const keeper = new Keeper({ registry, nodes: new LocalConnector(local, registry) });
  const spec = { node: "localhost", model: `file:${ensureModel("tiny")}` };
  const gen = { kind: "inference" as const, prompt: "x", max_tokens: 4, seed: 1 };
  try {
    const first = await keeper.generate(spec, gen);
    assert.equal(first.spawned, true);
    const { pid } = await local.status();
    process.kill(pid!, "SIGKILL");
    await waitUntil(() => !isAlive(pid!), { timeout: 10_000, what: "the killed hive to exit" });
    const second = await keeper.generate(spec, gen);
    assert.equal(second.tokensOut, 4);
    assert.equal(second.spawned, true, "a new worker on a new hive");
    assert.notEqual(second.workerId, first.workerId);
    assert.equal(await registry.getWorker(first.workerId), undefined, "the dead worker left the registry");
  } finally {
    await local.stop();
    registry.close();
    await local.close();
    rmSync(home, { recursive: true, force: true });
  }
});
