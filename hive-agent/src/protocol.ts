// THE contract between the keeper and the hive-agent (protocol v1, described in docs/protocol.md).
// Both sides import this module: every request, response, SSE event and error code lives here once.
// Field names are snake_case on the wire.

export const API_VERSION = "v1";
declare const __RBEE_VERSION__: string | undefined;
/**
 * Version of this build (package.json's, injected by esbuild); the keeper compares it with the
 * hive's. Unbundled code (tests under tsx) reads package.json.
 */
export const AGENT_VERSION: string =
  typeof __RBEE_VERSION__ === "string" ? __RBEE_VERSION__ : (require("../../package.json") as { version: string }).version;

/** Versions that can talk: the same major, and for 0.x the same minor too (semver's rule for 0.x). */
export function versionsCompatible(a: string, b: string): boolean {
  const [am, an] = a.split(".").map(Number);
  const [bm, bn] = b.split(".").map(Number);
  return am === bm && (am !== 0 || an === bn);
}

// ---------------------------------------------------------------------------------------------
// Errors

export const ERROR_CODES = [
  "CONNECTION_TIMEOUT",
  "NODE_UNREACHABLE",
  "VERSION_MISMATCH",
  "INVALID_API_KEY",
  "INVALID_REQUEST",
  "NOT_FOUND",
  "PAYLOAD_TOO_LARGE",
  "MODEL_NOT_FOUND",
  "DOWNLOAD_FAILED",
  "INSUFFICIENT_RAM",
  "VRAM_EXHAUSTED",
  "BACKEND_UNAVAILABLE",
  "ALL_SLOTS_BUSY",
  "WORKER_NOT_FOUND",
  "WORKER_CRASHED",
  "WORKER_NOT_READY",
  "LOADING_FAILED",
  "LOADING_TIMEOUT",
  "REQUEST_CANCELLED",
  "INFILL_UNSUPPORTED",
  "SHUTTING_DOWN",
  "INTERNAL",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The HTTP status each code is sent with. */
export const ERROR_STATUS: Record<ErrorCode, number> = {
  CONNECTION_TIMEOUT: 504,
  NODE_UNREACHABLE: 503,
  VERSION_MISMATCH: 409,
  INVALID_API_KEY: 401,
  INVALID_REQUEST: 400,
  NOT_FOUND: 404,
  PAYLOAD_TOO_LARGE: 413,
  MODEL_NOT_FOUND: 404,
  DOWNLOAD_FAILED: 502,
  INSUFFICIENT_RAM: 507,
  VRAM_EXHAUSTED: 507,
  BACKEND_UNAVAILABLE: 422,
  ALL_SLOTS_BUSY: 503,
  WORKER_NOT_FOUND: 404,
  WORKER_CRASHED: 502,
  WORKER_NOT_READY: 503,
  LOADING_FAILED: 500,
  LOADING_TIMEOUT: 504,
  REQUEST_CANCELLED: 499,
  INFILL_UNSUPPORTED: 422,
  SHUTTING_DOWN: 503,
  INTERNAL: 500,
};

export interface ErrorBody {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}
export interface ErrorEnvelope {
  error: ErrorBody;
}

/** An error that carries its protocol code; thrown on both sides, serialised as an ErrorEnvelope. */
export class RbeeError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "RbeeError";
  }
  get status(): number {
    return ERROR_STATUS[this.code];
  }
  toEnvelope(): ErrorEnvelope {
    return { error: { code: this.code, message: this.message, ...(this.details ? { details: this.details } : {}) } };
  }
}

export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === "string" && (ERROR_CODES as readonly string[]).includes(x);
}

export function isErrorEnvelope(x: unknown): x is ErrorEnvelope {
  return isObject(x) && isObject(x.error) && typeof x.error.message === "string" && isErrorCode(x.error.code);
}

// ---------------------------------------------------------------------------------------------
// Hive (one per node)

export const BACKENDS = ["cuda", "metal", "vulkan", "cpu"] as const;
export type Backend = (typeof BACKENDS)[number];

export interface HealthResponse {
  status: "alive";
  version: string;
  api_version: typeof API_VERSION;
}

export interface DeviceInfo {
  backend: Backend;
  /** Index within its backend (what CUDA_VISIBLE_DEVICES selects). */
  index: number;
  name: string;
  vram_total_bytes: number;
  vram_free_bytes: number;
  /** The value of the backend's device variable (CUDA_VISIBLE_DEVICES…) that gives a worker this device alone. */
  pin_id?: string;
  /** In capabilities: bytes rbee's workers hold or have reserved here (vram_free_bytes already excludes them). */
  vram_reserved_bytes?: number;
  /** In capabilities: ids of the workers placed on this device. */
  workers?: string[];
}

/** What `hive-agent detect` finds on the node. */
export interface NodeHardware {
  backends: Backend[];
  devices: DeviceInfo[];
  ram_total_bytes: number;
  ram_free_bytes: number;
  /** CPU cores workers may use: the process's CPU affinity, capped by its cgroup's CPU quota. */
  cpu_cores: number;
  platform: string;
  arch: string;
}

export const NATIVE_BUILD_STATES = ["ready", "building", "failed", "skipped"] as const;
export type NativeBuildState = (typeof NATIVE_BUILD_STATES)[number];

/**
 * The node's own CPU build of llama.cpp (OpenMP, its instruction sets), which CPU workers of 2+
 * threads use; the hive makes it in the background where it pays off. Workers started before it is
 * ready use node-llama-cpp's prebuilt.
 */
export interface NativeBuildStatus {
  state: NativeBuildState;
  /** Why, in words a user can act on. */
  detail: string;
}

export interface CapabilitiesResponse extends NodeHardware {
  native_build: NativeBuildStatus;
  /** How long a worker may sit idle before the hive stops it, unless its spawn said otherwise; 0 = never. */
  idle_timeout_s: number;
}

export const WORKER_STATES = ["loading", "idle", "busy", "stopping"] as const;
export type WorkerState = (typeof WORKER_STATES)[number];

export interface WorkerInfo {
  id: string;
  /** Base URL of the worker on the node (127.0.0.1 only); empty while it is loading. */
  url: string;
  model_ref: string;
  backend: Backend;
  /** The first of `devices` (0 on the CPU), for callers that know one device only. */
  device: number;
  /** Every device the worker runs on (several when the model is split across GPUs); empty on the CPU. */
  devices: number[];
  /** Names of the GPUs the worker's llama.cpp sees (exactly its own devices), once it is ready. */
  gpu_devices?: string[];
  /** Memory the worker holds (RAM on the CPU, VRAM over its devices): estimated until it reports its use. */
  memory_bytes: number;
  /** Idle seconds before the hive stops it; 0 = never. */
  keep_alive_s: number;
  state: WorkerState;
  slots_total: number;
  slots_busy: number;
  /** Context per slot, in tokens, and decode threads the worker was started with. */
  context_size: number;
  threads: number;
  /** Epoch milliseconds of the last request start or end. */
  last_activity: number;
  /** Loading progress 0..1 while state is "loading". */
  progress?: number;
  /** Decode speed of the last finished request, tokens/s. */
  last_tokens_per_second?: number;
  /** Process id on the node. */
  pid: number;
  /** The worker's own bearer key; only sent to a caller that holds the hive token. */
  api_key: string;
}

export interface WorkersResponse {
  workers: WorkerInfo[];
}

export interface SpawnRequest {
  model_ref: string;
  backend?: Backend;
  /** A GPU index, or "auto" (the default): the device with room and the least load. */
  device?: number | "auto";
  /** Split the model over these GPUs (llama.cpp's layer split). */
  devices?: number[];
  /** With device "auto": span several GPUs when no single one has room. */
  allow_split?: boolean;
  /** Idle seconds before the hive stops this worker (0 = never; like Ollama's keep_alive); default: the node's. */
  keep_alive?: number;
  context_size?: number;
  slots?: number;
  threads?: number;
  batch_size?: number;
}

export interface SpawnResponse {
  worker_id: string;
  url: string;
  state: "loading";
  api_key: string;
}

/** Worker → hive callback once the model is loaded and the worker listens. */
export interface ReadyCallback {
  worker_id: string;
  url: string;
  model_ref: string;
  backend: Backend;
  device: number;
  /** What the worker's llama.cpp sees: the names of its GPUs. */
  gpu_devices?: string[];
  /** VRAM the worker's load took, measured by the worker (absent where the driver does not tell). */
  vram_used_bytes?: number;
}

/** Worker → hive callback when loading failed, so the hive can report it instead of a silent exit. */
export interface LoadFailedCallback {
  worker_id: string;
  code: ErrorCode;
  message: string;
}

export interface ModelEntry {
  model_ref: string;
  local_path: string;
  size_bytes: number;
  sha256?: string;
}
export interface ModelsResponse {
  models: ModelEntry[];
}

export interface DownloadRequest {
  model_ref: string;
  /** Expected SHA-256 (hex) when the caller knows it; the download is refused on mismatch. */
  sha256?: string;
}
export interface DownloadResponse {
  download_id: string;
}

export type DownloadProgressEvent =
  | { stage: "downloading"; bytes_downloaded: number; bytes_total: number | null; speed_bps: number; attempt: number }
  | { stage: "retrying"; attempt: number; max_attempts: number; delay_ms: number; message: string }
  | { stage: "verifying" }
  | { stage: "complete"; local_path: string; size_bytes: number; sha256: string }
  | { stage: "error"; code: ErrorCode; message: string };

// ---------------------------------------------------------------------------------------------
// Worker (one process per loaded model)

/** A worker's GET /v1/health. */
export interface WorkerHealth {
  status: "alive";
  state: WorkerState;
  slots_total: number;
  slots_busy: number;
  last_activity: number;
  last_tokens_per_second?: number;
}

export interface ReadyResponse {
  ready: boolean;
  state: WorkerState;
  progress?: number;
}

export type LoadingProgressEvent =
  | { stage: "loading"; progress: number }
  | { stage: "ready" }
  | { stage: "error"; code: ErrorCode; message: string };

/** Sampling options shared by every generation request. */
export interface SamplingOptions {
  request_id?: string;
  max_tokens: number;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  seed?: number;
  stop?: string[];
}

export interface InferenceRequest extends SamplingOptions {
  prompt: string;
}
export interface InfillRequest extends SamplingOptions {
  prefix: string;
  suffix: string;
  // Code completion extras (issue 14). Named and shaped as llama.cpp's /infill names them, so a
  // llama.cpp-compatible front end passes them through unchanged. All optional: older callers
  // send none. max_tokens may be 0 here: evaluate the prompt into the slot's cache (a warm-up).
  /** Chunks of other files, laid out before the prefix (repo-level FIM where the model has it). */
  input_extra?: InfillExtraChunk[];
  /** Stop once generation has run this long (from the first token) at a line end; at twice it, anywhere. */
  t_max_predict_ms?: number;
  /** Stop at a generated line indented by fewer than this many spaces or tabs. */
  n_indent?: number;
}
export interface InfillExtraChunk {
  text: string;
  filename?: string;
}
export const CHAT_ROLES = ["system", "user", "assistant"] as const;
export type ChatRole = (typeof CHAT_ROLES)[number];
export interface ChatMessage {
  role: ChatRole;
  content: string;
}
export interface ChatRequest extends SamplingOptions {
  messages: ChatMessage[];
}

export const STOP_REASONS = ["max_tokens", "eos", "stop_sequence", "cancelled", "time_limit", "indent"] as const;
export type StopReason = (typeof STOP_REASONS)[number];

export type StreamEvent =
  | { type: "started"; request_id: string; model: string }
  | { type: "token"; t: string; i: number }
  | {
      type: "end"; tokens_out: number; decode_ms: number; stop_reason: StopReason; first_token_ms?: number; tokens_in?: number;
      /** How many of the tokens_in prompt tokens the slot's KV cache already held (not evaluated). */
      cached_tokens?: number;
    }
  | { type: "error"; code: ErrorCode; message: string };

/** The SSE data line that closes every stream. */
export const SSE_DONE = "[DONE]";

// ---------------------------------------------------------------------------------------------
// Paths, in one place so neither side spells them twice.

export const HIVE_PATHS = {
  health: "/v1/health",
  capabilities: "/v1/capabilities",
  workers: "/v1/workers",
  spawn: "/v1/workers/spawn",
  ready: "/v1/workers/ready",
  loadFailed: "/v1/workers/load-failed",
  shutdown: (id: string) => `/v1/workers/${encodeURIComponent(id)}/shutdown`,
  models: "/v1/models",
  download: "/v1/models/download",
  downloadProgress: (id: string) => `/v1/models/download/${encodeURIComponent(id)}/progress`,
  /** DELETE: stops a download (Cancel in the editor reaches the node). */
  downloadCancel: (id: string) => `/v1/models/download/${encodeURIComponent(id)}`,
} as const;

export const WORKER_PATHS = {
  health: "/v1/health",
  ready: "/v1/ready",
  loadingProgress: "/v1/loading/progress",
  inference: "/v1/inference",
  infill: "/v1/infill",
  chat: "/v1/chat",
  cancel: (requestId: string) => `/v1/inference/${encodeURIComponent(requestId)}`,
} as const;

// ---------------------------------------------------------------------------------------------
// Runtime validators for what arrives from the network. Each throws RbeeError(INVALID_REQUEST)
// naming the offending field, so a caller learns exactly what to fix.

function isObject(x: unknown): x is Record<string, any> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function invalid(field: string, want: string): never {
  throw new RbeeError("INVALID_REQUEST", `field "${field}" must be ${want}`, { field });
}

function reqObject(x: unknown): Record<string, any> {
  if (!isObject(x)) throw new RbeeError("INVALID_REQUEST", "request body must be a JSON object");
  return x;
}

function optString(o: Record<string, any>, f: string, maxLen = 1 << 20): string | undefined {
  const v = o[f];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v.length > maxLen) invalid(f, `a string of at most ${maxLen} characters`);
  return v;
}
function reqString(o: Record<string, any>, f: string, maxLen = 1 << 20): string {
  const v = optString(o, f, maxLen);
  if (v === undefined) invalid(f, "present (a string)");
  return v;
}
function optNumber(o: Record<string, any>, f: string, min: number, max: number, integer = false): number | undefined {
  const v = o[f];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v)))
    invalid(f, `${integer ? "an integer" : "a number"} between ${min} and ${max}`);
  return v;
}
function optEnum<T extends string>(o: Record<string, any>, f: string, values: readonly T[]): T | undefined {
  const v = o[f];
  if (v === undefined) return undefined;
  if (!values.includes(v)) invalid(f, `one of ${values.join(", ")}`);
  return v as T;
}

export const MAX_TOKENS_LIMIT = 32768;

function parseSampling(o: Record<string, any>): SamplingOptions {
  const max_tokens = optNumber(o, "max_tokens", 1, MAX_TOKENS_LIMIT, true);
  if (max_tokens === undefined) invalid("max_tokens", `present (an integer between 1 and ${MAX_TOKENS_LIMIT})`);
  const request_id = optString(o, "request_id", 128);
  if (request_id !== undefined && !/^[A-Za-z0-9._:-]{1,128}$/.test(request_id))
    invalid("request_id", "1-128 characters of letters, digits, '.', '_', ':' or '-'");
  let stop: string[] | undefined;
  if (o.stop !== undefined) {
    if (!Array.isArray(o.stop) || o.stop.length > 16 || !o.stop.every((s: unknown) => typeof s === "string" && s.length > 0 && s.length <= 256))
      invalid("stop", "an array of at most 16 non-empty strings");
    stop = o.stop;
  }
  return {
    request_id,
    max_tokens,
    temperature: optNumber(o, "temperature", 0, 10),
    top_p: optNumber(o, "top_p", 0, 1),
    top_k: optNumber(o, "top_k", 0, 100000, true),
    seed: optNumber(o, "seed", 0, 2 ** 32 - 1, true),
    stop,
  };
}

export function parseInferenceRequest(x: unknown): InferenceRequest {
  const o = reqObject(x);
  return { ...parseSampling(o), prompt: reqString(o, "prompt") };
}

export const MAX_EXTRA_CHUNKS = 256;

export function parseInfillRequest(x: unknown): InfillRequest {
  const o = reqObject(x);
  // A warm-up (max_tokens 0) only fills the cache; every other field is as for a completion.
  const warmUp = o.max_tokens === 0;
  const r: InfillRequest = { ...parseSampling(warmUp ? { ...o, max_tokens: 1 } : o), prefix: reqString(o, "prefix"), suffix: reqString(o, "suffix") };
  if (warmUp) r.max_tokens = 0;
  if (o.input_extra !== undefined) {
    const e = o.input_extra;
    if (!Array.isArray(e) || e.length > MAX_EXTRA_CHUNKS) invalid("input_extra", `an array of at most ${MAX_EXTRA_CHUNKS} chunks`);
    r.input_extra = e.map((c: unknown, i: number) => {
      if (!isObject(c)) invalid(`input_extra[${i}]`, "an object with text and optional filename");
      const filename = optString(c, "filename", 1024);
      if (typeof c.text !== "string" || c.text.length > 1 << 20) invalid(`input_extra[${i}].text`, "a string of at most 1048576 characters");
      return { text: c.text, ...(filename !== undefined ? { filename } : {}) };
    });
  }
  const budget = optNumber(o, "t_max_predict_ms", 0, 600_000);
  if (budget !== undefined && budget > 0) r.t_max_predict_ms = budget;
  const indent = optNumber(o, "n_indent", 0, 1024, true);
  if (indent !== undefined && indent > 0) r.n_indent = indent;
  return r;
}

export function parseChatRequest(x: unknown): ChatRequest {
  const o = reqObject(x);
  const m = o.messages;
  if (!Array.isArray(m) || m.length === 0 || m.length > 1000) invalid("messages", "a non-empty array");
  const messages = m.map((msg: unknown, i: number) => {
    if (!isObject(msg)) invalid(`messages[${i}]`, "an object with role and content");
    const role = msg.role as ChatRole;
    if (!CHAT_ROLES.includes(role)) invalid(`messages[${i}].role`, `one of ${CHAT_ROLES.join(", ")}`);
    if (typeof msg.content !== "string") invalid(`messages[${i}].content`, "a string");
    return { role, content: msg.content };
  });
  return { ...parseSampling(o), messages };
}

/** Parses a keep-alive: seconds (0 = never stop, -1 too, as Ollama takes it) or "30s", "5m", "2h". */
export function parseKeepAlive(v: unknown, field = "keep_alive"): number | undefined {
  if (v === undefined) return undefined;
  const want = 'seconds (0 = never) or a duration like "30s", "5m", "2h"';
  if (typeof v === "number") {
    if (v === -1) return 0;
    if (!Number.isInteger(v) || v < 0 || v > 366 * 86400) invalid(field, want);
    return v;
  }
  const m = typeof v === "string" ? /^(-1|\d+)\s*(s|m|h|d)?$/.exec(v.trim()) : null;
  if (!m) invalid(field, want);
  if (m[1] === "-1") return 0;
  const n = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? "s") as "s" | "m" | "h" | "d"];
  if (n > 366 * 86400) invalid(field, want);
  return n;
}

export function parseSpawnRequest(x: unknown): SpawnRequest {
  const o = reqObject(x);
  let devices: number[] | undefined;
  if (o.devices !== undefined) {
    if (!Array.isArray(o.devices) || !o.devices.length || o.devices.length > 64 || !o.devices.every((d: unknown) => Number.isInteger(d) && (d as number) >= 0 && (d as number) <= 64))
      invalid("devices", "a non-empty array of GPU indices");
    devices = o.devices;
  }
  if (o.allow_split !== undefined && typeof o.allow_split !== "boolean") invalid("allow_split", "true or false");
  return {
    model_ref: reqString(o, "model_ref", 2048),
    backend: optEnum(o, "backend", BACKENDS),
    device: o.device === "auto" ? "auto" : optNumber(o, "device", 0, 64, true),
    devices,
    allow_split: o.allow_split,
    keep_alive: parseKeepAlive(o.keep_alive),
    context_size: optNumber(o, "context_size", 16, 1 << 22, true),
    slots: optNumber(o, "slots", 1, 64, true),
    threads: optNumber(o, "threads", 1, 1024, true),
    batch_size: optNumber(o, "batch_size", 1, 1 << 16, true),
  };
}

export function parseReadyCallback(x: unknown): ReadyCallback {
  const o = reqObject(x);
  const backend = optEnum(o, "backend", BACKENDS);
  if (backend === undefined) invalid("backend", `one of ${BACKENDS.join(", ")}`);
  const device = optNumber(o, "device", 0, 64, true);
  if (device === undefined) invalid("device", "present (an integer)");
  if (o.gpu_devices !== undefined && (!Array.isArray(o.gpu_devices) || o.gpu_devices.length > 64 || !o.gpu_devices.every((n: unknown) => typeof n === "string" && n.length <= 256)))
    invalid("gpu_devices", "an array of device names");
  return {
    worker_id: reqString(o, "worker_id", 128),
    url: reqString(o, "url", 256),
    model_ref: reqString(o, "model_ref", 2048),
    backend,
    device,
    gpu_devices: o.gpu_devices,
    vram_used_bytes: optNumber(o, "vram_used_bytes", 0, Number.MAX_SAFE_INTEGER, true),
  };
}

export function parseLoadFailedCallback(x: unknown): LoadFailedCallback {
  const o = reqObject(x);
  const code = o.code;
  if (!isErrorCode(code)) invalid("code", "a known error code");
  return { worker_id: reqString(o, "worker_id", 128), code, message: reqString(o, "message", 8192) };
}

export function parseDownloadRequest(x: unknown): DownloadRequest {
  const o = reqObject(x);
  const sha256 = optString(o, "sha256", 64);
  if (sha256 !== undefined && !/^[0-9a-fA-F]{64}$/.test(sha256)) invalid("sha256", "64 hexadecimal characters");
  return { model_ref: reqString(o, "model_ref", 2048), sha256: sha256?.toLowerCase() };
}

/** Validates one SSE event of a generation stream (keeper side). */
export function parseStreamEvent(x: unknown): StreamEvent {
  if (!isObject(x) || typeof x.type !== "string") throw new RbeeError("INVALID_REQUEST", "stream event without a type");
  switch (x.type) {
    case "started":
    case "token":
    case "end":
      return x as StreamEvent;
    case "error":
      if (!isErrorCode(x.code)) return { type: "error", code: "INTERNAL", message: String(x.message ?? "unknown error") };
      return x as StreamEvent;
    default:
      throw new RbeeError("INVALID_REQUEST", `unknown stream event type "${x.type}"`);
  }
}
