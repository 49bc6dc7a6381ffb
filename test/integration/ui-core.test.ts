// The extension's VS Code-independent core against real processes: the keeper stack the extension
// builds (RbeeServices: registry file, local hive started detached from dist/hive-agent.js, a real
// worker with a generated tiny model), the inline completion engine, the chat over /v1/chat, and
// the localhost node controller behind the Remote Nodes view.
import { test, before, after, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { ensureModel } from "../fixtures/models";
import { isAlive } from "../helpers/hive";
import { waitUntil } from "../helpers/wait";
import type { RbeeServices, Logger } from "../../extension/src/ui-core/services";
import { openTestServices, type TestServices } from "../helpers/services";
import {
  CompletionEngine,
  DEFAULT_ENGINE_SETTINGS,
  type EngineSettings,
  type EngineState,
} from "../../extension/src/ui-core/inline/completion-engine";
import { KeeperCompletionBackend } from "../../extension/src/ui-core/inline/keeper-backend";
import { ChatController } from "../../extension/src/ui-core/chat/chat-controller";
import { ChatService } from "../../extension/src/ui-core/chat/chat-service";
import type { ChatTurn } from "../../extension/src/ui-core/chat/chat-controller";

const logLines: string[] = [];
const log: Logger = {
  trace: (m) => logLines.push(m),
  info: (m) => logLines.push(m),
  warn: (m) => logLines.push(m),
  error: (m) => logLines.push(m),
};

describe("extension core on a real local hive", () => {
  let stack: TestServices;
  let home: string;
  let services: RbeeServices;
  const model = `file:${ensureModel("tiny")}`;
  let workerId: string;

  before(async () => {
    stack = openTestServices("rbee-ui-core-", log);
    ({ home, services } = stack);
  });

  after(async () => stack.close());

  test("the localhost controller reports the hive as not running, without starting it", async () => {
    const controller = await services.controller("localhost");
    const snapshot = await controller.probe();
    assert.equal(snapshot.status, "not-deployed");
    assert.equal(existsSync(path.join(home, "hive", "hive.json")), false, "probing must not start the hive");
    await assert.rejects(services.controller("gpu1"), /unknown node "gpu1"/);
  });

  test("deploy starts the local hive (from dist/, node-llama-cpp found next to it); the probe then shows it running", async () => {
    const controller = await services.controller("localhost");
    const phases: string[] = [];
    await controller.deploy(
      (e) => e.kind === "phase" && phases.push(e.message),
      () => {},
    );
    assert.ok(
      phases.some((m) => /starting the local hive/.test(m)),
      phases.join("; "),
    );
    const info = JSON.parse(readFileSync(path.join(home, "hive", "hive.json"), "utf8"));
    assert.ok(isAlive(info.pid));
    const snapshot = await controller.probe();
    assert.equal(snapshot.status, "running", snapshot.reason);
    assert.ok(snapshot.agentVersion);
    assert.ok(snapshot.backends.includes("cpu"));
    assert.deepEqual(snapshot.workers, []);
  });

  test("with no worker running, completions say so instead of starting one", async () => {
    const states: EngineState[] = [];
    const engine = new CompletionEngine(
      new KeeperCompletionBackend(() => services.keeper()),
      () => ({ ...DEFAULT_ENGINE_SETTINGS, debounceMs: 0 }),
      (s) => states.push(s),
    );
    const outcome = await engine.complete({
      editor: "a",
      languageId: "python",
      before: "def f():\n    return ",
      after: "\n",
    });
    assert.equal(outcome.source, "skipped");
    assert.match(outcome.reason!, /no ready worker/);
    assert.equal(states.at(-1)?.kind, "no-worker");
    const { registry } = await services.get();
    assert.deepEqual(await registry.listWorkers(), []);
  });

  test("a worker started through the keeper shows in the probe with its model, and in the registry", async () => {
    const keeper = await services.keeper();
    const { worker, spawned } = await keeper.ensureWorker({ node: "localhost", model, slots: 2 });
    assert.equal(spawned, true);
    workerId = worker.id;
    const snapshot = await (await services.controller("localhost")).probe();
    assert.deepEqual(
      snapshot.workers.map((w) => [w.id, w.model_ref]),
      [[workerId, model]],
    );
    assert.equal(JSON.stringify(snapshot).includes(worker.api_key), false, "snapshots carry no worker key");
  });

  describe("inline completions", () => {
    let engine: CompletionEngine;
    let settings: EngineSettings;
    const states: EngineState[] = [];
    const prefix = "def add(a, b):\n    return ";
    const suffix = "\n\nprint(add(1, 2))\n";

    before(() => {
      settings = { ...DEFAULT_ENGINE_SETTINGS, debounceMs: 0, maxTokens: 12 };
      engine = new CompletionEngine(
        new KeeperCompletionBackend(() => services.keeper()),
        () => settings,
        (s) => states.push(s),
      );
    });

    test("the first ready worker answers /v1/infill; the suggestion is cached and served without a request", async () => {
      const first = await engine.complete({ editor: "doc1", languageId: "python", before: prefix, after: suffix });
      assert.equal(first.source, "worker", first.reason);
      assert.ok(first.text && first.text.trim().length > 0);
      assert.ok(first.workerMs! > 0 && first.workerMs! < first.totalMs);
      const idle = states.at(-1);
      assert.equal(idle?.kind, "idle");
      assert.equal(idle?.kind === "idle" && idle.target?.model, model);

      const again = await engine.complete({ editor: "doc1", languageId: "python", before: prefix, after: suffix });
      assert.equal(again.source, "cache");
      assert.equal(again.text, first.text);
      assert.ok(again.totalMs < 5, `cache hit took ${again.totalMs} ms`);

      // The user types the first character of the suggestion: the rest comes from the cache.
      const typed = await engine.complete({
        editor: "doc1",
        languageId: "python",
        before: prefix + first.text![0],
        after: suffix,
      });
      assert.equal(typed.source, "cache");
      assert.equal(typed.text, first.text!.slice(1));
    });

    test("a newer request for the same editor cancels the older one on the worker", async () => {
      settings = { ...settings, maxTokens: 4000 };
      const long = engine.complete({ editor: "doc2", languageId: "python", before: "x = [", after: "]\n" });
      // The long generation holds a slot on the worker before the newer request arrives.
      const hive = await (await services.controller("localhost")).hive(false);
      const busy = async () => ((await hive.workers()).find((x) => x.id === workerId)?.slots_busy ?? 0) > 0;
      await waitUntil(busy, { timeout: 30_000, what: "the long generation to start on the worker" });
      const t0 = Date.now();
      settings = { ...settings, maxTokens: 4 };
      const newer = await engine.complete({ editor: "doc2", languageId: "python", before: "y = (", after: ")\n" });
      const older = await long;
      assert.equal(older.source, "cancelled");
      assert.equal(newer.source === "worker" || newer.source === "skipped", true, JSON.stringify(newer));
      // 4000 tokens take seconds; the cancelled one ended long before that and freed its slot.
      assert.ok(Date.now() - t0 < 3000);
      // The newer suggestion's prefetch (the one after it) may still hold a slot for a moment.
      await waitUntil(() => !engine.prefetching("doc2"), {
        timeout: 30_000,
        what: "the prefetch after the newer suggestion",
      });
      assert.equal(await busy(), false, "the cancelled generation no longer holds a slot");
    });

    test("VS Code's cancellation during the debounce sends nothing", async () => {
      settings = { ...settings, debounceMs: 5_000 };
      const cancel = new AbortController();
      const pending = engine.complete({
        editor: "doc3",
        languageId: "python",
        before: "z = ",
        after: "\n",
        signal: cancel.signal,
      });
      cancel.abort();
      const outcome = await pending;
      assert.equal(outcome.source, "cancelled");
      assert.ok(outcome.totalMs < 1000);
      settings = { ...settings, debounceMs: 0 };
    });

    test("a disabled language and the off switch skip without asking the worker", async () => {
      settings = { ...settings, disabledLanguages: ["python"] };
      assert.equal(
        (await engine.complete({ editor: "d", languageId: "python", before: "q = ", after: "" })).source,
        "skipped",
      );
      settings = { ...settings, disabledLanguages: [], enabled: false };
      assert.equal(
        (await engine.complete({ editor: "d", languageId: "python", before: "q = ", after: "" })).reason,
        "disabled",
      );
      assert.equal(states.at(-1)?.kind, "off");
      settings = { ...settings, enabled: true };
    });

    test("a configured model without a worker is started in the background; completions resume when it is ready", async () => {
      const other = `file:${ensureModel("tiny", 43)}`;
      settings = { ...settings, model: other, node: "localhost", maxTokens: 6 };
      const first = await engine.complete({
        editor: "doc4",
        languageId: "python",
        before: "def g():\n    ",
        after: "\n",
      });
      assert.equal(first.source, "skipped");
      assert.match(first.reason!, /starting a worker/);
      assert.equal(states.at(-1)?.kind, "warming");
      let outcome = first;
      await waitUntil(
        async () => {
          outcome = await engine.complete({
            editor: "doc4",
            languageId: "python",
            before: "def g():\n    ",
            after: "\n",
          });
          return outcome.source === "worker";
        },
        { timeout: 60_000, intervalMs: 200, what: "completions from the background-started worker" },
      );
      const { registry } = await services.get();
      assert.ok((await registry.listWorkers({ model_ref: other })).length === 1);
      // Stop it again: the rest of the suite expects one worker.
      const hive = await (await services.controller("localhost")).hive(false);
      for (const w of await registry.listWorkers({ model_ref: other })) {
        await hive.shutdown(w.id);
        await registry.removeWorker(w.id);
      }
      settings = { ...settings, model: "", node: "" };
    });
  });

  describe("chat", () => {
    const store = () => {
      const s = { turns: [] as ChatTurn[], load: () => s.turns, save: (t: ChatTurn[]) => void (s.turns = t) };
      return s;
    };

    test("a reply streams over /v1/chat into the conversation and is saved", async () => {
      const history = store();
      const service = new ChatService(
        services,
        () => ({ node: "localhost", model, maxTokens: 16, temperature: 0.7 }),
        () => {},
      );
      const chat = new ChatController(history, service.generate);
      let updates = 0;
      chat.onChange((c) => c.kind === "turn" && c.turn.role === "assistant" && updates++);
      const reply = await chat.send("Write a haiku about bees.", model);
      assert.equal(reply.status, "done", reply.error);
      assert.ok(reply.content.length > 0);
      assert.ok(updates >= 16, `expected an update per token, got ${updates}`);
      assert.deepEqual(
        history.turns.map((t) => t.role),
        ["user", "assistant"],
      );
      assert.deepEqual(await service.models([]), [model]);
    });

    test("Stop cancels the reply on the worker and keeps what was written", async () => {
      const service = new ChatService(
        services,
        () => ({ node: "localhost", model, maxTokens: 3500, temperature: 0.7 }),
        () => {},
      );
      const chat = new ChatController(store(), service.generate);
      let first: (() => void) | undefined;
      const started = new Promise<void>((r) => (first = r));
      chat.onChange((c) => c.kind === "turn" && c.turn.role === "assistant" && c.turn.content && first?.());
      const pending = chat.send("Tell me everything.", model);
      await Promise.race([started, pending]);
      const t0 = Date.now();
      chat.stop();
      const reply = await pending;
      assert.equal(reply.status, "stopped", reply.error);
      assert.ok(reply.content.length > 0);
      assert.ok(Date.now() - t0 < 1000, `the stop took ${Date.now() - t0} ms to end the stream`);
      // The worker confirms: its slot is free again, long before 3500 tokens could have been generated.
      const hive = await (await services.controller("localhost")).hive(false);
      assert.equal((await hive.workers()).find((w) => w.id === workerId)?.slots_busy, 0);
    });
  });

  test("stopping the worker through the hive removes it from the probe and the registry", async () => {
    const controller = await services.controller("localhost");
    const hive = await controller.hive(false);
    await hive.shutdown(workerId);
    const snapshot = await controller.probe();
    assert.deepEqual(
      snapshot.workers.map((w) => w.id),
      [],
    );
    const { registry } = await services.get();
    assert.deepEqual(
      (await registry.listWorkers()).map((w) => w.id),
      [],
    );
    assert.equal(
      logLines.some((l) => /Bearer|api_key/.test(l)),
      false,
    );
  });
});
