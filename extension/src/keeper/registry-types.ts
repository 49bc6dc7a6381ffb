// The registry's record types, its error type and its input validation.
// Field names follow protocol.ts (snake_case) wherever a registry record and a wire type overlap, so a
// hive's WorkerInfo / ModelEntry can be stored without renaming anything.

import { BACKENDS, WORKER_STATES, type Backend, type WorkerState } from "@rbee/hive-agent/protocol";
import { CodedError, type CodedErrorOptions } from "@rbee/hive-agent/util/coded-error";

export const NODE_TRANSPORTS = ["loopback", "ssh"] as const;
export type NodeTransport = (typeof NODE_TRANSPORTS)[number];

/** What the keeper last learnt about a node. "unknown" until it has been contacted once. */
export const NODE_STATUSES = ["unknown", "online", "offline", "deploying", "error"] as const;
export type NodeStatus = (typeof NODE_STATUSES)[number];

export interface NodeRecord {
  /** The ~/.ssh/config host alias, or "localhost". */
  alias: string;
  /** The address the alias resolves to (HostName), for display. */
  host: string;
  transport: NodeTransport;
  /** Version of the hive-agent last seen on the node; null before the first contact. */
  agent_version: string | null;
  /** Epoch ms of the last successful contact. */
  last_seen: number | null;
  status: NodeStatus;
  /** Message of the last failure, null once the node answers again. */
  last_error: string | null;
}

export type NodeInput = Pick<NodeRecord, "alias" | "host" | "transport"> &
  Partial<Omit<NodeRecord, "alias" | "host" | "transport">>;

export interface WorkerRecord {
  id: string;
  node: string;
  model_ref: string;
  /** Base URL on the node (127.0.0.1); empty while loading. */
  url: string;
  backend: Backend;
  device: number;
  state: WorkerState;
  slots_total: number;
  /** The worker's bearer key. A secret: never log a WorkerRecord whole. */
  api_key: string;
  /** Epoch ms of the last health check that succeeded; null = never checked. */
  last_health_at: number | null;
  created_at: number;
  /** Decode speed of the worker's last finished request (schema v2). */
  last_tokens_per_second: number | null;
}

export type WorkerInput = Omit<WorkerRecord, "last_health_at" | "created_at" | "last_tokens_per_second"> &
  Partial<Pick<WorkerRecord, "last_health_at" | "created_at" | "last_tokens_per_second">>;

export interface ModelRecord {
  node: string;
  model_ref: string;
  local_path: string;
  size_bytes: number;
  sha256: string | null;
}

export type ModelInput = Omit<ModelRecord, "sha256"> & { sha256?: string | null };

export type RegistryErrorCode =
  | "REGISTRY_INVALID_INPUT"
  | "REGISTRY_UNKNOWN_NODE"
  | "REGISTRY_LOCK_TIMEOUT"
  | "REGISTRY_SCHEMA_TOO_NEW"
  | "REGISTRY_WASM_NOT_FOUND"
  | "REGISTRY_IO"
  | "REGISTRY_CLOSED";

/** Whether trying again may help: only a lock that another rbee process held for too long is let go of in time. */
export const REGISTRY_ERROR_RETRIABLE: Record<RegistryErrorCode, boolean> = {
  REGISTRY_INVALID_INPUT: false,
  REGISTRY_UNKNOWN_NODE: false,
  REGISTRY_LOCK_TIMEOUT: true,
  REGISTRY_SCHEMA_TOO_NEW: false,
  REGISTRY_WASM_NOT_FOUND: false,
  REGISTRY_IO: false,
  REGISTRY_CLOSED: false,
};

/** Every failure the registry reports on purpose; `message` says what to do next. */
export class RegistryError extends CodedError<RegistryErrorCode> {
  constructor(
    code: RegistryErrorCode,
    message: string,
    details?: Record<string, unknown>,
    options?: CodedErrorOptions,
  ) {
    super(code, message, details, options);
    this.name = "RegistryError";
  }
  get retriable(): boolean {
    return REGISTRY_ERROR_RETRIABLE[this.code];
  }
}

/** Receives the registry's warnings (corrupt file moved aside, lock broken); never receives secrets. */
export type RegistryLogger = (level: "info" | "warn", message: string) => void;

// ---------------------------------------------------------------------------------------------
// Validation: a bad value must fail here with the field named, not later as an opaque SQL error.

function invalid(what: string, field: string, want: string, got: unknown): never {
  throw new RegistryError(
    "REGISTRY_INVALID_INPUT",
    `${what}: field "${field}" must be ${want} (got ${JSON.stringify(got) ?? String(got)})`,
    { field },
  );
}
function nonEmpty(what: string, o: Record<string, unknown>, f: string, maxLen = 4096): string {
  const v = o[f];
  if (typeof v !== "string" || v.length === 0 || v.length > maxLen)
    invalid(what, f, `a non-empty string of at most ${maxLen} characters`, v);
  return v;
}
function str(what: string, o: Record<string, unknown>, f: string, maxLen = 4096): string {
  const v = o[f];
  if (typeof v !== "string" || v.length > maxLen) invalid(what, f, `a string of at most ${maxLen} characters`, v);
  return v;
}
function int(what: string, o: Record<string, unknown>, f: string, min: number): number {
  const v = o[f];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) invalid(what, f, `an integer ≥ ${min}`, v);
  return v;
}
function optInt(what: string, o: Record<string, unknown>, f: string, min: number): number | null {
  return o[f] === undefined || o[f] === null ? null : int(what, o, f, min);
}
function optNum(what: string, o: Record<string, unknown>, f: string): number | null {
  const v = o[f];
  if (v === undefined || v === null) return null;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) invalid(what, f, "a finite number ≥ 0", v);
  return v;
}
function optStr(what: string, o: Record<string, unknown>, f: string, maxLen = 65536): string | null {
  return o[f] === undefined || o[f] === null ? null : str(what, o, f, maxLen);
}
function oneOf<T extends string>(what: string, o: Record<string, unknown>, f: string, values: readonly T[]): T {
  const v = o[f];
  if (!values.includes(v as T)) invalid(what, f, `one of ${values.join(", ")}`, v);
  return v as T;
}

/** A lookup key (alias, id) checked before it is used in a query. */
export function keyString(what: string, field: string, value: unknown): string {
  return nonEmpty(what, { [field]: value }, field, 2048);
}

export function validateNode(input: NodeInput): NodeRecord {
  const o = input as unknown as Record<string, unknown>;
  const w = "upsertNode";
  return {
    alias: nonEmpty(w, o, "alias", 255),
    host: str(w, o, "host", 1024),
    transport: oneOf(w, o, "transport", NODE_TRANSPORTS),
    agent_version: optStr(w, o, "agent_version", 64),
    last_seen: optInt(w, o, "last_seen", 0),
    status: o.status === undefined ? "unknown" : oneOf(w, o, "status", NODE_STATUSES),
    last_error: optStr(w, o, "last_error"),
  };
}

/** `created_at` defaults to `now`; the caller keeps an existing row's value on update. */
export function validateWorker(input: WorkerInput, now: number): WorkerRecord {
  const o = input as unknown as Record<string, unknown>;
  const w = "upsertWorker";
  return {
    id: nonEmpty(w, o, "id", 128),
    node: nonEmpty(w, o, "node", 255),
    model_ref: nonEmpty(w, o, "model_ref", 2048),
    url: str(w, o, "url", 256),
    backend: oneOf(w, o, "backend", BACKENDS),
    device: int(w, o, "device", 0),
    state: oneOf(w, o, "state", WORKER_STATES),
    slots_total: int(w, o, "slots_total", 1),
    api_key: str(w, o, "api_key", 1024),
    last_health_at: optInt(w, o, "last_health_at", 0),
    created_at: optInt(w, o, "created_at", 0) ?? now,
    last_tokens_per_second: optNum(w, o, "last_tokens_per_second"),
  };
}

export function validateModel(input: ModelInput): ModelRecord {
  const o = input as unknown as Record<string, unknown>;
  const w = "upsertModel";
  const sha256 = optStr(w, o, "sha256", 64);
  if (sha256 !== null && !/^[0-9a-fA-F]{64}$/.test(sha256)) invalid(w, "sha256", "64 hexadecimal characters", sha256);
  return {
    node: nonEmpty(w, o, "node", 255),
    model_ref: nonEmpty(w, o, "model_ref", 2048),
    local_path: str(w, o, "local_path", 4096),
    size_bytes: int(w, o, "size_bytes", 0),
    sha256: sha256?.toLowerCase() ?? null,
  };
}
