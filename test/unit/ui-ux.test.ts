// The newcomer's rough edges (issue 17), in the vscode-free parts: a typed ref in the model picker
// and the suggested models, the end-of-Infer summary ("1 token", the max-tokens note), the tree's
// models beside a file: worker, tooltips that explain the jargon, the first-run case, downloads in
// the tree, the download narration, and Clear + Undo in the chat.
import { test } from "node:test";
import assert from "node:assert/strict";
import { modelRefProblem, SUGGESTED_MODELS, typedRefChoice } from "../../extension/src/ui-core/infer/model-choices";
import { capNote, generatingText, inferSummary } from "../../extension/src/ui-core/infer/infer-summary";
import {
  downloadText,
  isFirstRun,
  modelsShown,
  plural,
  workerTooltip,
} from "../../extension/src/ui-core/nodes/node-format";
import { uncheckedSnapshot, type NodeSnapshot, type WorkerView } from "../../extension/src/ui-core/nodes/node-snapshot";
import { progressStep } from "../../extension/src/ui-core/narration";
import { ChatController, type ChatTurn } from "../../extension/src/ui-core/chat/chat-controller";

const worker: WorkerView = {
  id: "w-7fb81255",
  model_ref: "file:/models/tiny.gguf",
  url: "http://127.0.0.1:1",
  pid: 4242,
  backend: "cpu",
  device: 0,
  state: "idle",
  slots_total: 2,
  slots_busy: 0,
  context_size: 4096,
  threads: 2,
  last_activity: 0,
  memory_bytes: 1,
  keep_alive_s: 300,
} as WorkerView;

test("the model picker takes a typed, valid ref the list does not hold (Enter uses it)", () => {
  assert.equal(typedRefChoice("  hf:owner/repo/model.gguf ", []), "hf:owner/repo/model.gguf");
  assert.equal(
    typedRefChoice("file:/abs/tiny.gguf", ["file:/abs/tiny.gguf"]),
    undefined,
    "already listed: the listed item is picked",
  );
  assert.equal(typedRefChoice("tiny", []), undefined, "a filter word is not a ref");
  assert.equal(typedRefChoice("", []), undefined);
  for (const m of SUGGESTED_MODELS)
    assert.equal(modelRefProblem(m.ref), undefined, `suggested ${m.ref} must be a valid ref`);
  assert.ok(SUGGESTED_MODELS.length >= 1);
});

test("the Infer summary counts tokens in good English and explains a capped max tokens", () => {
  assert.equal(generatingText(1), "generating: 1 token");
  assert.equal(generatingText(2), "generating: 2 tokens");
  assert.equal(plural(1, "token"), "1 token");
  const s = inferSummary({ tokensOut: 1, stopReason: "eos", decodeMs: 0, spawned: false }, "tiny.gguf");
  assert.match(s, /^rbee: 1 token from tiny\.gguf; the model finished\.$/);
  const capped = inferSummary(
    {
      tokensOut: 200,
      stopReason: "max_tokens",
      decodeMs: 2000,
      spawned: true,
      maxTokensCapped: { requested: 32768, used: 4000, contextSize: 4096 },
    },
    "tiny.gguf",
  );
  assert.match(capped, /200 tokens from tiny\.gguf at 100\.0 tokens\/s; reached max tokens \(after a cold start\)\./);
  assert.match(capped, /lowered from 32768 to 4000/);
  assert.match(capNote({ requested: 5000, used: 100, contextSize: 256 }), /Start Worker/);
});

test("the tree lists a model a worker runs from a file, so Models is never (0) beside it", () => {
  assert.deepEqual(
    modelsShown({ models: [], workers: [worker] }).map((m) => [m.model_ref, m.size_bytes]),
    [["file:/models/tiny.gguf", -1]],
  );
  const catalogued = { model_ref: "hf:a/b/c.gguf", local_path: "/x/c.gguf", size_bytes: 10 };
  const shown = modelsShown({
    models: [catalogued],
    workers: [{ ...worker, model_ref: "hf:a/b/c.gguf" }, worker, { ...worker, id: "w-2" }],
  });
  assert.deepEqual(
    shown.map((m) => m.model_ref),
    ["hf:a/b/c.gguf", "file:/models/tiny.gguf"],
    "each model once",
  );
});

test("a worker's tooltip explains its id, slots, context and where it runs", () => {
  const t = workerTooltip(worker);
  assert.match(t, /w-7fb81255: rbee's name for the process/);
  assert.match(t, /a slot is one request served at a time/);
  assert.match(t, /4096 tokens per slot/);
  assert.match(t, /Runs on the CPU \(shown as "cpu"\)/);
  assert.match(
    workerTooltip({ ...worker, backend: "vulkan", device: 1, devices: [1] }),
    /vulkan GPU 1 \(shown as "vulkan:1"\)/,
  );
});

test("the first run (localhost only, its hive never started, nothing on it) leaves the tree empty for the welcome view", () => {
  const local = uncheckedSnapshot(
    { name: "localhost", host: "127.0.0.1", transport: "loopback" } as NodeSnapshot["node"],
    0,
  );
  const fresh: NodeSnapshot = { ...local, status: "not-deployed" };
  assert.equal(isFirstRun([fresh], 0, 0), true);
  assert.equal(isFirstRun([{ ...fresh, status: "running" }], 0, 0), false);
  assert.equal(isFirstRun([fresh], 0, 1), false, "something is being started");
  assert.equal(
    isFirstRun(
      [fresh, { ...fresh, node: { ...fresh.node, name: "gpu1", transport: "ssh" } as NodeSnapshot["node"] }],
      0,
      0,
    ),
    false,
  );
  assert.equal(isFirstRun([fresh], 1, 0), false, "a broken ssh config is shown, not hidden");
});

test("downloads in the tree and in the notification say what happens, and a failure is not called an interruption", () => {
  assert.equal(
    downloadText({
      stage: "downloading",
      bytes_downloaded: 512 * 1024 * 1024,
      bytes_total: 1024 * 1024 * 1024,
      speed_bps: 1,
      attempt: 1,
    }),
    "50% of 1.0 GiB",
  );
  assert.equal(downloadText({ stage: "verifying" }), "verifying");
  assert.equal(downloadText({ stage: "complete", local_path: "/x", size_bytes: 1, sha256: "a" }), undefined);
  const retry = progressStep({
    kind: "download",
    event: {
      stage: "retrying",
      attempt: 1,
      max_attempts: 6,
      delay_ms: 1000,
      message: "https://hf.co did not answer within 30 s",
    },
  });
  assert.equal(retry?.message, "download attempt 1/6 failed (https://hf.co did not answer within 30 s); retrying");
});

test("Clear empties the chat and Undo puts the conversation back", async () => {
  let saved: ChatTurn[] = [];
  const store = { load: () => [], save: (t: ChatTurn[]) => void (saved = t) };
  const chat = new ChatController(store, async (_m, _msgs, onToken) => {
    onToken("hi");
    return { stopReason: "eos" };
  });
  await chat.send("hello", "m");
  const before = await chat.clear();
  assert.equal(chat.turns.length, 0);
  assert.deepEqual(saved, []);
  assert.equal(before.length, 2);
  assert.equal(await chat.restore(before), true);
  assert.deepEqual(
    chat.turns.map((t) => t.content),
    ["hello", "hi"],
  );
  assert.equal(saved.length, 2, "the restored conversation is stored again");
});
