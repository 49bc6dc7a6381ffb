// The keeper's registry of nodes, workers and models: SQLite (sql.js) in memory, one file on disk.
//
// Several processes share the file (VS Code windows, CLI runs). None keeps it open: each holds an
// in-memory copy and
//   - before a read, reloads the copy if the file's identity changed (another process wrote it);
//   - for a mutation, takes the lock file, reloads if changed, applies the change in a transaction and
//     writes the whole database back atomically (temp file, fsync, rename, fsync folder) before
//     releasing the lock. So no process ever overwrites rows it has not seen.
// A file that is not a sound rbee registry is moved aside (`.corrupt-<timestamp>`), a warning is
// logged, and a fresh registry is started with a persisted "needs rebuild" flag telling every keeper
// to re-learn workers and models from the hives (replaceNodeState). It never throws for corruption.
//
// Every method is async: a mutation may wait for another process's lock; a read may have to repair.

import { mkdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ModelEntry, WorkerInfo, WorkerState } from "@rbee/hive-agent/protocol";
import { FileLock, type FileLockOptions } from "./registry-lock";
import {
  fileIdentity,
  moveAside,
  pinAndRead,
  pinFile,
  removeOrphanTempFiles,
  unpin,
  writeFileAtomic,
  type PinnedFile,
} from "./registry-file";
import {
  CorruptRegistry,
  SCHEMA_VERSION,
  checkIntegrity,
  checkShape,
  hasSqliteHeader,
  migrate,
  schemaVersionOf,
} from "./registry-schema";
import { loadSqlJs, type SqlDatabase, type SqlJs } from "./registry-sqljs";
import {
  RegistryError,
  keyString,
  validateModel,
  validateNode,
  validateWorker,
  type ModelInput,
  type ModelRecord,
  type NodeInput,
  type NodeRecord,
  type NodeStatus,
  type RegistryLogger,
  type WorkerInput,
  type WorkerRecord,
} from "./registry-types";

export * from "./registry-types";
export { SCHEMA_VERSION } from "./registry-schema";

/** `~/.rbee`, or `$RBEE_HOME` when set. */
export function rbeeHome(env: NodeJS.ProcessEnv = process.env): string {
  return env.RBEE_HOME ? path.resolve(env.RBEE_HOME) : path.join(os.homedir(), ".rbee");
}

/** The CLI's registry file; the extension passes a path in its global storage folder instead. */
export function defaultRegistryPath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(rbeeHome(env), "registry.sqlite");
}

/** A worker with no successful health check within this long must be re-checked before reuse. */
export const DEFAULT_MAX_STALE_MS = 60_000;

export interface RegistryOptions {
  /** sql.js's sql-wasm.wasm; found automatically when left out (see registry-sqljs.ts). */
  wasmPath?: string;
  /** Warnings (corrupt file moved aside, stale lock broken). Default: console.warn. */
  logger?: RegistryLogger;
  /** Called when this process found the file corrupt and started a fresh one. */
  onCorruption?: (info: RebuildNeeded) => void;
  lock?: Omit<FileLockOptions, "logger">;
}

export interface WorkerFilter {
  node?: string;
  model_ref?: string;
}

export interface FindReadyOptions {
  maxStaleMs?: number;
  /** The clock to judge staleness by; default Date.now(). */
  now?: number;
}

export interface ReadyWorker {
  worker: WorkerRecord;
  /** false: no successful health check within maxStaleMs; check the worker before sending it work. */
  fresh: boolean;
}

/** Set when the registry was recreated; the keeper should re-learn each node from its hive. */
export interface RebuildNeeded {
  reason: string;
  since: number;
  /** Where the corrupt file went, if there was one. */
  moved_to: string | null;
}

/** What a hive reports about one worker (protocol's WorkerInfo is accepted as is). */
export type ReportedWorker = Pick<
  WorkerInfo,
  "id" | "url" | "model_ref" | "backend" | "device" | "state" | "slots_total" | "api_key"
> &
  Partial<Pick<WorkerInfo, "last_tokens_per_second">>;

export interface NodeStateSummary {
  workers: number;
  models: number;
  /** Workers the registry had for the node that the hive no longer reports. */
  removed_workers: string[];
}

const REBUILD_KEY = "needs_rebuild";

function rows<T>(db: SqlDatabase, sql: string, params: (string | number | null)[] = []): T[] {
  const st = db.prepare(sql);
  try {
    st.bind(params);
    const out: T[] = [];
    while (st.step()) out.push(st.getAsObject() as T);
    return out;
  } finally {
    st.free();
  }
}

function totalChanges(db: SqlDatabase): number {
  return Number(db.exec("SELECT total_changes()")[0].values[0][0]);
}

/** Rolls back if a transaction is still open (SQLite ends one itself after some errors). */
function rollback(db: SqlDatabase): void {
  try {
    db.run("ROLLBACK");
  } catch {
    // no transaction was active: nothing to undo
  }
}

/** Keeps the stored value of every field the caller left out (undefined). */
function merge<T extends object>(stored: T | undefined, input: object): T {
  const out: Record<string, unknown> = { ...(stored ?? {}) };
  for (const [k, v] of Object.entries(input)) if (v !== undefined) out[k] = v;
  return out as T;
}

export class Registry {
  private db: SqlDatabase;
  /** The file `db` was loaded from or last written to, held open; null = out of step with disk. */
  private pinned: PinnedFile | null = null;
  private closed = false;
  private readonly lock: FileLock;
  private readonly log: RegistryLogger;

  /**
   * Opens (creating, migrating or repairing as needed) the registry at `file`.
   * Throws only RegistryError: REGISTRY_SCHEMA_TOO_NEW, REGISTRY_LOCK_TIMEOUT, REGISTRY_IO, REGISTRY_WASM_NOT_FOUND.
   */
  static async open(file: string = defaultRegistryPath(), opts: RegistryOptions = {}): Promise<Registry> {
    const SQL = await loadSqlJs(opts.wasmPath);
    const resolved = path.resolve(file);
    try {
      mkdirSync(path.dirname(resolved), { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new RegistryError(
        "REGISTRY_IO",
        `cannot create the registry folder ${path.dirname(resolved)}: ${(e as Error).message}`,
      );
    }
    const registry = new Registry(resolved, SQL, opts);
    try {
      await registry.lock.withLock(() => {
        let orphans: number;
        try {
          orphans = removeOrphanTempFiles(resolved);
        } catch (e) {
          throw registry.ioError("read", e);
        }
        if (orphans) registry.log("info", `removed ${orphans} temp file(s) left by an interrupted registry write`);
        registry.syncWithDisk();
      });
    } catch (e) {
      registry.close();
      throw e;
    }
    return registry;
  }

  private constructor(
    readonly path: string,
    private readonly SQL: SqlJs,
    private readonly opts: RegistryOptions,
  ) {
    this.log =
      opts.logger ??
      ((level, message) => {
        if (level === "warn") console.warn(`rbee registry: ${message}`);
      });
    this.lock = new FileLock(`${path}.lock`, { ...opts.lock, logger: this.log });
    this.db = new SQL.Database();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
    unpin(this.pinned);
    this.pinned = null;
  }

  // -------------------------------------------------------------------------------------------
  // Nodes

  /** Inserts or updates a node; optional fields left out keep their stored value. */
  upsertNode(input: NodeInput): Promise<NodeRecord> {
    return this.mutate((db) => {
      const node = validateNode(merge(this.nodeIn(db, keyString("upsertNode", "alias", input.alias)), input));
      db.run(
        `INSERT INTO nodes (alias, host, transport, agent_version, last_seen, status, last_error) VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT(alias) DO UPDATE SET host = excluded.host, transport = excluded.transport, agent_version = excluded.agent_version,
           last_seen = excluded.last_seen, status = excluded.status, last_error = excluded.last_error`,
        [node.alias, node.host, node.transport, node.agent_version, node.last_seen, node.status, node.last_error],
      );
      return node;
    });
  }

  getNode(alias: string): Promise<NodeRecord | undefined> {
    return this.read((db) => this.nodeIn(db, alias));
  }

  listNodes(): Promise<NodeRecord[]> {
    return this.read((db) => rows<NodeRecord>(db, "SELECT * FROM nodes ORDER BY alias"));
  }

  /**
   * Records the outcome of contacting a node. "online" stamps last_seen and clears last_error unless
   * an error is given; other statuses keep the previous error unless a new one is given.
   */
  setNodeStatus(
    alias: string,
    status: NodeStatus,
    opts: { error?: string | null; agent_version?: string; at?: number } = {},
  ): Promise<NodeRecord> {
    return this.mutate((db) => {
      const stored = this.requireNode(db, alias, "setNodeStatus");
      const at = opts.at ?? Date.now();
      const node = validateNode({
        ...stored,
        status,
        last_seen: status === "online" ? at : stored.last_seen,
        last_error: opts.error !== undefined ? opts.error : status === "online" ? null : stored.last_error,
        agent_version: opts.agent_version ?? stored.agent_version,
      });
      db.run("UPDATE nodes SET status = ?, last_seen = ?, last_error = ?, agent_version = ? WHERE alias = ?", [
        node.status,
        node.last_seen,
        node.last_error,
        node.agent_version,
        alias,
      ]);
      return node;
    });
  }

  /** Removes a node with its workers and models; false if it was not registered. */
  removeNode(alias: string): Promise<boolean> {
    return this.mutate((db) => {
      db.run("DELETE FROM nodes WHERE alias = ?", [alias]);
      return db.getRowsModified() > 0;
    });
  }

  // -------------------------------------------------------------------------------------------
  // Workers

  /**
   * Inserts or updates a worker of a registered node. created_at, last_health_at and
   * last_tokens_per_second keep their stored value when left out. Worker ids are unique across nodes.
   */
  upsertWorker(input: WorkerInput): Promise<WorkerRecord> {
    return this.mutate((db) => {
      this.requireNode(db, keyString("upsertWorker", "node", input.node), "upsertWorker");
      return this.writeWorker(db, input, Date.now());
    });
  }

  getWorker(id: string): Promise<WorkerRecord | undefined> {
    return this.read((db) => this.workerIn(db, id));
  }

  listWorkers(filter: WorkerFilter = {}): Promise<WorkerRecord[]> {
    return this.read((db) => {
      const where: string[] = [];
      const params: string[] = [];
      if (filter.node !== undefined) {
        where.push("node = ?");
        params.push(filter.node);
      }
      if (filter.model_ref !== undefined) {
        where.push("model_ref = ?");
        params.push(filter.model_ref);
      }
      const clause = where.length ? `WHERE ${where.join(" AND ")}` : "";
      return rows<WorkerRecord>(db, `SELECT * FROM workers ${clause} ORDER BY node, model_ref, created_at, id`, params);
    });
  }

  /** false if no such worker was registered. */
  removeWorker(id: string): Promise<boolean> {
    return this.mutate((db) => {
      db.run("DELETE FROM workers WHERE id = ?", [id]);
      return db.getRowsModified() > 0;
    });
  }

  /**
   * Records a successful health check at `at` (epoch ms), and the state it reported if given.
   * last_health_at only moves forward, so a slow check finishing late cannot make a worker look staler.
   * false if no such worker is registered.
   */
  markWorkerHealthy(id: string, at: number = Date.now(), state?: WorkerState): Promise<boolean> {
    return this.mutate((db) => {
      const stored = this.workerIn(db, id);
      if (!stored) return false;
      const next = validateWorker(
        { ...stored, last_health_at: Math.max(stored.last_health_at ?? 0, at), state: state ?? stored.state },
        stored.created_at,
      );
      db.run("UPDATE workers SET last_health_at = ?, state = ? WHERE id = ?", [next.last_health_at, next.state, id]);
      return true;
    });
  }

  /**
   * A worker of `node` serving `model_ref` that can take work (idle or busy, with a URL), or undefined.
   * Prefers a fresh one, then an idle one, then the most recently checked. `fresh: false` means no
   * successful health check within maxStaleMs (default 60 s): check it before reuse.
   */
  findReadyWorker(node: string, model_ref: string, opts: FindReadyOptions = {}): Promise<ReadyWorker | undefined> {
    const maxStaleMs = opts.maxStaleMs ?? DEFAULT_MAX_STALE_MS;
    return this.read((db) => {
      const now = opts.now ?? Date.now();
      const [worker] = rows<WorkerRecord>(
        db,
        `SELECT * FROM workers WHERE node = ? AND model_ref = ? AND state IN ('idle', 'busy') AND url <> ''
         ORDER BY COALESCE(last_health_at, -1) >= ? DESC, state = 'idle' DESC, COALESCE(last_health_at, -1) DESC, created_at DESC
         LIMIT 1`,
        [node, model_ref, now - maxStaleMs],
      );
      if (!worker) return undefined;
      return { worker, fresh: worker.last_health_at !== null && now - worker.last_health_at <= maxStaleMs };
    });
  }

  // -------------------------------------------------------------------------------------------
  // Models

  upsertModel(input: ModelInput): Promise<ModelRecord> {
    return this.mutate((db) => {
      this.requireNode(db, keyString("upsertModel", "node", input.node), "upsertModel");
      return this.writeModel(db, input);
    });
  }

  listModels(node: string): Promise<ModelRecord[]> {
    return this.read((db) => rows<ModelRecord>(db, "SELECT * FROM models WHERE node = ? ORDER BY model_ref", [node]));
  }

  /** false if the node had no such model. */
  removeModel(node: string, model_ref: string): Promise<boolean> {
    return this.mutate((db) => {
      db.run("DELETE FROM models WHERE node = ? AND model_ref = ?", [node, model_ref]);
      return db.getRowsModified() > 0;
    });
  }

  // -------------------------------------------------------------------------------------------
  // Rebuilding from the hives

  /**
   * Makes the registry's workers and models of `node` exactly what its hive reports, in one write,
   * and marks the node online at `at`. Reported workers keep their stored created_at and
   * last_health_at: a hive's list is not a health check of ours, so a rebuilt worker stays stale
   * until the keeper checks it.
   */
  replaceNodeState(
    node: string,
    workers: readonly ReportedWorker[],
    models: readonly ModelEntry[],
    opts: { at?: number } = {},
  ): Promise<NodeStateSummary> {
    return this.mutate((db) => {
      const at = opts.at ?? Date.now();
      this.requireNode(db, node, "replaceNodeState");
      db.run("UPDATE nodes SET status = 'online', last_seen = ?, last_error = NULL WHERE alias = ?", [at, node]);
      const reported = new Set(workers.map((w) => w.id));
      const removed = rows<{ id: string }>(db, "SELECT id FROM workers WHERE node = ?", [node])
        .map((r) => r.id)
        .filter((id) => !reported.has(id));
      for (const id of removed) db.run("DELETE FROM workers WHERE id = ?", [id]);
      for (const w of workers) {
        this.writeWorker(
          db,
          {
            id: w.id,
            node,
            model_ref: w.model_ref,
            url: w.url,
            backend: w.backend,
            device: w.device,
            state: w.state,
            slots_total: w.slots_total,
            api_key: w.api_key,
            last_tokens_per_second: w.last_tokens_per_second,
          },
          at,
        );
      }
      db.run("DELETE FROM models WHERE node = ?", [node]);
      for (const m of models)
        this.writeModel(db, {
          node,
          model_ref: m.model_ref,
          local_path: m.local_path,
          size_bytes: m.size_bytes,
          sha256: m.sha256,
        });
      return { workers: workers.length, models: models.length, removed_workers: removed };
    });
  }

  /** Non-null after the registry was recreated from a corrupt or vanished file, until markRebuilt(). */
  needsRebuild(): Promise<RebuildNeeded | null> {
    return this.read((db) => {
      const raw = db.exec("SELECT value FROM meta WHERE key = ?", [REBUILD_KEY])[0]?.values[0]?.[0];
      if (typeof raw !== "string") return null;
      try {
        return JSON.parse(raw) as RebuildNeeded;
      } catch {
        return { reason: raw, since: 0, moved_to: null }; // still a request to rebuild, whatever wrote it
      }
    });
  }

  /** The keeper calls this once it has re-learnt every node from its hive. */
  markRebuilt(): Promise<void> {
    return this.mutate((db) => {
      db.run("DELETE FROM meta WHERE key = ?", [REBUILD_KEY]);
    });
  }

  schemaVersion(): Promise<number> {
    return this.read((db) => schemaVersionOf(db));
  }

  // -------------------------------------------------------------------------------------------
  // Row helpers (inside read/mutate)

  private nodeIn(db: SqlDatabase, alias: string): NodeRecord | undefined {
    return rows<NodeRecord>(db, "SELECT * FROM nodes WHERE alias = ?", [alias])[0];
  }

  private workerIn(db: SqlDatabase, id: string): WorkerRecord | undefined {
    return rows<WorkerRecord>(db, "SELECT * FROM workers WHERE id = ?", [id])[0];
  }

  private requireNode(db: SqlDatabase, alias: string, what: string): NodeRecord {
    const node = this.nodeIn(db, alias);
    if (!node)
      throw new RegistryError(
        "REGISTRY_UNKNOWN_NODE",
        `${what}: node "${alias}" is not in the registry; register it first with upsertNode`,
        { node: alias },
      );
    return node;
  }

  private writeWorker(db: SqlDatabase, input: WorkerInput, now: number): WorkerRecord {
    const stored = this.workerIn(db, keyString("upsertWorker", "id", input.id));
    if (stored && stored.node !== input.node)
      throw new RegistryError(
        "REGISTRY_INVALID_INPUT",
        `worker id "${input.id}" already belongs to node "${stored.node}", not "${input.node}"; worker ids must be unique across nodes`,
        { field: "id" },
      );
    const w = validateWorker(merge(stored, input), now);
    db.run(
      `INSERT INTO workers (id, node, model_ref, url, backend, device, state, slots_total, api_key, last_health_at, created_at, last_tokens_per_second)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(id) DO UPDATE SET model_ref = excluded.model_ref, url = excluded.url, backend = excluded.backend,
         device = excluded.device, state = excluded.state, slots_total = excluded.slots_total, api_key = excluded.api_key,
         last_health_at = excluded.last_health_at, created_at = excluded.created_at, last_tokens_per_second = excluded.last_tokens_per_second`,
      [
        w.id,
        w.node,
        w.model_ref,
        w.url,
        w.backend,
        w.device,
        w.state,
        w.slots_total,
        w.api_key,
        w.last_health_at,
        w.created_at,
        w.last_tokens_per_second,
      ],
    );
    return w;
  }

  private writeModel(db: SqlDatabase, input: ModelInput): ModelRecord {
    const m = validateModel(input);
    db.run(
      `INSERT INTO models (node, model_ref, local_path, size_bytes, sha256) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT(node, model_ref) DO UPDATE SET local_path = excluded.local_path, size_bytes = excluded.size_bytes, sha256 = excluded.sha256`,
      [m.node, m.model_ref, m.local_path, m.size_bytes, m.sha256],
    );
    return m;
  }

  // -------------------------------------------------------------------------------------------
  // Keeping the in-memory copy in step with the file

  private assertOpen(): void {
    if (this.closed)
      throw new RegistryError(
        "REGISTRY_CLOSED",
        `the registry ${this.path} was closed; open it again with Registry.open`,
      );
  }

  /** Runs a query on the latest file content; no lock unless the file needs repair or migration. */
  private async read<T>(query: (db: SqlDatabase) => T): Promise<T> {
    this.assertOpen();
    if (!this.tryReloadWithoutLock()) await this.lock.withLock(() => this.syncWithDisk());
    this.assertOpen();
    return query(this.db);
  }

  /**
   * Runs `change` under the lock on the latest file content, in one transaction, then writes the
   * file before the lock is released. A change that throws is rolled back and nothing is written.
   */
  private async mutate<T>(change: (db: SqlDatabase) => T): Promise<T> {
    this.assertOpen();
    return this.lock.withLock(() => {
      this.assertOpen();
      this.syncWithDisk();
      const db = this.db;
      const before = totalChanges(db);
      db.run("BEGIN");
      let result: T;
      try {
        result = change(db);
        db.run("COMMIT");
      } catch (e) {
        rollback(db);
        throw e;
      }
      if (totalChanges(db) !== before) this.persist();
      return result;
    });
  }

  /** true when the copy is current (already, or after a plain reload); false when the lock is needed. */
  private tryReloadWithoutLock(): boolean {
    if (this.isCurrent()) return true;
    const onDisk = this.readDisk();
    if (!onDisk) return false;
    let loaded: { db: SqlDatabase; migrated: number[] };
    try {
      loaded = this.load(onDisk.bytes);
    } catch (e) {
      unpin(onDisk.pin);
      if (e instanceof CorruptRegistry) return false;
      throw e;
    }
    if (loaded.migrated.length) {
      // An older rbee wrote it: migrate under the lock, so the file is upgraded once.
      loaded.db.close();
      unpin(onDisk.pin);
      return false;
    }
    this.adopt(loaded.db, onDisk.pin);
    return true;
  }

  /** Under the lock: load the file if it changed; repair it if missing or corrupt; migrate it if old. */
  private syncWithDisk(): void {
    if (this.isCurrent()) return;
    const onDisk = this.readDisk();
    if (!onDisk) {
      const vanished = this.pinned !== null;
      if (vanished)
        this.log(
          "warn",
          `the registry ${this.path} disappeared; started a fresh one (workers will be re-learnt from the hives)`,
        );
      this.adopt(
        this.freshDatabase(
          vanished ? { reason: "the registry file disappeared", since: Date.now(), moved_to: null } : null,
        ),
        null,
      );
      this.persist();
      return;
    }
    let loaded: { db: SqlDatabase; migrated: number[] };
    try {
      loaded = this.load(onDisk.bytes);
    } catch (e) {
      unpin(onDisk.pin);
      if (!(e instanceof CorruptRegistry)) throw e;
      this.recoverFromCorruption(e.message);
      return;
    }
    this.adopt(loaded.db, onDisk.pin);
    if (loaded.migrated.length) {
      this.log(
        "info",
        `migrated the registry ${this.path} to schema version ${SCHEMA_VERSION} (applied ${loaded.migrated.join(", ")})`,
      );
      this.persist();
    }
  }

  /** Whether the file on disk is still the one the copy came from (one stat, no read). */
  private isCurrent(): boolean {
    if (!this.pinned) return false;
    try {
      return fileIdentity(this.path) === this.pinned.identity;
    } catch (e) {
      throw this.ioError("read", e);
    }
  }

  private readDisk(): { pin: PinnedFile; bytes: Uint8Array } | null {
    try {
      return pinAndRead(this.path);
    } catch (e) {
      throw this.ioError("read", e);
    }
  }

  private ioError(action: "read" | "write", e: unknown): RegistryError {
    const err = e as NodeJS.ErrnoException;
    return new RegistryError(
      "REGISTRY_IO",
      `cannot ${action} the registry ${this.path}: ${err.message}. ` +
        (action === "write"
          ? `Check free disk space and the permissions of ${path.dirname(this.path)}.`
          : "Check that it is a file this user can read."),
      { path: this.path, errno: err.code },
    );
  }

  private recoverFromCorruption(reason: string): void {
    let movedTo: string | null = null;
    try {
      movedTo = moveAside(this.path);
    } catch (e) {
      throw new RegistryError(
        "REGISTRY_IO",
        `the registry ${this.path} is corrupt (${reason}) and cannot be moved aside: ${(e as Error).message}`,
      );
    }
    const info: RebuildNeeded = { reason, since: Date.now(), moved_to: movedTo };
    this.log(
      "warn",
      `the registry ${this.path} is corrupt (${reason}); moved it to ${movedTo} and started a fresh one. Workers and models will be re-learnt from the hives.`,
    );
    this.adopt(this.freshDatabase(info), null);
    this.persist();
    this.opts.onCorruption?.(info);
  }

  /** Parses and checks a file's bytes; throws CorruptRegistry for anything that is not a sound registry. */
  private load(bytes: Uint8Array): { db: SqlDatabase; migrated: number[] } {
    if (!hasSqliteHeader(bytes))
      throw new CorruptRegistry(bytes.length === 0 ? "the file is empty" : "not an SQLite database");
    let db: SqlDatabase;
    try {
      db = new this.SQL.Database(bytes);
    } catch (e) {
      throw new CorruptRegistry(`SQLite cannot open it: ${(e as Error).message}`);
    }
    try {
      checkIntegrity(db);
      let migrated: number[];
      try {
        migrated = migrate(db, SCHEMA_VERSION, this.path);
      } catch (e) {
        if (e instanceof RegistryError || e instanceof CorruptRegistry) throw e;
        throw new CorruptRegistry(`its schema cannot be migrated: ${(e as Error).message}`);
      }
      checkShape(db);
      db.run("PRAGMA foreign_keys = ON");
      return { db, migrated };
    } catch (e) {
      db.close();
      throw e;
    }
  }

  private freshDatabase(rebuild: RebuildNeeded | null): SqlDatabase {
    const db = new this.SQL.Database();
    migrate(db);
    db.run("PRAGMA foreign_keys = ON");
    if (rebuild) db.run("INSERT INTO meta (key, value) VALUES (?, ?)", [REBUILD_KEY, JSON.stringify(rebuild)]);
    return db;
  }

  /** Makes `db` the copy, and `pin` the file it matches (null: matches no file yet). */
  private adopt(db: SqlDatabase, pin: PinnedFile | null): void {
    if (db !== this.db) this.db.close();
    this.db = db;
    if (pin !== this.pinned) unpin(this.pinned);
    this.pinned = pin;
  }

  /** Writes the copy to disk (under the lock). On failure the copy is marked stale, to be reloaded. */
  private persist(): void {
    try {
      writeFileAtomic(this.path, this.db.export());
    } catch (e) {
      this.adopt(this.db, null);
      throw this.ioError("write", e);
    }
    // Under the lock nobody else writes, so the file now at the path is the one just written.
    try {
      this.adopt(this.db, pinFile(this.path));
    } catch (e) {
      this.adopt(this.db, null);
      throw this.ioError("read", e);
    }
  }
}
