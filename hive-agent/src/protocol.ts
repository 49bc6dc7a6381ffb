// THE contract between the keeper and the hive-agent (protocol v1, described in docs/protocol.md).
// Both sides import this module: every request, response, SSE event and error code lives here once.
// Field names are snake_case on the wire.

import * as v from "valibot";
import { CodedError, type CodedErrorOptions } from "./util/coded-error";

export const API_VERSION = "v1";
declare const __RBEE_VERSION__: string | undefined;
/**
 * Version of this build (package.json's, injected by esbuild); the keeper compares it with the
 * hive's. Unbundled code (tests under tsx) reads package.json.
 */
export const AGENT_VERSION: string =
  typeof __RBEE_VERSION__ === "string"
    ? __RBEE_VERSION__
    : (require("../../package.json") as { version: string }).version;

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
  "STREAM_STALLED",
  "INVALID_REPLY",
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
  STREAM_STALLED: 504,
  INVALID_REPLY: 502,
  INFILL_UNSUPPORTED: 422,
  SHUTTING_DOWN: 503,
  INTERNAL: 500,
};

/**
 * Whether trying the same call again may succeed: the node or worker was out of reach or busy for a
 * moment. Every other code is an answer that a retry would repeat. (A download's DOWNLOAD_FAILED is a
 * network failure that may pass; the download's own permanent failures say otherwise, see PermanentError.)
 */
export const ERROR_RETRIABLE: Record<ErrorCode, boolean> = {
  CONNECTION_TIMEOUT: true,
  NODE_UNREACHABLE: true,
  VERSION_MISMATCH: false,
  INVALID_API_KEY: false,
  INVALID_REQUEST: false,
  NOT_FOUND: false,
  PAYLOAD_TOO_LARGE: false,
  MODEL_NOT_FOUND: false,
  DOWNLOAD_FAILED: true,
  INSUFFICIENT_RAM: false,
  VRAM_EXHAUSTED: false,
  BACKEND_UNAVAILABLE: false,
  ALL_SLOTS_BUSY: true,
  WORKER_NOT_FOUND: false,
  WORKER_CRASHED: false,
  WORKER_NOT_READY: true,
  LOADING_FAILED: false,
  LOADING_TIMEOUT: false,
  REQUEST_CANCELLED: false,
  STREAM_STALLED: false,
  INVALID_REPLY: false,
  INFILL_UNSUPPORTED: false,
  SHUTTING_DOWN: true,
  INTERNAL: false,
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
export class RbeeError extends CodedError<ErrorCode> {
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: CodedErrorOptions) {
    super(code, message, details, options);
    this.name = "RbeeError";
  }
  get retriable(): boolean {
    return ERROR_RETRIABLE[this.code];
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

export const HealthResponseSchema = v.object({
  status: v.literal("alive"),
  version: v.pipe(v.string(), v.maxLength(64)),
  api_version: v.literal(API_VERSION),
  /** The hive's process id, so `rbee hive stop` signals the process that answered and no other. */
  pid: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
});
export type HealthResponse = v.InferOutput<typeof HealthResponseSchema>;

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

export const CALIBRATION_STATES = ["ready", "measuring", "waiting", "skipped", "failed"] as const;
export type CalibrationState = (typeof CALIBRATION_STATES)[number];

/**
 * How a worker's concurrent streams share decodes (worker/decode-batching.ts): "together" puts their
 * next tokens in one batch; "one-at-a-time" decodes one stream's token per batch, where the node's
 * calibration measured that batching loses.
 */
export const DECODE_BATCHING = ["together", "one-at-a-time"] as const;
export type DecodeBatching = (typeof DECODE_BATCHING)[number];

/** One candidate binary's figures: decode tokens/s (median of the rounds), or why it is unusable. */
export interface CalibrationResult {
  /** "native", "prebuilt:<ggml CPU variant>". */
  binary: string;
  tokens_per_second?: number;
  /** Every round's figure, in order. */
  runs?: number[];
  /** Set when the binary cannot run here (does not load, crashes, SIGILL). */
  error?: string;
}

/**
 * Which CPU binary decodes fastest on this node, measured by the hive (hive/calibrator.ts) at the
 * thread count CPU workers get by default. CPU workers started at that thread count load `winner`.
 */
export interface CpuCalibration {
  state: CalibrationState;
  /** Why, in words a user can act on. */
  detail: string;
  threads?: number;
  winner?: string;
  winner_tokens_per_second?: number;
  /** The winner with two streams decoding together (batched): their aggregate tokens/s (median of the rounds). */
  two_streams_tokens_per_second?: number;
  /** The same two streams decoded one at a time. */
  two_streams_one_at_a_time_tokens_per_second?: number;
  /** What CPU workers of `threads` threads do with concurrent streams: the faster of the two above (a clear win needed to switch). */
  decode_batching?: DecodeBatching;
  results?: CalibrationResult[];
  /** Epoch ms of the measurement. */
  measured_at?: number;
}

/** "prebuilt:zen4 412 tok/s (1 thread)", "measuring", "skipped": one line for listings and tooltips. */
export function calibrationSummary(c: CpuCalibration | undefined): string {
  if (!c) return "-";
  if (c.state === "ready" && c.winner)
    return `${c.winner} ${c.winner_tokens_per_second ?? "?"} tok/s (${c.threads ?? "?"} thread${c.threads === 1 ? "" : "s"})${
      c.decode_batching === "one-at-a-time" ? ", streams decoded one at a time" : ""
    }`;
  return c.state;
}

export interface CapabilitiesResponse extends NodeHardware {
  native_build: NativeBuildStatus;
  /** Absent from hives older than calibration. */
  cpu_calibration?: CpuCalibration;
  /** How long a worker may sit idle before the hive stops it, unless its spawn said otherwise; 0 = never. */
  idle_timeout_s: number;
}

/**
 * What the keeper checks of a capabilities reply: the fields it uses, with their types. The hardware
 * types stay interfaces (detection adds fields often); unknown extra fields pass through.
 */
export const CapabilitiesReplySchema = v.looseObject({
  backends: v.array(v.picklist(BACKENDS)),
  devices: v.array(
    v.looseObject({
      backend: v.picklist(BACKENDS),
      index: v.pipe(v.number(), v.integer()),
      name: v.string(),
      vram_total_bytes: v.number(),
      vram_free_bytes: v.number(),
    }),
  ),
  ram_total_bytes: v.number(),
  ram_free_bytes: v.number(),
  cpu_cores: v.pipe(v.number(), v.integer(), v.minValue(1)),
  platform: v.string(),
  arch: v.string(),
  native_build: v.looseObject({ state: v.picklist(NATIVE_BUILD_STATES), detail: v.string() }),
  cpu_calibration: v.optional(
    v.looseObject({
      state: v.picklist(CALIBRATION_STATES),
      detail: v.string(),
      threads: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1))),
      winner: v.optional(v.string()),
      winner_tokens_per_second: v.optional(v.number()),
      two_streams_tokens_per_second: v.optional(v.number()),
      two_streams_one_at_a_time_tokens_per_second: v.optional(v.number()),
      decode_batching: v.optional(v.picklist(DECODE_BATCHING)),
      results: v.optional(
        v.array(
          v.looseObject({
            binary: v.string(),
            tokens_per_second: v.optional(v.number()),
            runs: v.optional(v.array(v.number())),
            error: v.optional(v.string()),
          }),
        ),
      ),
      measured_at: v.optional(v.number()),
    }),
  ),
}) as unknown as v.GenericSchema<unknown, CapabilitiesResponse>;

export const WORKER_STATES = ["loading", "idle", "busy", "stopping"] as const;
export type WorkerState = (typeof WORKER_STATES)[number];

// Schemas (valibot): the one definition of every request and reply. The types below are inferred
// from them, the hive and workers validate requests with them (parse* functions), and the keeper
// validates every reply and stream event with them (parseReply), so neither side can drift.
// valibot rather than zod: it is built from separate functions that esbuild tree-shakes, so the
// hive-agent bundle deployed to every node grows by a few kilobytes, not by a whole library.

const int = (min: number, max: number) => {
  const want = `an integer between ${min} and ${max}`;
  return v.pipe(v.number(want), v.integer(want), v.minValue(min, want), v.maxValue(max, want));
};
const num = (min: number, max: number) => {
  const want = `a number between ${min} and ${max}`;
  return v.pipe(v.number(want), v.finite(want), v.minValue(min, want), v.maxValue(max, want));
};
const str = (max = 1 << 20) => {
  const want = `a string of at most ${max} characters`;
  return v.pipe(v.string(want), v.maxLength(max, want));
};
const MAX_KEEP_ALIVE_S = 366 * 86400;
const KEEP_ALIVE_WANT = 'seconds (0 = never) or a duration like "30s", "5m", "2h"';

/** Seconds of a keep-alive: seconds (0 = never stop, -1 too, as Ollama takes it) or "30s", "5m", "2h"; undefined if invalid. */
function keepAliveSeconds(x: unknown): number | undefined {
  if (typeof x === "number") {
    if (x === -1) return 0;
    return Number.isInteger(x) && x >= 0 && x <= MAX_KEEP_ALIVE_S ? x : undefined;
  }
  const m = typeof x === "string" ? /^(-1|\d+)\s*(s|m|h|d)?$/.exec(x.trim()) : null;
  if (!m) return undefined;
  if (m[1] === "-1") return 0;
  const n = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? "s") as "s" | "m" | "h" | "d"];
  return n <= MAX_KEEP_ALIVE_S ? n : undefined;
}

/** Parses a keep-alive (see keepAliveSeconds) or throws INVALID_REQUEST naming `field`. */
export function parseKeepAlive(x: unknown, field = "keep_alive"): number | undefined {
  if (x === undefined) return undefined;
  const n = keepAliveSeconds(x);
  if (n === undefined) throw new RbeeError("INVALID_REQUEST", `field "${field}" must be ${KEEP_ALIVE_WANT}`, { field });
  return n;
}

const oneOf = <T extends string>(values: readonly [T, ...T[]]) => v.picklist(values, `one of ${values.join(", ")}`);
const errorCode = v.picklist(ERROR_CODES, "a known error code");
const backend = oneOf(BACKENDS);

export const WorkerInfoSchema = v.object({
  id: str(128),
  /**
   * Address of the worker on the node: `unix:<hive home>/workers/<id>.sock` (see workerSocketPath),
   * or `http://127.0.0.1:<port>` only where the node has no Unix sockets (Windows).
   */
  url: str(4096),
  model_ref: str(2048),
  backend,
  /** The first of `devices` (0 on the CPU), for callers that know one device only. */
  device: int(0, 1024),
  /** Every device the worker runs on (several when the model is split across GPUs); empty on the CPU. */
  devices: v.array(int(0, 1024)),
  /** Names of the GPUs the worker's llama.cpp sees (exactly its own devices), once it is ready. */
  gpu_devices: v.optional(v.array(str(256))),
  /** CPU workers: the llama.cpp binary it loaded ("native", "prebuilt:zen4", "prebuilt"), once it is ready. */
  cpu_binary: v.optional(str(128)),
  /** How its concurrent streams share decodes, once it is ready. */
  decode_batching: v.optional(oneOf(DECODE_BATCHING)),
  /** Memory the worker holds (RAM on the CPU, VRAM over its devices): estimated until it reports its use. */
  memory_bytes: num(0, Number.MAX_SAFE_INTEGER),
  /** Idle seconds before the hive stops it; 0 = never. */
  keep_alive_s: int(0, MAX_KEEP_ALIVE_S),
  state: oneOf(WORKER_STATES),
  slots_total: int(0, 1024),
  slots_busy: int(0, 1024),
  /** Context per slot, in tokens, and decode threads the worker was started with. */
  context_size: int(0, 1 << 24),
  threads: int(0, 4096),
  /** Epoch milliseconds of the last request start or end. */
  last_activity: num(0, Number.MAX_SAFE_INTEGER),
  /** Loading progress 0..1 while state is "loading". */
  progress: v.optional(num(0, 1)),
  /** Decode speed of the last finished request, tokens/s. */
  last_tokens_per_second: v.optional(num(0, 1e9)),
  /** Process id on the node. */
  pid: int(0, 2 ** 31),
  /** The worker's own bearer key; only sent to a caller that holds the hive token. */
  api_key: str(1024),
});
export type WorkerInfo = v.InferOutput<typeof WorkerInfoSchema>;

export const WorkersResponseSchema = v.object({ workers: v.array(WorkerInfoSchema) });
export type WorkersResponse = v.InferOutput<typeof WorkersResponseSchema>;

export const SpawnRequestSchema = v.object(
  {
    model_ref: str(2048),
    backend: v.optional(backend),
    /** A GPU index, or "auto" (the default): the device with room and the least load. */
    device: v.optional(v.union([v.literal("auto"), int(0, 64)], 'a GPU index (an integer between 0 and 64) or "auto"')),
    /** Split the model over these GPUs (llama.cpp's layer split). */
    devices: v.optional(
      v.pipe(
        v.array(int(0, 64), "a non-empty array of GPU indices"),
        v.minLength(1, "a non-empty array of GPU indices"),
        v.maxLength(64, "a non-empty array of GPU indices"),
      ),
    ),
    /** With device "auto": span several GPUs when no single one has room. */
    allow_split: v.optional(v.boolean("true or false")),
    /** Idle seconds before the hive stops this worker (0 = never; like Ollama's keep_alive); default: the node's. */
    keep_alive: v.optional(
      v.pipe(
        v.union([v.number(), v.string()], KEEP_ALIVE_WANT),
        v.rawTransform(({ dataset, addIssue, NEVER }) => {
          const n = keepAliveSeconds(dataset.value);
          if (n === undefined) {
            addIssue({ message: KEEP_ALIVE_WANT });
            return NEVER;
          }
          return n;
        }),
      ),
    ),
    context_size: v.optional(int(16, 1 << 22)),
    slots: v.optional(int(1, 64)),
    threads: v.optional(int(1, 1024)),
    batch_size: v.optional(int(1, 1 << 16)),
  },
  "request body must be a JSON object",
);
export type SpawnRequest = v.InferOutput<typeof SpawnRequestSchema>;

export const SpawnResponseSchema = v.object({
  worker_id: str(128),
  url: str(4096),
  state: v.literal("loading"),
  api_key: str(1024),
});
export type SpawnResponse = v.InferOutput<typeof SpawnResponseSchema>;

/** Worker → hive callback once the model is loaded and the worker listens. */
export const ReadyCallbackSchema = v.object(
  {
    worker_id: str(128),
    /** Informational: the hive keeps the address it gave the worker and never re-points it. */
    url: str(4096),
    model_ref: str(2048),
    backend,
    device: int(0, 64),
    /** What the worker's llama.cpp sees: the names of its GPUs. */
    gpu_devices: v.optional(
      v.pipe(v.array(str(256), "an array of device names"), v.maxLength(64, "an array of device names")),
    ),
    /** CPU workers: the llama.cpp binary it loaded (native-build.ts CpuBinary). */
    cpu_binary: v.optional(str(128)),
    /** How its concurrent streams share decodes (worker/decode-batching.ts). */
    decode_batching: v.optional(oneOf(DECODE_BATCHING)),
    /** VRAM the worker's load took, measured by the worker (absent where the driver does not tell). */
    vram_used_bytes: v.optional(int(0, Number.MAX_SAFE_INTEGER)),
  },
  "request body must be a JSON object",
);
export type ReadyCallback = v.InferOutput<typeof ReadyCallbackSchema>;

/** Worker → hive callback when loading failed, so the hive can report it instead of a silent exit. */
export const LoadFailedCallbackSchema = v.object(
  { worker_id: str(128), code: errorCode, message: str(8192) },
  "request body must be a JSON object",
);
export type LoadFailedCallback = v.InferOutput<typeof LoadFailedCallbackSchema>;

export const ModelEntrySchema = v.object({
  model_ref: str(2048),
  local_path: str(4096),
  size_bytes: num(0, Number.MAX_SAFE_INTEGER),
  sha256: v.optional(str(64)),
});
export type ModelEntry = v.InferOutput<typeof ModelEntrySchema>;
export const ModelsResponseSchema = v.object({ models: v.array(ModelEntrySchema) });
export type ModelsResponse = v.InferOutput<typeof ModelsResponseSchema>;

export const DownloadRequestSchema = v.object(
  {
    model_ref: str(2048),
    /** Expected SHA-256 (hex) when the caller knows it; the download is refused on mismatch. */
    sha256: v.optional(
      v.pipe(
        v.string("64 hexadecimal characters"),
        v.regex(/^[0-9a-fA-F]{64}$/, "64 hexadecimal characters"),
        v.toLowerCase(),
      ),
    ),
  },
  "request body must be a JSON object",
);
export type DownloadRequest = v.InferOutput<typeof DownloadRequestSchema>;
export const DownloadResponseSchema = v.object({ download_id: str(128) });
export type DownloadResponse = v.InferOutput<typeof DownloadResponseSchema>;
/** DELETE /v1/models/download/{id}: whether the download was still running when it was stopped. */
export const DownloadCancelResponseSchema = v.object({ download_id: str(128), cancelled: v.boolean() });
export type DownloadCancelResponse = v.InferOutput<typeof DownloadCancelResponseSchema>;

export const DownloadProgressEventSchema = v.variant("stage", [
  v.object({
    stage: v.literal("downloading"),
    bytes_downloaded: num(0, Number.MAX_SAFE_INTEGER),
    bytes_total: v.nullable(num(0, Number.MAX_SAFE_INTEGER)),
    speed_bps: num(0, Number.MAX_SAFE_INTEGER),
    attempt: int(0, 1000),
  }),
  v.object({
    stage: v.literal("retrying"),
    attempt: int(0, 1000),
    max_attempts: int(0, 1000),
    delay_ms: num(0, Number.MAX_SAFE_INTEGER),
    message: str(8192),
  }),
  v.object({ stage: v.literal("verifying") }),
  v.object({
    stage: v.literal("complete"),
    local_path: str(4096),
    size_bytes: num(0, Number.MAX_SAFE_INTEGER),
    sha256: str(64),
  }),
  v.object({ stage: v.literal("error"), code: errorCode, message: str(8192) }),
]);
export type DownloadProgressEvent = v.InferOutput<typeof DownloadProgressEventSchema>;

// ---------------------------------------------------------------------------------------------
// Worker (one process per loaded model)

export const ReadyResponseSchema = v.object({
  ready: v.boolean(),
  state: oneOf(WORKER_STATES),
  progress: v.optional(num(0, 1)),
});
export type ReadyResponse = v.InferOutput<typeof ReadyResponseSchema>;

/** What a worker answers the hive's health checks with. */
export const WorkerHealthSchema = v.object({
  status: v.literal("alive"),
  state: oneOf(WORKER_STATES),
  slots_total: int(0, 1024),
  slots_busy: int(0, 1024),
  last_activity: num(0, Number.MAX_SAFE_INTEGER),
  /** Epoch ms of the last token (or request start) while busy: the hive's stall detector reads it. */
  last_progress: num(0, Number.MAX_SAFE_INTEGER),
  last_tokens_per_second: v.optional(num(0, 1e9)),
});
export type WorkerHealth = v.InferOutput<typeof WorkerHealthSchema>;

export const LoadingProgressEventSchema = v.variant("stage", [
  v.object({ stage: v.literal("loading"), progress: num(0, 1) }),
  v.object({ stage: v.literal("ready") }),
  v.object({ stage: v.literal("error"), code: errorCode, message: str(8192) }),
]);
export type LoadingProgressEvent = v.InferOutput<typeof LoadingProgressEventSchema>;

export const MAX_TOKENS_LIMIT = 32768;

const STOP_WANT = "an array of at most 16 non-empty strings of at most 256 characters";

/** Sampling options shared by every generation request. */
const samplingEntries = {
  request_id: v.optional(
    v.pipe(
      v.string(),
      v.regex(/^[A-Za-z0-9._:-]{1,128}$/, "1-128 characters of letters, digits, '.', '_', ':' or '-'"),
    ),
  ),
  max_tokens: int(1, MAX_TOKENS_LIMIT),
  temperature: v.optional(num(0, 10)),
  top_p: v.optional(num(0, 1)),
  top_k: v.optional(int(0, 100000)),
  seed: v.optional(int(0, 2 ** 32 - 1)),
  stop: v.optional(
    v.pipe(
      v.array(v.string(STOP_WANT), STOP_WANT),
      v.maxLength(16, STOP_WANT),
      v.check((a) => a.every((t) => t.length > 0 && t.length <= 256), STOP_WANT),
    ),
  ),
};
export const SamplingOptionsSchema = v.object(samplingEntries, "request body must be a JSON object");
export type SamplingOptions = v.InferOutput<typeof SamplingOptionsSchema>;

export const InferenceRequestSchema = v.object(
  { ...samplingEntries, prompt: str() },
  "request body must be a JSON object",
);
export type InferenceRequest = v.InferOutput<typeof InferenceRequestSchema>;
export const MAX_EXTRA_CHUNKS = 256;
export const InfillExtraChunkSchema = v.object(
  {
    text: v.pipe(
      v.string("a string of at most 1048576 characters"),
      v.maxLength(1 << 20, "a string of at most 1048576 characters"),
    ),
    filename: v.optional(str(1024)),
  },
  "an object with text and optional filename",
);
export type InfillExtraChunk = v.InferOutput<typeof InfillExtraChunkSchema>;
// Code completion extras (issue 14). Named and shaped as llama.cpp's /infill names them, so a
// llama.cpp-compatible front end passes them through unchanged. All optional: older callers send
// none. max_tokens may be 0 here: evaluate the prompt into the slot's cache (a warm-up).
export const InfillRequestSchema = v.object(
  {
    ...samplingEntries,
    max_tokens: int(0, MAX_TOKENS_LIMIT),
    prefix: str(),
    suffix: str(),
    /** Chunks of other files, laid out before the prefix (repo-level FIM where the model has it). */
    input_extra: v.optional(
      v.pipe(
        v.array(InfillExtraChunkSchema, `an array of at most ${MAX_EXTRA_CHUNKS} chunks`),
        v.maxLength(MAX_EXTRA_CHUNKS, `an array of at most ${MAX_EXTRA_CHUNKS} chunks`),
      ),
    ),
    /** Stop once generation has run this long (from the first token) at a line end; at twice it, anywhere. 0 = none. */
    t_max_predict_ms: v.optional(
      v.pipe(
        num(0, 600_000),
        v.transform((n) => (n > 0 ? n : undefined)),
      ),
    ),
    /** Stop at a generated line indented by fewer than this many spaces or tabs. 0 = none. */
    n_indent: v.optional(
      v.pipe(
        int(0, 1024),
        v.transform((n) => (n > 0 ? n : undefined)),
      ),
    ),
  },
  "request body must be a JSON object",
);
export type InfillRequest = v.InferOutput<typeof InfillRequestSchema>;

export const CHAT_ROLES = ["system", "user", "assistant"] as const;
export type ChatRole = (typeof CHAT_ROLES)[number];
export const ChatMessageSchema = v.object(
  { role: oneOf(CHAT_ROLES), content: v.string("a string") },
  "an object with role and content",
);
export type ChatMessage = v.InferOutput<typeof ChatMessageSchema>;
export const ChatRequestSchema = v.object(
  {
    ...samplingEntries,
    messages: v.pipe(
      v.array(ChatMessageSchema, "a non-empty array"),
      v.minLength(1, "a non-empty array"),
      v.maxLength(1000, "an array of at most 1000 messages"),
    ),
  },
  "request body must be a JSON object",
);
export type ChatRequest = v.InferOutput<typeof ChatRequestSchema>;

export const STOP_REASONS = ["max_tokens", "eos", "stop_sequence", "cancelled", "time_limit", "indent"] as const;
export type StopReason = (typeof STOP_REASONS)[number];

export const StreamEventSchema = v.variant("type", [
  v.object({ type: v.literal("started"), request_id: str(128), model: str(4096) }),
  v.object({ type: v.literal("token"), t: v.string(), i: int(0, 1 << 30) }),
  v.object({
    type: v.literal("end"),
    tokens_out: int(0, 1 << 30),
    decode_ms: num(0, Number.MAX_SAFE_INTEGER),
    stop_reason: oneOf(STOP_REASONS),
    first_token_ms: v.optional(num(0, Number.MAX_SAFE_INTEGER)),
    tokens_in: v.optional(int(0, 1 << 30)),
    /** How many of the tokens_in prompt tokens the slot's KV cache already held (not evaluated). */
    cached_tokens: v.optional(int(0, 1 << 30)),
  }),
  v.object({ type: v.literal("error"), code: errorCode, message: str(8192) }),
]);
export type StreamEvent = v.InferOutput<typeof StreamEventSchema>;

/** The SSE data line that closes every stream. */
export const SSE_DONE = "[DONE]";

// ---------------------------------------------------------------------------------------------
// Addresses. On a node the hive and its workers listen on Unix domain sockets inside the hive home
// (mode 0700), so no other local user can connect to them or take their place once they stop.
// TCP on 127.0.0.1 remains only where there are no Unix sockets (Windows), and then every
// connection starts with the server proving it holds the key (SERVER_PROOF below).

export const UNIX_ADDRESS_PREFIX = "unix:";
/** The hive's socket, in its home. */
export const HIVE_SOCKET_NAME = "hive.sock";
/** Folder of the workers' sockets, in the hive home. */
export const WORKER_SOCKET_DIR = "workers";

/** `unix:<path>` for a socket path. */
export function unixAddress(socketPath: string): string {
  return UNIX_ADDRESS_PREFIX + socketPath;
}

/** The socket path of a `unix:` address, or undefined for anything else. */
export function socketPathOf(address: string): string | undefined {
  return address.startsWith(UNIX_ADDRESS_PREFIX) ? address.slice(UNIX_ADDRESS_PREFIX.length) : undefined;
}

/** The socket path of a worker, derived from its hive's socket path (POSIX paths: nodes are POSIX). */
export function workerSocketPath(hiveSocketPath: string, workerId: string): string {
  const dir = hiveSocketPath.slice(0, hiveSocketPath.lastIndexOf("/"));
  return `${dir}/${WORKER_SOCKET_DIR}/${workerId}.sock`;
}

/** Worker ids are made by the hive: "w-" and 8 hex digits. Anything else is refused. */
export const WORKER_ID_PATTERN = /^w-[0-9a-f]{8}$/;

/**
 * Whether `address` is the address the worker `workerId` of the hive at `hiveAddress` must have:
 * its own socket next to the hive's. A keeper sends a worker's key and prompts nowhere else.
 */
export function isOwnWorkerAddress(hiveAddress: string, workerId: string, address: string): boolean {
  const hiveSocket = socketPathOf(hiveAddress);
  if (hiveSocket === undefined || !WORKER_ID_PATTERN.test(workerId)) return false;
  return address === unixAddress(workerSocketPath(hiveSocket, workerId));
}

/**
 * TCP fallback only: the client sends a fresh nonce in this header on an unauthenticated
 * GET /v1/hello; the server answers with HMAC-SHA256(key, nonce) in SERVER_PROOF_HEADER. The client
 * sends its bearer token (and anything else) on that connection only once the proof checks.
 */
export const SERVER_CHALLENGE_HEADER = "x-rbee-challenge";
export const SERVER_PROOF_HEADER = "x-rbee-proof";
export const HELLO_PATH = "/v1/hello";
/** On a worker's callbacks: which worker calls (its hello proof and bearer are its callback key). */
export const WORKER_ID_HEADER = "x-rbee-worker";

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
// Validation with the schemas above. Requests that fail throw RbeeError(INVALID_REQUEST) naming the
// offending field, so a caller learns exactly what to fix.

function isObject(x: unknown): x is Record<string, any> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** "messages[0].role" for an issue's path. */
function issuePath(issue: v.BaseIssue<unknown>): string {
  let out = "";
  for (const item of issue.path ?? []) {
    const key = (item as { key: unknown }).key;
    out += typeof key === "number" ? `[${key}]` : out ? `.${String(key)}` : String(key);
  }
  return out;
}

function parseRequest<S extends v.GenericSchema>(schema: S, x: unknown): v.InferOutput<S> {
  const r = v.safeParse(schema, x);
  if (r.success) return r.output;
  const issue = r.issues[0];
  const field = issuePath(issue);
  if (!field) throw new RbeeError("INVALID_REQUEST", issue.message);
  throw new RbeeError("INVALID_REQUEST", `field "${field}" must be ${issue.message}`, { field });
}

export const parseInferenceRequest = (x: unknown): InferenceRequest => parseRequest(InferenceRequestSchema, x);
export const parseInfillRequest = (x: unknown): InfillRequest => parseRequest(InfillRequestSchema, x);
export const parseChatRequest = (x: unknown): ChatRequest => parseRequest(ChatRequestSchema, x);
export const parseSpawnRequest = (x: unknown): SpawnRequest => parseRequest(SpawnRequestSchema, x);
export const parseReadyCallback = (x: unknown): ReadyCallback => parseRequest(ReadyCallbackSchema, x);
export const parseLoadFailedCallback = (x: unknown): LoadFailedCallback => parseRequest(LoadFailedCallbackSchema, x);
export const parseDownloadRequest = (x: unknown): DownloadRequest => parseRequest(DownloadRequestSchema, x);

/**
 * A reply from a hive or worker, checked against its schema (keeper side). A reply that does not
 * fit is not trusted in part: it fails with INVALID_REPLY naming what was wrong.
 */
export function parseReply<S extends v.GenericSchema>(schema: S, x: unknown, what: string): v.InferOutput<S> {
  const r = v.safeParse(schema, x);
  if (r.success) return r.output;
  const issue = r.issues[0];
  const field = issuePath(issue);
  throw new RbeeError(
    "INVALID_REPLY",
    `${what} answered something that is not rbee protocol ${API_VERSION}${field ? ` (field "${field}": ${issue.message})` : `: ${issue.message}`}; is that a matching hive-agent?`,
    field ? { field } : undefined,
  );
}

/** Validates one SSE event of a generation stream (keeper side); an unknown error code becomes INTERNAL. */
export function parseStreamEvent(x: unknown): StreamEvent {
  if (isObject(x) && x.type === "error" && !isErrorCode(x.code))
    return { type: "error", code: "INTERNAL", message: String(x.message ?? "unknown error").slice(0, 8192) };
  return parseReply(StreamEventSchema, x, "a stream event");
}
