// The registry on real files in temp folders: CRUD, migrations, reopening, staleness, corrupt files,
// lock files, and two registries in one process sharing a file.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  DEFAULT_MAX_STALE_MS,
  Registry,
  RegistryError,
  defaultRegistryPath,
  type WorkerInput,
} from "../../extension/src/keeper/registry";
import { MIGRATIONS, SCHEMA_VERSION, migrate } from "../../extension/src/keeper/registry-schema";
import { loadSqlJs } from "../../extension/src/keeper/registry-sqljs";
import type { WorkerInfo } from "../../hive-agent/src/protocol";

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "rbee-registry-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

interface Logged {
  level: string;
  message: string;
}
function capture(): { logs: Logged[]; logger: (level: "info" | "warn", message: string) => void } {
  const logs: Logged[] = [];
  return { logs, logger: (level, message) => logs.push({ level, message }) };
}

function worker(id: string, over: Partial<WorkerInput> = {}): WorkerInput {
  return {
    id,
    node: "gpu1",
    model_ref: "hf:org/repo/model.gguf",
    url: "http://127.0.0.1:40001",
    backend: "cuda",
    device: 0,
    state: "idle",
    slots_total: 4,
    api_key: `secret-${id}`,
    ...over,
  };
}

/** What a hive's GET /v1/workers reports (protocol's WorkerInfo). */
function reported(id: string, over: Partial<WorkerInfo> = {}): WorkerInfo {
  const { node: _node, last_health_at: _h, created_at: _c, last_tokens_per_second: _t, ...wire } = worker(id);
  return {
    ...wire,
    devices: [wire.device],
    memory_bytes: 1 << 20,
    keep_alive_s: 300,
    slots_busy: 0,
    last_activity: 0,
    pid: 4242,
    context_size: 4096,
    threads: 1,
    ...over,
  };
}

async function openWithNode(file: string, opts: Parameters<typeof Registry.open>[1] = {}): Promise<Registry> {
  const r = await Registry.open(file, { logger: () => {}, ...opts });
  await r.upsertNode({ alias: "gpu1", host: "10.0.0.5", transport: "ssh" });
  return r;
}

async function rejectsWith(p: Promise<unknown>, code: string, re?: RegExp): Promise<RegistryError> {
  const err = await p.then(
    () => assert.fail(`expected ${code}, got success`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof RegistryError, `expected a RegistryError, got ${String(err)}`);
  assert.equal(err.code, code);
  if (re) assert.match(err.message, re);
  return err;
}

function corruptFilesIn(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.includes(".corrupt-"));
}

test("default path is ~/.rbee/registry.sqlite and RBEE_HOME moves it", () => {
  assert.equal(defaultRegistryPath({}), path.join(os.homedir(), ".rbee", "registry.sqlite"));
  assert.equal(defaultRegistryPath({ RBEE_HOME: "/srv/rbee" }), path.join("/srv/rbee", "registry.sqlite"));
});

test("nodes: upsert, get, list, status, remove with their workers and models", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  const r = await Registry.open(file, { logger: () => {} });
  t.after(() => r.close());

  const created = await r.upsertNode({ alias: "gpu1", host: "10.0.0.5", transport: "ssh" });
  assert.deepEqual(created, {
    alias: "gpu1",
    host: "10.0.0.5",
    transport: "ssh",
    agent_version: null,
    last_seen: null,
    status: "unknown",
    last_error: null,
  });
  await r.upsertNode({ alias: "localhost", host: "127.0.0.1", transport: "loopback" });
  assert.deepEqual(
    (await r.listNodes()).map((n) => n.alias),
    ["gpu1", "localhost"],
  );

  const failed = await r.setNodeStatus("gpu1", "offline", { error: "connect ECONNREFUSED", at: 1000 });
  assert.equal(failed.status, "offline");
  assert.equal(failed.last_error, "connect ECONNREFUSED");
  assert.equal(failed.last_seen, null);
  const online = await r.setNodeStatus("gpu1", "online", { at: 2000, agent_version: "0.1.0" });
  assert.deepEqual(online, { ...created, status: "online", last_seen: 2000, last_error: null, agent_version: "0.1.0" });
  assert.deepEqual(await r.getNode("gpu1"), online);

  // An upsert that leaves optional fields out keeps what is stored.
  const moved = await r.upsertNode({ alias: "gpu1", host: "10.0.0.6", transport: "ssh" });
  assert.equal(moved.host, "10.0.0.6");
  assert.equal(moved.agent_version, "0.1.0");
  assert.equal(moved.last_seen, 2000);

  await r.upsertWorker(worker("w1"));
  await r.upsertModel({
    node: "gpu1",
    model_ref: "hf:org/repo/model.gguf",
    local_path: "/m/model.gguf",
    size_bytes: 123,
  });
  assert.equal(await r.removeNode("gpu1"), true);
  assert.equal(await r.getNode("gpu1"), undefined);
  assert.deepEqual(await r.listWorkers(), [], "a node's workers go with it");
  assert.deepEqual(await r.listModels("gpu1"), [], "a node's models go with it");
  assert.equal(await r.removeNode("gpu1"), false);
  await rejectsWith(r.setNodeStatus("nope", "online"), "REGISTRY_UNKNOWN_NODE", /"nope".*upsertNode/);
});

test("workers: upsert keeps created_at and health, lists by node and model, removes", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  const r = await openWithNode(file);
  t.after(() => r.close());
  await r.upsertNode({ alias: "gpu2", host: "10.0.0.7", transport: "ssh" });

  const w1 = await r.upsertWorker(worker("w1", { created_at: 100, last_health_at: 500 }));
  assert.equal(w1.last_tokens_per_second, null);
  await r.upsertWorker(worker("w2", { model_ref: "hf:org/other.gguf", created_at: 200 }));
  await r.upsertWorker(worker("w3", { node: "gpu2", created_at: 300 }));

  const updated = await r.upsertWorker(worker("w1", { state: "busy", last_tokens_per_second: 42.5 }));
  assert.equal(updated.created_at, 100, "created_at survives an update that leaves it out");
  assert.equal(updated.last_health_at, 500, "last_health_at survives an update that leaves it out");
  assert.deepEqual(await r.getWorker("w1"), {
    ...worker("w1"),
    state: "busy",
    created_at: 100,
    last_health_at: 500,
    last_tokens_per_second: 42.5,
  });

  // Ordered by node, then model_ref ("hf:org/other" < "hf:org/repo"), then age.
  assert.deepEqual(
    (await r.listWorkers()).map((w) => w.id),
    ["w2", "w1", "w3"],
  );
  assert.deepEqual(
    (await r.listWorkers({ node: "gpu1" })).map((w) => w.id),
    ["w2", "w1"],
  );
  assert.deepEqual(
    (await r.listWorkers({ model_ref: "hf:org/repo/model.gguf" })).map((w) => w.id),
    ["w1", "w3"],
  );
  assert.deepEqual(
    (await r.listWorkers({ node: "gpu1", model_ref: "hf:org/other.gguf" })).map((w) => w.id),
    ["w2"],
  );

  assert.equal(await r.removeWorker("w2"), true);
  assert.equal(await r.removeWorker("w2"), false);
  assert.equal(await r.getWorker("w2"), undefined);

  assert.equal(await r.markWorkerHealthy("w1", 9000, "idle"), true);
  assert.equal(await r.markWorkerHealthy("w1", 8000), true);
  const w = await r.getWorker("w1");
  assert.equal(w?.last_health_at, 9000, "an older health check does not move last_health_at back");
  assert.equal(w?.state, "idle");
  assert.equal(await r.markWorkerHealthy("missing", 1), false);
});

test("bad input is refused with the field named, and nothing is written", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  const r = await openWithNode(file);
  t.after(() => r.close());
  const before = statSync(file, { bigint: true }).mtimeNs;

  await rejectsWith(
    r.upsertWorker(worker("w1", { node: "ghost" })),
    "REGISTRY_UNKNOWN_NODE",
    /"ghost" is not in the registry/,
  );
  await rejectsWith(
    r.upsertWorker(worker("w1", { backend: "tpu" as never })),
    "REGISTRY_INVALID_INPUT",
    /"backend" must be one of cuda, metal, vulkan, cpu/,
  );
  await rejectsWith(r.upsertWorker(worker("w1", { slots_total: 0 })), "REGISTRY_INVALID_INPUT", /"slots_total"/);
  await rejectsWith(r.upsertWorker(worker("", {})), "REGISTRY_INVALID_INPUT", /"id"/);
  await rejectsWith(
    r.upsertNode({ alias: "x", host: "h", transport: "telnet" as never }),
    "REGISTRY_INVALID_INPUT",
    /"transport"/,
  );
  await rejectsWith(
    r.upsertModel({ node: "gpu1", model_ref: "m", local_path: "/m", size_bytes: 1, sha256: "xyz" }),
    "REGISTRY_INVALID_INPUT",
    /"sha256" must be 64 hexadecimal/,
  );
  await r.upsertNode({ alias: "gpu2", host: "h", transport: "ssh" });
  const after = statSync(file, { bigint: true }).mtimeNs;
  assert.notEqual(after, before, "the valid upsert was written");

  await r.upsertWorker(worker("w1"));
  await rejectsWith(
    r.upsertWorker(worker("w1", { node: "gpu2" })),
    "REGISTRY_INVALID_INPUT",
    /already belongs to node "gpu1"/,
  );
  assert.equal((await r.getWorker("w1"))?.node, "gpu1");
});

test("models: upsert, list per node, remove; sha256 is stored lower-case", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  const r = await openWithNode(file);
  t.after(() => r.close());
  const sha = "AB".repeat(32);
  await r.upsertModel({ node: "gpu1", model_ref: "hf:b/b.gguf", local_path: "/m/b.gguf", size_bytes: 2, sha256: sha });
  await r.upsertModel({ node: "gpu1", model_ref: "hf:a/a.gguf", local_path: "/m/a.gguf", size_bytes: 1 });
  await r.upsertModel({ node: "gpu1", model_ref: "hf:a/a.gguf", local_path: "/m/a2.gguf", size_bytes: 10 });
  assert.deepEqual(await r.listModels("gpu1"), [
    { node: "gpu1", model_ref: "hf:a/a.gguf", local_path: "/m/a2.gguf", size_bytes: 10, sha256: null },
    { node: "gpu1", model_ref: "hf:b/b.gguf", local_path: "/m/b.gguf", size_bytes: 2, sha256: "ab".repeat(32) },
  ]);
  assert.equal(await r.removeModel("gpu1", "hf:a/a.gguf"), true);
  assert.equal(await r.removeModel("gpu1", "hf:a/a.gguf"), false);
  assert.deepEqual(
    (await r.listModels("gpu1")).map((m) => m.model_ref),
    ["hf:b/b.gguf"],
  );
  assert.deepEqual(await r.listModels("other"), []);
});

test("everything persists across close and reopen, and the file is private (0600)", async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "nested", "registry.sqlite");
  const a = await openWithNode(file);
  await a.upsertWorker(worker("w1", { last_health_at: 77, last_tokens_per_second: 12.5 }));
  await a.upsertModel({ node: "gpu1", model_ref: "hf:a/a.gguf", local_path: "/m/a.gguf", size_bytes: 1 });
  await a.setNodeStatus("gpu1", "online", { at: 5 });
  const snapshot = { nodes: await a.listNodes(), workers: await a.listWorkers(), models: await a.listModels("gpu1") };
  a.close();
  await rejectsWith(a.listNodes(), "REGISTRY_CLOSED", /was closed; open it again/);
  await rejectsWith(a.upsertNode({ alias: "x", host: "h", transport: "ssh" }), "REGISTRY_CLOSED");

  assert.equal(statSync(file).mode & 0o777, 0o600);
  const b = await Registry.open(file, { logger: () => {} });
  t.after(() => b.close());
  assert.deepEqual(
    { nodes: await b.listNodes(), workers: await b.listWorkers(), models: await b.listModels("gpu1") },
    snapshot,
  );
  assert.equal(snapshot.workers[0].api_key, "secret-w1");
  assert.deepEqual(readdirSync(path.dirname(file)).sort(), ["registry.sqlite"], "no lock or temp file is left behind");
});

test("findReadyWorker: fresh within 60 s, stale after, never a loading worker", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  const r = await openWithNode(file);
  t.after(() => r.close());
  const now = 1_000_000_000;
  const model = "hf:org/repo/model.gguf";

  assert.equal(await r.findReadyWorker("gpu1", model, { now }), undefined);
  await r.upsertWorker(worker("loading", { state: "loading", url: "", last_health_at: now }));
  await r.upsertWorker(worker("stopping", { state: "stopping", last_health_at: now }));
  assert.equal(
    await r.findReadyWorker("gpu1", model, { now }),
    undefined,
    "loading and stopping workers cannot take work",
  );

  await r.upsertWorker(worker("never-checked", { created_at: 1 }));
  let found = await r.findReadyWorker("gpu1", model, { now });
  assert.equal(found?.worker.id, "never-checked");
  assert.equal(found?.fresh, false, "a worker never health-checked is stale");

  await r.upsertWorker(worker("old", { last_health_at: now - DEFAULT_MAX_STALE_MS - 1, created_at: 2 }));
  found = await r.findReadyWorker("gpu1", model, { now });
  assert.equal(found?.worker.id, "old");
  assert.equal(found?.fresh, false, "61 s without health is stale");

  await r.upsertWorker(worker("busy-fresh", { state: "busy", last_health_at: now - 30_000 }));
  found = await r.findReadyWorker("gpu1", model, { now });
  assert.deepEqual([found?.worker.id, found?.fresh], ["busy-fresh", true], "a fresh worker wins over stale ones");

  await r.upsertWorker(worker("idle-fresh", { last_health_at: now - 50_000 }));
  found = await r.findReadyWorker("gpu1", model, { now });
  assert.deepEqual([found?.worker.id, found?.fresh], ["idle-fresh", true], "among fresh ones an idle worker wins");

  // Exactly at the limit still counts as fresh; one ms past it does not.
  found = await r.findReadyWorker("gpu1", model, { now: now - 50_000 + DEFAULT_MAX_STALE_MS });
  assert.deepEqual([found?.worker.id, found?.fresh], ["idle-fresh", true]);
  found = await r.findReadyWorker("gpu1", model, { now: now + DEFAULT_MAX_STALE_MS });
  assert.equal(found?.fresh, false, "once every worker is past 60 s the best is returned stale");
  found = await r.findReadyWorker("gpu1", model, { now, maxStaleMs: 10_000 });
  assert.equal(found?.fresh, false, "maxStaleMs is honoured");

  await r.markWorkerHealthy("old", now);
  found = await r.findReadyWorker("gpu1", model, { now });
  assert.deepEqual([found?.worker.id, found?.fresh], ["old", true], "a fresh health check makes it the best again");
  assert.equal(await r.findReadyWorker("gpu1", "hf:other/model.gguf", { now }), undefined);
  assert.equal(await r.findReadyWorker("gpu9", model, { now }), undefined);
});

test("replaceNodeState makes a node's workers and models exactly what its hive reports", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  const r = await openWithNode(file);
  t.after(() => r.close());
  await r.upsertNode({ alias: "gpu2", host: "h", transport: "ssh" });
  await r.upsertWorker(worker("keep", { created_at: 10, last_health_at: 20 }));
  await r.upsertWorker(worker("gone"));
  await r.upsertWorker(worker("other-node", { node: "gpu2" }));
  await r.upsertModel({ node: "gpu1", model_ref: "hf:old.gguf", local_path: "/m/old.gguf", size_bytes: 1 });

  const summary = await r.replaceNodeState(
    "gpu1",
    [
      reported("keep", { state: "busy", slots_busy: 1, last_tokens_per_second: 30 }),
      reported("new", { state: "loading", url: "", progress: 0.5 }),
    ],
    [{ model_ref: "hf:org/repo/model.gguf", local_path: "/m/model.gguf", size_bytes: 99, sha256: "0".repeat(64) }],
    { at: 5000 },
  );
  assert.deepEqual(summary, { workers: 2, models: 1, removed_workers: ["gone"] });
  const workers = await r.listWorkers({ node: "gpu1" });
  assert.deepEqual(
    workers.map((w) => [w.id, w.state]),
    [
      ["keep", "busy"],
      ["new", "loading"],
    ],
  );
  const keep = workers.find((w) => w.id === "keep")!;
  assert.deepEqual(
    [keep.created_at, keep.last_health_at, keep.last_tokens_per_second],
    [10, 20, 30],
    "a known worker keeps its history",
  );
  const added = workers.find((w) => w.id === "new")!;
  assert.deepEqual(
    [added.created_at, added.last_health_at],
    [5000, null],
    "a hive's report is not a health check of ours",
  );
  assert.deepEqual(
    (await r.listModels("gpu1")).map((m) => m.model_ref),
    ["hf:org/repo/model.gguf"],
  );
  assert.equal((await r.getWorker("other-node"))?.node, "gpu2", "other nodes are untouched");
  const node = await r.getNode("gpu1");
  assert.deepEqual([node?.status, node?.last_seen], ["online", 5000]);
  await rejectsWith(r.replaceNodeState("ghost", [], []), "REGISTRY_UNKNOWN_NODE");
});

test("two registries on one file never lose each other's rows (re-read before write)", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  const a = await openWithNode(file);
  const b = await Registry.open(file, { logger: () => {} });
  t.after(() => (a.close(), b.close()));
  // b loaded the file before a's writes below: writing from its stale copy would drop them.
  await a.upsertWorker(worker("from-a"));
  await b.upsertWorker(worker("from-b"));
  await a.upsertModel({ node: "gpu1", model_ref: "m-a", local_path: "/a", size_bytes: 1 });
  assert.deepEqual(
    (await a.listWorkers()).map((w) => w.id),
    ["from-a", "from-b"],
    "a reads b's write",
  );
  assert.deepEqual(
    (await b.listModels("gpu1")).map((m) => m.model_ref),
    ["m-a"],
    "b reads a's write",
  );
  const c = await Registry.open(file, { logger: () => {} });
  t.after(() => c.close());
  assert.equal((await c.listWorkers()).length, 2);
});

test("migration v1 → v2 keeps every row and ends with the same schema as a fresh registry", async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "registry.sqlite");
  const SQL = await loadSqlJs();
  const v1 = new SQL.Database();
  assert.deepEqual(migrate(v1, 1), [1]);
  v1.run("INSERT INTO nodes (alias, host, transport, status) VALUES ('gpu1', '10.0.0.5', 'ssh', 'online')");
  v1.run(
    `INSERT INTO workers (id, node, model_ref, url, backend, device, state, slots_total, api_key, last_health_at, created_at)
     VALUES ('w1', 'gpu1', 'hf:m.gguf', 'http://127.0.0.1:5', 'cuda', 1, 'idle', 2, 'k1', 111, 99)`,
  );
  v1.run("INSERT INTO models (node, model_ref, local_path, size_bytes) VALUES ('gpu1', 'hf:m.gguf', '/m.gguf', 7)");
  writeFileSync(file, v1.export());
  v1.close();

  const { logs, logger } = capture();
  const r = await Registry.open(file, { logger });
  t.after(() => r.close());
  assert.equal(SCHEMA_VERSION, 2);
  assert.equal(await r.schemaVersion(), 2);
  assert.ok(
    logs.some((l) => /migrated .* to schema version 2 \(applied 2\)/.test(l.message)),
    JSON.stringify(logs),
  );
  assert.deepEqual(await r.getWorker("w1"), {
    id: "w1",
    node: "gpu1",
    model_ref: "hf:m.gguf",
    url: "http://127.0.0.1:5",
    backend: "cuda",
    device: 1,
    state: "idle",
    slots_total: 2,
    api_key: "k1",
    last_health_at: 111,
    created_at: 99,
    last_tokens_per_second: null,
  });
  assert.equal((await r.listModels("gpu1"))[0].size_bytes, 7);
  await r.upsertWorker(worker("w2", { last_tokens_per_second: 3.5 }));

  // The migrated file on disk, compared with a registry created at v2 directly.
  const schemaOf = (bytes: Uint8Array) => {
    const db = new SQL.Database(bytes);
    const out = db.exec(
      "SELECT type, name, tbl_name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
    )[0].values;
    const columns = ["nodes", "workers", "models", "meta"].map((tb) =>
      db.exec(`PRAGMA table_info(${tb})`)[0].values.map((c) => `${c[1]} ${c[2]}`),
    );
    db.close();
    return { out, columns };
  };
  const freshFile = path.join(dir, "fresh.sqlite");
  (await Registry.open(freshFile, { logger: () => {} })).close();
  const migrated = schemaOf(readFileSync(file));
  assert.deepEqual(migrated, schemaOf(readFileSync(freshFile)));
  assert.ok(
    migrated.out.some((row) => row[1] === "workers_by_node_model"),
    "v2 index exists",
  );
  assert.ok(!migrated.out.some((row) => row[1] === "workers_by_node"), "v1 index was dropped");
  assert.equal(MIGRATIONS.map((m) => m.version).join(), "1,2");
});

test("a registry written by a newer rbee is refused, not overwritten or moved aside", async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "registry.sqlite");
  const SQL = await loadSqlJs();
  const db = new SQL.Database();
  migrate(db);
  db.run("UPDATE meta SET value = '99' WHERE key = 'schema_version'");
  const bytes = db.export();
  db.close();
  writeFileSync(file, bytes);
  await rejectsWith(
    Registry.open(file, { logger: () => {} }),
    "REGISTRY_SCHEMA_TOO_NEW",
    /schema version 99.*Upgrade rbee/,
  );
  assert.deepEqual(readFileSync(file), Buffer.from(bytes));
  assert.deepEqual(corruptFilesIn(dir), []);
  assert.equal(existsSync(`${file}.lock`), false, "the lock is released on failure");
});

test("a registry path that cannot be read gives REGISTRY_IO naming it, and nothing is moved", async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "registry.sqlite");
  mkdirSync(file);
  const err = await rejectsWith(
    Registry.open(file, { logger: () => {} }),
    "REGISTRY_IO",
    /cannot read the registry .*registry\.sqlite: EISDIR/,
  );
  assert.equal(err.details?.errno, "EISDIR");
  assert.deepEqual(readdirSync(dir), ["registry.sqlite"]);
});

// ---------------------------------------------------------------------------------------------
// Corrupt files

async function goodRegistryBytes(file: string, workers: number): Promise<Buffer> {
  const r = await openWithNode(file);
  await r.replaceNodeState(
    "gpu1",
    Array.from({ length: workers }, (_, i) => reported(`w${i}`, { url: `http://127.0.0.1:${20000 + i}` })),
    [],
  );
  r.close();
  return readFileSync(file);
}

const corruptions: { name: string; make: (good: Buffer) => Buffer; reason: RegExp }[] = [
  {
    name: "garbage bytes",
    make: () => Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 7919) % 251)),
    reason: /not an SQLite database/,
  },
  { name: "an empty file", make: () => Buffer.alloc(0), reason: /the file is empty/ },
  {
    name: "a file truncated to half",
    make: (good) => good.subarray(0, Math.floor(good.length / 2)),
    reason: /integrity check failed|cannot open|malformed/,
  },
  {
    name: "a file truncated inside its header",
    make: (good) => good.subarray(0, 60),
    reason: /not an SQLite database/,
  },
  {
    name: "a damaged b-tree page",
    // Page 3 onwards hold table data; an invalid page-type byte breaks the b-tree structure.
    make: (good) => {
      const bad = Buffer.from(good);
      const pageSize = bad.readUInt16BE(16);
      bad.fill(0xee, pageSize * 3, pageSize * 3 + 64);
      return bad;
    },
    reason: /integrity check failed|malformed/,
  },
];

for (const c of corruptions) {
  test(`a corrupt file (${c.name}) is moved aside, a fresh registry works and asks for a rebuild`, async (t) => {
    const dir = tempDir(t);
    const file = path.join(dir, "registry.sqlite");
    const bad = c.make(await goodRegistryBytes(file, 300));
    writeFileSync(file, bad);

    const { logs, logger } = capture();
    const hooked: unknown[] = [];
    const r = await Registry.open(file, { logger, onCorruption: (info) => hooked.push(info) });
    t.after(() => r.close());

    const aside = corruptFilesIn(dir);
    assert.equal(aside.length, 1, `one corrupt file kept: ${readdirSync(dir)}`);
    assert.deepEqual(readFileSync(path.join(dir, aside[0])), bad, "the bad bytes are kept for inspection");
    const warning = logs.find((l) => l.level === "warn");
    assert.ok(warning, "a warning was logged");
    assert.match(warning.message, c.reason);
    assert.match(warning.message, new RegExp(`moved it to .*${aside[0].replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));

    const rebuild = await r.needsRebuild();
    assert.ok(rebuild, "the fresh registry asks to be rebuilt from the hives");
    assert.match(rebuild.reason, c.reason);
    assert.equal(rebuild.moved_to, path.join(dir, aside[0]));
    assert.deepEqual(hooked, [rebuild]);

    assert.deepEqual(await r.listWorkers(), []);
    await r.upsertNode({ alias: "gpu1", host: "h", transport: "ssh" });
    await r.upsertWorker(worker("after"));
    await r.markRebuilt();
    r.close();
    const again = await Registry.open(file, { logger });
    t.after(() => again.close());
    assert.deepEqual(
      (await again.listWorkers()).map((w) => w.id),
      ["after"],
    );
    assert.equal(await again.needsRebuild(), null, "markRebuilt persists");
    assert.equal(corruptFilesIn(dir).length, 1, "the good file is not moved aside again");
  });
}

test("a file that is SQLite but not an rbee registry is moved aside", async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "registry.sqlite");
  const SQL = await loadSqlJs();
  const db = new SQL.Database();
  db.run("CREATE TABLE photos (id INTEGER)");
  writeFileSync(file, db.export());
  db.close();
  const { logs, logger } = capture();
  const r = await Registry.open(file, { logger });
  t.after(() => r.close());
  assert.match(logs.find((l) => l.level === "warn")?.message ?? "", /not an rbee registry/);
  assert.equal(corruptFilesIn(dir).length, 1);
  assert.equal(await r.schemaVersion(), SCHEMA_VERSION);
});

test("corruption that appears while a registry is open is repaired on the next read, without throwing", async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "registry.sqlite");
  const r = await openWithNode(file, { logger: capture().logger });
  t.after(() => r.close());
  await r.upsertWorker(worker("w1"));
  assert.equal(await r.needsRebuild(), null);

  writeFileSync(file, "this is not a database, someone overwrote it");
  assert.deepEqual(await r.listWorkers(), []);
  assert.match((await r.needsRebuild())?.reason ?? "", /not an SQLite database/);
  assert.equal(corruptFilesIn(dir).length, 1);

  rmSync(file);
  assert.deepEqual(await r.listNodes(), [], "a vanished file is recreated too");
  assert.match((await r.needsRebuild())?.reason ?? "", /disappeared/);
  assert.ok(existsSync(file));
});

// ---------------------------------------------------------------------------------------------
// Lock files

function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", ""]);
  assert.equal(r.status, 0);
  return r.pid!;
}

function writeLock(file: string, pid: number, createdAt: number): void {
  writeFileSync(
    `${file}.lock`,
    JSON.stringify({ pid, host: os.hostname(), created_at: createdAt, token: "someone-else" }),
  );
}

test("a stale lock left by a dead process is broken at once", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  (await Registry.open(file, { logger: () => {} })).close();
  const pid = deadPid();
  writeLock(file, pid, Date.now());
  const { logs, logger } = capture();
  const started = Date.now();
  const r = await Registry.open(file, { logger, lock: { timeoutMs: 3000 } });
  t.after(() => r.close());
  await r.upsertNode({ alias: "n", host: "h", transport: "ssh" });
  assert.ok(Date.now() - started < 2000, "no waiting for a dead owner");
  assert.ok(
    logs.some((l) => l.level === "warn" && l.message.includes(`pid ${pid}`) && /process \d+ is gone/.test(l.message)),
    JSON.stringify(logs),
  );
  assert.equal(existsSync(`${file}.lock`), false);
});

test("a live lock makes writers wait, then fail with a clear error; its owner's death frees them", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  const r = await openWithNode(file, { lock: { timeoutMs: 400 } });
  t.after(() => r.close());
  const holder = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"], { stdio: "ignore" });
  t.after(() => holder.kill("SIGKILL"));
  writeLock(file, holder.pid!, Date.now());

  const started = Date.now();
  const err = await rejectsWith(
    r.upsertWorker(worker("w1")),
    "REGISTRY_LOCK_TIMEOUT",
    new RegExp(`locked by process ${holder.pid}.*delete .*registry\\.sqlite\\.lock`),
  );
  assert.ok(Date.now() - started >= 380, "it waited for the timeout");
  assert.equal(err.details?.pid, holder.pid);
  assert.equal(await r.getWorker("w1"), undefined, "reads need no lock");

  let settled = false;
  const waiting = Registry.open(file, { logger: () => {}, lock: { timeoutMs: 10_000 } }).then(async (w) => {
    await w.upsertWorker(worker("w1"));
    return w;
  });
  void waiting.finally(() => (settled = true)).catch(() => {});
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(settled, false, "opening waits for the lock as well");
  holder.kill("SIGKILL");
  await new Promise((resolve) => holder.once("exit", resolve));
  const w = await waiting;
  t.after(() => w.close());
  assert.equal((await r.getWorker("w1"))?.id, "w1", "the waiting writer went through once the owner died");
});

test("a lock older than staleMs is broken even if its pid exists (hung or reused pid)", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  const r = await openWithNode(file, { lock: { timeoutMs: 3000, staleMs: 5000 } });
  t.after(() => r.close());
  writeLock(file, process.ppid, Date.now() - 60_000);
  await r.upsertWorker(worker("w1"));
  assert.equal((await r.getWorker("w1"))?.id, "w1");
});

test("an unreadable lock (its writer died between create and write) is broken only once it is old", async (t) => {
  const file = path.join(tempDir(t), "registry.sqlite");
  const r = await openWithNode(file, { lock: { timeoutMs: 300 } });
  t.after(() => r.close());
  writeFileSync(`${file}.lock`, "");
  await rejectsWith(r.upsertWorker(worker("w1")), "REGISTRY_LOCK_TIMEOUT", /locked by other processes/);
  const past = new Date(Date.now() - 10_000);
  utimesSync(`${file}.lock`, past, past);
  await r.upsertWorker(worker("w1"));
  assert.equal((await r.getWorker("w1"))?.id, "w1");
});

test("temp files left by a writer killed before its rename are removed on open", async (t) => {
  const dir = tempDir(t);
  const file = path.join(dir, "registry.sqlite");
  (await Registry.open(file, { logger: () => {} })).close();
  writeFileSync(`${file}.tmp-999999-deadbeef`, "half a database");
  const r = await Registry.open(file, { logger: () => {} });
  r.close();
  assert.deepEqual(readdirSync(dir), ["registry.sqlite"]);
});
