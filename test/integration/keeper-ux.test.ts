// The keeper on behalf of the editor UI, against a real local hive and worker: Cancel during a cold
// start stops the worker that was loading (and says so), and fitContext lowers a max_tokens the
// worker's context cannot hold instead of failing with advice no setting can follow.
import { test } from "node:test";
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import path from "node:path";
import { RbeeError } from "../../hive-agent/src/protocol";
import { Keeper, type KeeperEvent } from "../../extension/src/keeper/keeper";
import { LocalConnector } from "../../extension/src/keeper/local-connector";
import { LocalHive } from "../../extension/src/keeper/local-hive";
import { Registry } from "../../extension/src/keeper/registry";
import { ensureModel } from "../fixtures/models";
import { newRbeeHome } from "../helpers/cli";
import { AGENT_BUNDLE } from "../helpers/hive";
import { waitUntil } from "../helpers/wait";

async function withKeeper(fn: (keeper: Keeper, connector: LocalConnector, registry: Registry) => Promise<void>) {
  const home = newRbeeHome();
  const registry = await Registry.open(path.join(home, "registry.sqlite"));
  const local = new LocalHive({ home: path.join(home, "hive"), agentScript: AGENT_BUNDLE });
  const connector = new LocalConnector(local, registry);
  try {
    await fn(new Keeper({ registry, nodes: connector }), connector, registry);
  } finally {
    await local.stop();
    registry.close();
    await local.close();
    rmSync(home, { recursive: true, force: true });
  }
}

test("Cancel while the worker is being spawned stops it instead of letting it load for nobody", async () => {
  await withKeeper(async (keeper, connector, registry) => {
    const spec = { node: "localhost", model: `file:${ensureModel("tiny")}`, threads: 2 };
    const abort = new AbortController();
    // Cancel the moment the spawn request goes out: the signal is already aborted when loading begins.
    const onEvent = (e: KeeperEvent) => {
      if (e.kind === "phase" && e.phase === "spawn" && e.status === "started") abort.abort();
    };
    await assert.rejects(keeper.ensureWorker(spec, onEvent, abort.signal), (e: unknown) => {
      assert.ok(e instanceof RbeeError, String(e));
      assert.equal(e.code, "REQUEST_CANCELLED");
      assert.match(e.message, /stopped/);
      return true;
    });
    const hive = (await connector.connect("localhost", () => {})).hive;
    await waitUntil(async () => (await hive.workers()).every((w) => w.state === "stopping"), {
      timeout: 30_000,
      what: "the cancelled worker to stop",
    });
    assert.deepEqual(await registry.listWorkers({ node: "localhost" }), [], "the cancelled worker is not registered");
  });
});

test("fitContext lowers max_tokens to what the worker's context holds, and says by how much", async () => {
  await withKeeper(async (keeper) => {
    const spec = { node: "localhost", model: `file:${ensureModel("tiny")}`, threads: 2, contextSize: 128 };
    const gen = { kind: "inference" as const, prompt: "Once upon a time", max_tokens: 5000, seed: 1 };
    // Without it the worker refuses, naming the prompt's tokens and its context.
    let context = 0;
    await assert.rejects(keeper.generate(spec, gen), (e: unknown) => {
      assert.ok(e instanceof RbeeError && e.code === "INVALID_REQUEST", String(e));
      context = Number(e.details?.context_size);
      return context >= 128; // llama.cpp may round the context up
    });
    const result = await keeper.generate(spec, gen, { fitContext: true });
    assert.ok(result.maxTokensCapped, "the result says max_tokens was capped");
    assert.equal(result.maxTokensCapped.requested, 5000);
    assert.equal(result.maxTokensCapped.contextSize, context);
    assert.ok(result.maxTokensCapped.used > 0 && result.maxTokensCapped.used < context);
    assert.ok(result.tokensOut <= result.maxTokensCapped.used);
  });
});
