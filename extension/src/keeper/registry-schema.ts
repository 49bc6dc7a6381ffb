// The registry's schema: migrations applied in order, and the checks that tell a good registry file
// from a corrupt or foreign one.
//
// Rules for a new migration: append it with the next version; never edit a released one; keep it
// additive where possible so an older rbee that reads a newer file fails with a clear message
// (REGISTRY_SCHEMA_TOO_NEW) instead of misreading it.

import type { SqlDatabase } from "./registry-sqljs";
import { RegistryError } from "./registry-types";

export interface Migration {
  version: number;
  description: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "meta, nodes, workers and models",
    sql: `
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE nodes (
        alias TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        transport TEXT NOT NULL,
        agent_version TEXT,
        last_seen INTEGER,
        status TEXT NOT NULL DEFAULT 'unknown',
        last_error TEXT
      );
      CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        node TEXT NOT NULL REFERENCES nodes(alias) ON DELETE CASCADE,
        model_ref TEXT NOT NULL,
        url TEXT NOT NULL,
        backend TEXT NOT NULL,
        device INTEGER NOT NULL,
        state TEXT NOT NULL,
        slots_total INTEGER NOT NULL,
        api_key TEXT NOT NULL,
        last_health_at INTEGER,
        created_at INTEGER NOT NULL
      );
      CREATE INDEX workers_by_node ON workers(node);
      CREATE TABLE models (
        node TEXT NOT NULL REFERENCES nodes(alias) ON DELETE CASCADE,
        model_ref TEXT NOT NULL,
        local_path TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        sha256 TEXT,
        PRIMARY KEY (node, model_ref)
      );`,
  },
  {
    version: 2,
    description: "workers.last_tokens_per_second; a (node, model_ref) index for findReadyWorker",
    sql: `
      ALTER TABLE workers ADD COLUMN last_tokens_per_second REAL;
      CREATE INDEX workers_by_node_model ON workers(node, model_ref);
      DROP INDEX workers_by_node;`,
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

/** The columns each table has at SCHEMA_VERSION; checkShape proves a file really has them. */
export const TABLE_COLUMNS = {
  nodes: ["alias", "host", "transport", "agent_version", "last_seen", "status", "last_error"],
  workers: [
    "id",
    "node",
    "model_ref",
    "url",
    "backend",
    "device",
    "state",
    "slots_total",
    "api_key",
    "last_health_at",
    "created_at",
    "last_tokens_per_second",
  ],
  models: ["node", "model_ref", "local_path", "size_bytes", "sha256"],
} as const;

/** Thrown while loading a file that cannot be used as a registry; the caller moves it aside. */
export class CorruptRegistry extends Error {}

const SQLITE_HEADER = "SQLite format 3\0";

export function hasSqliteHeader(bytes: Uint8Array): boolean {
  if (bytes.length < 100) return false; // the header alone is 100 bytes
  return Buffer.from(bytes.buffer, bytes.byteOffset, 16).toString("latin1") === SQLITE_HEADER;
}

/** Full integrity check: page structure, indexes and constraints. Throws CorruptRegistry. */
export function checkIntegrity(db: SqlDatabase): void {
  let rows: unknown[][];
  try {
    rows = db.exec("PRAGMA integrity_check")[0]?.values ?? [];
  } catch (e) {
    throw new CorruptRegistry(`integrity check failed: ${(e as Error).message}`);
  }
  if (rows.length !== 1 || rows[0][0] !== "ok")
    throw new CorruptRegistry(
      `integrity check failed: ${rows
        .slice(0, 3)
        .map((r) => String(r[0]))
        .join("; ")}`,
    );
}

/** 0 for an empty database; throws CorruptRegistry for a database that is not an rbee registry. */
export function schemaVersionOf(db: SqlDatabase): number {
  const tables = new Set(
    (db.exec("SELECT name FROM sqlite_master WHERE type = 'table'")[0]?.values ?? []).map((r) => String(r[0])),
  );
  if (tables.size === 0) return 0;
  if (!tables.has("meta"))
    throw new CorruptRegistry(`not an rbee registry (tables ${[...tables].join(", ")} but no meta table)`);
  const raw = db.exec("SELECT value FROM meta WHERE key = 'schema_version'")[0]?.values[0]?.[0];
  const version = Number(raw);
  if (!Number.isInteger(version) || version < 1)
    throw new CorruptRegistry(`meta.schema_version is ${JSON.stringify(raw)}, not a version`);
  return version;
}

/** A file whose meta says "current version" but whose tables are missing or lack columns is corrupt. */
export function checkShape(db: SqlDatabase): void {
  for (const [table, columns] of Object.entries(TABLE_COLUMNS)) {
    try {
      db.exec(`SELECT ${columns.join(", ")} FROM ${table} LIMIT 0`);
    } catch (e) {
      throw new CorruptRegistry(`table ${table} is not as rbee writes it: ${(e as Error).message}`);
    }
  }
}

/**
 * Brings `db` to `target` (default: the newest version), one migration per transaction.
 * Returns the versions applied. Refuses a database newer than this build knows.
 */
export function migrate(db: SqlDatabase, target = SCHEMA_VERSION, file = "the registry"): number[] {
  const current = schemaVersionOf(db);
  if (current > SCHEMA_VERSION)
    throw new RegistryError(
      "REGISTRY_SCHEMA_TOO_NEW",
      `${file} has schema version ${current}, but this rbee knows only up to ${SCHEMA_VERSION}: it was written by a newer rbee. ` +
        `Upgrade rbee (the extension and the CLI) to use it.`,
      { found: current, supported: SCHEMA_VERSION },
    );
  const applied: number[] = [];
  for (const m of MIGRATIONS) {
    if (m.version <= current || m.version > target) continue;
    db.run("BEGIN");
    try {
      db.run(m.sql);
      db.run(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [String(m.version)],
      );
      db.run("COMMIT");
    } catch (e) {
      try {
        db.run("ROLLBACK");
      } catch {
        // SQLite already ended the transaction
      }
      throw e;
    }
    applied.push(m.version);
  }
  return applied;
}
