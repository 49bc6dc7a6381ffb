// Pure parts of the Remote Nodes view, the pickers and the log: node list, formatting, when a
// probe is written to the registry, model choices, narration and secret redaction.
import { test } from "node:test";
import assert from "node:assert/strict";
import { NodeList, type NodeSource } from "../../extension/src/ui-core/nodes/node-list";
import {
  deviceDescription,
  formatBytes,
  modelShortName,
  nodeDescription,
  nodeTooltip,
  workerDescription,
} from "../../extension/src/ui-core/nodes/node-format";
import {
  reconcileReported,
  registryNeedsSync,
  shouldAutoProbe,
  uncheckedSnapshot,
  UNREACHABLE_RETRY_MS,
  withoutKeys,
  type NodeSnapshot,
} from "../../extension/src/ui-core/nodes/node-snapshot";
import { modelChoices, modelRefProblem, rememberRecent } from "../../extension/src/ui-core/infer/model-choices";
import { eventLogLine, progressStep, redactSecrets } from "../../extension/src/ui-core/narration";
import type { WorkerInfo } from "../../hive-agent/src/protocol";
import type { WorkerRecord } from "../../extension/src/keeper/registry-types";

test("node list: localhost first, sources deduplicated, a broken source reported but not fatal", async () => {
  const ssh: NodeSource = {
    description: "~/.ssh/config",
    list: async () => [
      { name: "gpu1", host: "10.0.0.5", transport: "ssh" },
      { name: "localhost", host: "x", transport: "ssh" },
    ],
  };
  const broken: NodeSource = {
    description: "broken",
    list: async () => {
      throw new Error("bad Include");
    },
  };
  const { nodes, errors } = await new NodeList([ssh, broken]).list();
  assert.deepEqual(
    nodes.map((n) => n.name),
    ["localhost", "gpu1"],
  );
  assert.equal(nodes[0].transport, "loopback");
  assert.deepEqual(errors, [{ source: "broken", message: "bad Include" }]);
});

const worker: WorkerInfo = {
  id: "w1",
  url: "http://127.0.0.1:4000",
  model_ref: "hf:org/repo/coder-1.5b-q8_0.gguf",
  backend: "cuda",
  device: 0,
  devices: [0],
  memory_bytes: 2 ** 30,
  keep_alive_s: 300,
  state: "idle",
  slots_total: 4,
  slots_busy: 1,
  context_size: 4096,
  threads: 1,
  last_activity: 0,
  pid: 42,
  api_key: "secret-key",
  last_tokens_per_second: 87.25,
};

test("formatting of nodes, GPUs, workers and model names", () => {
  assert.equal(formatBytes(512), "512 B");
  assert.equal(formatBytes(24 * 2 ** 30), "24.0 GiB");
  assert.equal(formatBytes(300 * 2 ** 20), "300 MiB");
  assert.equal(modelShortName("hf:org/repo/coder-1.5b-q8_0.gguf"), "coder-1.5b-q8_0.gguf");
  assert.equal(modelShortName("file:/models/tiny.gguf"), "tiny.gguf");
  assert.equal(modelShortName("https://h/x/y.gguf?download=1"), "y.gguf");
  assert.equal(
    deviceDescription({
      backend: "cuda",
      index: 0,
      name: "RTX",
      vram_total_bytes: 24 * 2 ** 30,
      vram_free_bytes: 20 * 2 ** 30,
    }),
    "▰▰▱▱▱▱▱▱▱▱ 20.0 GiB free of 24.0 GiB",
  );
  assert.equal(workerDescription(worker), "idle · 1/4 slots · cuda:0 · 87.3 tok/s");
  assert.equal(
    workerDescription({ ...worker, state: "loading", progress: 0.42, last_tokens_per_second: undefined }),
    "loading 42% · 1/4 slots · cuda:0",
  );
  const base: NodeSnapshot = {
    node: { name: "localhost", host: "127.0.0.1", transport: "loopback" },
    status: "running",
    agentVersion: "0.1.0",
    backends: ["cpu"],
    devices: [],
    workers: [],
    models: [],
    checkedAt: 0,
  };
  assert.equal(nodeDescription(base), "running · v0.1.0 · cpu");
  const tip = nodeTooltip({
    ...base,
    nativeBuild: { state: "building", detail: "building llama.cpp for this CPU in the background" },
  }).split("\n");
  assert.deepEqual(tip.slice(0, 3), ["localhost (127.0.0.1, local)", "Status: running", "hive-agent 0.1.0"]);
  assert.ok(tip.includes("CPU build: building (building llama.cpp for this CPU in the background)"), tip.join(" | "));
  assert.ok(!nodeTooltip(base).includes("CPU build"), "no line when the hive did not say");
  const calibrated = nodeTooltip({
    ...base,
    cpuCalibration: { state: "ready", detail: "…", threads: 1, winner: "prebuilt:zen4", winner_tokens_per_second: 412 },
  }).split("\n");
  assert.ok(calibrated.includes("CPU binary: prebuilt:zen4 412 tok/s (1 thread)"), calibrated.join(" | "));
  const measuring = nodeTooltip({
    ...base,
    cpuCalibration: {
      state: "measuring",
      detail: "measuring 3 CPU binaries at 2 thread(s) in the background",
      threads: 2,
    },
  });
  assert.ok(
    measuring.includes("CPU binary: measuring (measuring 3 CPU binaries at 2 thread(s) in the background)"),
    measuring,
  );
  assert.equal(
    nodeDescription({ ...base, status: "not-deployed", reason: "start it with Deploy" }),
    "hive not running · start it with Deploy",
  );
  assert.equal(
    nodeDescription({
      ...base,
      node: { name: "gpu1", host: "h", transport: "ssh" },
      status: "unreachable",
      reason: "ECONNREFUSED",
    }),
    "unreachable · ECONNREFUSED",
  );
});

test("snapshots carry no worker keys", () => {
  const [w] = withoutKeys([worker]);
  assert.equal("api_key" in w, false);
  assert.equal(JSON.stringify(w).includes("secret-key"), false);
});

test("a probe is written to the registry only when it changes what the keeper relies on", () => {
  const record: WorkerRecord = {
    id: "w1",
    node: "localhost",
    model_ref: worker.model_ref,
    url: worker.url,
    backend: "cuda",
    device: 0,
    state: "idle",
    slots_total: 4,
    api_key: "k",
    last_health_at: 1,
    created_at: 1,
    last_tokens_per_second: null,
  };
  const model = { node: "localhost", model_ref: "m.gguf", local_path: "/m", size_bytes: 1, sha256: null };
  const reportedModel = { model_ref: "m.gguf", local_path: "/m", size_bytes: 1 };
  assert.equal(
    registryNeedsSync({ workers: [record], models: [model] }, { workers: [worker], models: [reportedModel] }),
    false,
  );
  assert.equal(
    registryNeedsSync(
      { workers: [record], models: [model] },
      { workers: [{ ...worker, state: "busy" }], models: [reportedModel] },
    ),
    true,
  );
  assert.equal(
    registryNeedsSync({ workers: [record], models: [model] }, { workers: [], models: [reportedModel] }),
    true,
  );
  assert.equal(
    registryNeedsSync(
      { workers: [record], models: [model] },
      { workers: [worker], models: [{ ...reportedModel, model_ref: "other.gguf" }] },
    ),
    true,
  );
});

test("model choices: running, catalog, recent, configured — each once, in that order", () => {
  const c = modelChoices({ configured: ["a", "d"], recent: ["c", "a"], catalog: ["b", "c"], running: ["a"] });
  assert.deepEqual(c, [
    { ref: "a", source: "running" },
    { ref: "b", source: "catalog" },
    { ref: "c", source: "catalog" },
    { ref: "d", source: "configured" },
  ]);
  assert.deepEqual(rememberRecent(["x", "y", "z"], "y", 2), ["y", "x"]);
});

test("typed model refs are checked with the protocol's parser", () => {
  assert.equal(modelRefProblem("hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF"), undefined);
  assert.equal(modelRefProblem("file:/abs/model.gguf"), undefined);
  assert.match(modelRefProblem("file:relative.gguf")!, /absolute path/);
  assert.match(modelRefProblem("ftp://x/y.gguf")!, /unknown scheme/);
  assert.match(modelRefProblem(" ")!, /Type a model/);
});

test("narration: log lines and progress text for keeper events", () => {
  assert.equal(
    eventLogLine({ kind: "phase", phase: "spawn", status: "started", message: "starting a worker for m" }),
    "[spawn] starting a worker for m",
  );
  assert.equal(
    eventLogLine({
      kind: "download",
      event: { stage: "downloading", bytes_downloaded: 1, bytes_total: 2, speed_bps: 1, attempt: 1 },
    }),
    undefined,
  );
  assert.deepEqual(
    progressStep({
      kind: "download",
      event: {
        stage: "downloading",
        bytes_downloaded: 2 ** 20,
        bytes_total: 4 * 2 ** 20,
        speed_bps: 2 ** 20,
        attempt: 1,
      },
    }),
    {
      message: "downloading 25%: 1.0 MiB of 4.0 MiB at 1.0 MiB/s",
    },
  );
  assert.deepEqual(progressStep({ kind: "loading", progress: 0.5 }), { message: "loading the model 50%" });
  assert.equal(progressStep({ kind: "phase", phase: "ready", status: "done", message: "x" }), undefined);
});

test("secrets are redacted from log text", () => {
  const line = redactSecrets(
    'GET /v1/workers Authorization: Bearer abc.DEF-123 {"api_key":"k3y","token": "t0k"} password=hunter2',
  );
  for (const secret of ["abc.DEF-123", "k3y", "t0k", "hunter2"])
    assert.ok(!line.includes(secret), `${secret} leaked: ${line}`);
  assert.match(line, /Bearer \[redacted\]/);
});

test("the automatic refresh probes localhost always, SSH hosts only once used, unreachable ones once a minute", () => {
  const local = { name: "localhost", host: "127.0.0.1", transport: "loopback" as const };
  const gpu = { name: "gpu1", host: "10.0.0.5", transport: "ssh" as const };
  const now = 1_000_000;
  assert.equal(shouldAutoProbe(local, false, undefined, now), true);
  assert.equal(shouldAutoProbe(gpu, false, undefined, now), false, "a host rbee never used is not contacted unasked");
  assert.equal(shouldAutoProbe(gpu, true, undefined, now), true);
  const down: NodeSnapshot = { ...uncheckedSnapshot(gpu, now - 1000), status: "unreachable", reason: "ECONNREFUSED" };
  assert.equal(shouldAutoProbe(gpu, true, down, now), false);
  assert.equal(shouldAutoProbe(gpu, true, { ...down, checkedAt: now - UNREACHABLE_RETRY_MS - 1 }, now), true);
  assert.equal(
    nodeDescription(uncheckedSnapshot(gpu, now)),
    "not checked · not checked yet: ⟳ checks it, ▶ deploys rbee there",
  );
});

test("a worker the keeper saw ready is not set back to loading by the hive's lagging report", () => {
  const record: WorkerRecord = {
    id: "w1",
    node: "localhost",
    model_ref: "m",
    url: "http://127.0.0.1:1",
    backend: "cpu",
    device: 0,
    state: "idle",
    slots_total: 1,
    api_key: "k",
    last_health_at: 1,
    created_at: 1,
    last_tokens_per_second: null,
  };
  const reported = { ...worker, id: "w1", url: "http://127.0.0.1:1", state: "loading" as const };
  assert.equal(reconcileReported([record], [reported])[0].state, "idle");
  assert.equal(reconcileReported([], [reported])[0].state, "loading");
  assert.equal(
    reconcileReported([{ ...record, url: "http://127.0.0.1:2" }], [reported])[0].state,
    "loading",
    "another process at that id is another worker",
  );
});
