// Typed HTTP clients for a node's hive and its workers (protocol v1), over any Transport.
// Every call is bounded (connect + request timeouts), idempotent calls retry a failed connection with
// backoff and jitter, errors come back as RbeeError with the protocol's code, and streams are async
// iterables of typed events. Cancelling a stream's AbortSignal sends DELETE /v1/inference/{id}.

import { randomUUID } from "node:crypto";
import { request } from "undici";
import { createParser } from "eventsource-parser";
import {
  HIVE_PATHS,
  RbeeError,
  SSE_DONE,
  WORKER_PATHS,
  isErrorEnvelope,
  isOwnWorkerAddress,
  parseReply,
  parseStreamEvent,
  CapabilitiesReplySchema,
  DownloadProgressEventSchema,
  DownloadResponseSchema,
  DownloadCancelResponseSchema,
  HealthResponseSchema,
  LoadingProgressEventSchema,
  ModelsResponseSchema,
  ReadyResponseSchema,
  SpawnResponseSchema,
  WorkerHealthSchema,
  WorkerInfoSchema,
  WorkersResponseSchema,
  type CapabilitiesResponse,
  type ChatRequest,
  type DownloadProgressEvent,
  type DownloadRequest,
  type DownloadResponse,
  type HealthResponse,
  type InferenceRequest,
  type InfillRequest,
  type ModelsResponse,
  type ReadyResponse,
  type SpawnRequest,
  type SpawnResponse,
  type StreamEvent,
  type WorkerInfo,
  type WorkersResponse,
  type LoadingProgressEvent,
  type WorkerHealth,
} from "@rbee/hive-agent/protocol";
import type { Endpoint, Transport } from "./transport";
import type { GenericSchema } from "valibot";

import { retry, type RetryPolicy } from "@rbee/hive-agent/util/retry";
import { errorCode, isRetriable } from "@rbee/hive-agent/util/coded-error";
export type { RetryPolicy };

export interface ClientOptions {
  transport: Transport;
  /** The hive's address on the node: `unix:<socket path>` (or `http://127.0.0.1:<port>` on a node without Unix sockets). */
  baseUrl: string;
  token: string;
  /** Names the node in messages ("localhost", "gpu1"). */
  nodeName?: string;
  requestTimeoutMs?: number;
  /** A stream with no event for this long ends with STREAM_STALLED (default 60 s). */
  stallLimitMs?: number;
  retry?: Partial<RetryPolicy>;
}

export const DEFAULT_STALL_LIMIT_MS = 60_000;

/** The stall limit: RBEE_STALL_LIMIT_MS where set (`rbee infer --stall-limit` sets it), else 60 s; 0 turns it off. */
export function defaultStallLimitMs(): number {
  const v = Number(process.env.RBEE_STALL_LIMIT_MS);
  return process.env.RBEE_STALL_LIMIT_MS !== undefined && Number.isFinite(v) && v >= 0 ? v : DEFAULT_STALL_LIMIT_MS;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, baseMs: 200, jitter: 0.25 };

/**
 * A failure to reach the hive or worker that a retry may fix, as opposed to an HTTP error answer (an RbeeError,
 * which the keeper handles by its code): a transient system or undici error, or an SSH transport's retriable
 * NodeError (a dropped connection or channel; never an auth or host-key refusal). ENOENT counts here only: connecting
 * to a Unix socket that is gone (its worker or hive restarting) says ENOENT, which elsewhere means a missing file.
 */
function isConnectionFailure(e: unknown): boolean {
  if (e instanceof RbeeError) return false;
  return isRetriable(e) || errorCode(e) === "ENOENT";
}

class HttpClient {
  protected readonly retry: RetryPolicy;
  private endpointCache?: Endpoint;
  constructor(
    protected readonly transport: Transport,
    protected readonly baseUrl: string,
    protected readonly token: string,
    protected readonly nodeName: string,
    protected readonly requestTimeoutMs: number,
    retry: Partial<RetryPolicy> = {},
    protected readonly stallLimitMs: number = defaultStallLimitMs(),
  ) {
    this.retry = { ...DEFAULT_RETRY, ...retry };
  }

  /** Origin and dispatcher for this client's address (refuses addresses that are not rbee's). */
  protected get endpoint(): Endpoint {
    return (this.endpointCache ??= this.transport.endpoint(this.baseUrl, this.token));
  }

  /** One JSON call whose reply is checked against `reply` (protocol.ts) before anything uses it. GETs (and calls
   * marked idempotent) retry connection failures (docs/edge-cases.md, EC1). */
  protected async call<T>(
    method: "GET" | "POST" | "DELETE",
    path: string,
    body?: unknown,
    opts: { idempotent?: boolean; timeoutMs?: number; reply?: GenericSchema<unknown, T> } = {},
  ): Promise<T> {
    const idempotent = opts.idempotent ?? method !== "POST";
    const attempts = idempotent ? this.retry.attempts : 1;
    try {
      return await retry(
        () => this.callOnce(method, path, body, opts),
        { ...this.retry, attempts },
        { retryIf: isConnectionFailure },
      );
    } catch (e) {
      // Still unreachable after the last try: said as the protocol's NODE_UNREACHABLE / CONNECTION_TIMEOUT.
      if (isConnectionFailure(e)) throw this.unreachable(e, attempts);
      throw e;
    }
  }

  private async callOnce<T>(
    method: "GET" | "POST" | "DELETE",
    path: string,
    body: unknown,
    opts: { timeoutMs?: number; reply?: GenericSchema<unknown, T> },
  ): Promise<T> {
    const res = await request(this.endpoint.origin + path, {
      method,
      dispatcher: this.endpoint.dispatcher,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body !== undefined ? { "content-type": "application/json" } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
      headersTimeout: opts.timeoutMs ?? this.requestTimeoutMs,
      bodyTimeout: opts.timeoutMs ?? this.requestTimeoutMs,
    });
    const text = await res.body.text();
    if (res.statusCode >= 400) throw errorFromResponse(res.statusCode, text, `${method} ${path}`);
    if (!opts.reply) return undefined as T;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new RbeeError(
        "INVALID_REPLY",
        `${this.nodeName} answered ${method} ${path} with something that is not JSON`,
      );
    }
    return parseReply(opts.reply, json, `${this.nodeName} (${method} ${path})`);
  }

  protected unreachable(e: unknown, attempts: number): RbeeError {
    const cause = errorCode(e) ?? (e as Error)?.message;
    const timeout = /TIMEOUT/.test(String(cause));
    return new RbeeError(
      timeout ? "CONNECTION_TIMEOUT" : "NODE_UNREACHABLE",
      `cannot connect to ${this.nodeName} (${this.transport.description}) after ${attempts} attempt${attempts > 1 ? "s" : ""}: ${cause}`,
      { node: this.nodeName, attempts, cause: String(cause) },
    );
  }

  /**
   * Opens an SSE stream and yields its JSON events until `data: [DONE]`.
   * A stream that closes before [DONE] yields `onPrematureClose()` as its last event, so a consumer
   * always learns how a stream ended.
   */
  protected async *sse<E>(
    method: "GET" | "POST",
    path: string,
    body: unknown,
    signal: AbortSignal | undefined,
    parse: (x: unknown) => E,
    onPrematureClose: (cause?: string) => E,
    onAbort?: () => void,
    stallLimitMs = this.stallLimitMs,
  ): AsyncGenerator<E> {
    const streamAbort = new AbortController();
    let res;
    try {
      res = await request(this.endpoint.origin + path, {
        method,
        dispatcher: this.endpoint.dispatcher,
        headers: {
          authorization: `Bearer ${this.token}`,
          accept: "text/event-stream",
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        signal: streamAbort.signal,
        headersTimeout: this.requestTimeoutMs,
        // Pauses are normal (prompt evaluation, loading) but not forever: the stall timer below ends it.
        bodyTimeout: 0,
      });
    } catch (e) {
      if (isConnectionFailure(e)) throw this.unreachable(e, 1);
      throw e;
    }
    if (res.statusCode >= 400) throw errorFromResponse(res.statusCode, await res.body.text(), `${method} ${path}`);

    const queue: E[] = [];
    let done = false;
    const parser = createParser({
      onEvent: (m) => {
        if (done) return;
        if (m.data === SSE_DONE) {
          done = true;
          return;
        }
        queue.push(parse(JSON.parse(m.data)));
      },
    });
    // On abort: let the server end the stream itself (it answers DELETE with an `end` event); if it
    // does not within a second, cut the connection.
    let abortTimer: NodeJS.Timeout | undefined;
    const onSignal = () => {
      onAbort?.();
      abortTimer = setTimeout(() => streamAbort.abort(), 1000);
    };
    if (signal?.aborted) onSignal();
    else signal?.addEventListener("abort", onSignal, { once: true });
    const decoder = new TextDecoder();
    // Stall limit: no byte for stallLimitMs (a worker stuck mid-decode, a node that froze) ends the stream.
    let stalled = false;
    let stallTimer: NodeJS.Timeout | undefined;
    const armStall = () => {
      clearTimeout(stallTimer);
      if (stallLimitMs > 0)
        stallTimer = setTimeout(() => {
          stalled = true;
          streamAbort.abort();
        }, stallLimitMs);
    };
    armStall();
    try {
      for await (const chunk of res.body) {
        armStall();
        parser.feed(decoder.decode(chunk as Buffer, { stream: true }));
        while (queue.length) yield queue.shift()!;
        if (done) break;
      }
    } catch (e) {
      // A reply that breaks the protocol is reported as such, not as a broken connection.
      if (e instanceof RbeeError && e.code === "INVALID_REPLY") {
        streamAbort.abort();
        throw e;
      }
      if (stalled) {
        onAbort?.();
        throw new RbeeError(
          "STREAM_STALLED",
          `${this.nodeName} sent nothing for ${Math.round(stallLimitMs / 1000)} s (the stall limit); the stream was ended. The worker may be stuck: see the hive's log, or raise the limit`,
          { stall_limit_ms: stallLimitMs },
        );
      }
      if (!streamAbort.signal.aborted) {
        // The connection broke (worker killed, SSH dropped): report it, and why, as the stream's last event.
        yield onPrematureClose(describeCause(e));
        return;
      }
    } finally {
      clearTimeout(stallTimer);
      clearTimeout(abortTimer);
      signal?.removeEventListener("abort", onSignal);
      if (!done) res.body.destroy();
    }
    while (queue.length) yield queue.shift()!;
    if (!done) yield onPrematureClose();
  }
}

function describeCause(e: unknown): string {
  const err = e as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const inner = err.cause ?? err;
  return [inner.code, inner.message].filter(Boolean).join(": ");
}

export function errorFromResponse(status: number, text: string, what: string): RbeeError {
  try {
    const body = JSON.parse(text);
    if (isErrorEnvelope(body)) return new RbeeError(body.error.code, body.error.message, body.error.details);
  } catch {
    // not JSON: fall through
  }
  return new RbeeError(
    status === 401 ? "INVALID_API_KEY" : "INTERNAL",
    `${what}: HTTP ${status} ${text.slice(0, 200)}`,
  );
}

export class HiveClient extends HttpClient {
  constructor(readonly options: ClientOptions) {
    super(
      options.transport,
      options.baseUrl,
      options.token,
      options.nodeName ?? "node",
      options.requestTimeoutMs ?? 30_000,
      options.retry,
      options.stallLimitMs,
    );
  }

  /** The hive's address on its node. */
  get address(): string {
    return this.baseUrl;
  }

  health(): Promise<HealthResponse> {
    return this.call("GET", HIVE_PATHS.health, undefined, { reply: HealthResponseSchema });
  }
  capabilities(): Promise<CapabilitiesResponse> {
    return this.call("GET", HIVE_PATHS.capabilities, undefined, { timeoutMs: 90_000, reply: CapabilitiesReplySchema });
  }
  async workers(): Promise<WorkerInfo[]> {
    return (await this.call<WorkersResponse>("GET", HIVE_PATHS.workers, undefined, { reply: WorkersResponseSchema }))
      .workers;
  }
  worker(id: string): Promise<WorkerInfo> {
    return this.call("GET", `${HIVE_PATHS.workers}/${encodeURIComponent(id)}`, undefined, { reply: WorkerInfoSchema });
  }
  spawn(req: SpawnRequest): Promise<SpawnResponse> {
    return this.call("POST", HIVE_PATHS.spawn, req, { timeoutMs: 120_000, reply: SpawnResponseSchema });
  }
  shutdown(id: string): Promise<void> {
    return this.call("POST", HIVE_PATHS.shutdown(id), undefined, { idempotent: true, timeoutMs: 60_000 });
  }
  async models() {
    return (await this.call<ModelsResponse>("GET", HIVE_PATHS.models, undefined, { reply: ModelsResponseSchema }))
      .models;
  }
  download(req: DownloadRequest): Promise<DownloadResponse> {
    return this.call("POST", HIVE_PATHS.download, req, { idempotent: true, reply: DownloadResponseSchema });
  }
  /** Stops a download on the node; true when it was still running. */
  async cancelDownload(id: string): Promise<boolean> {
    return (
      await this.call("DELETE", HIVE_PATHS.downloadCancel(id), undefined, {
        idempotent: true,
        reply: DownloadCancelResponseSchema,
      })
    ).cancelled;
  }
  downloadProgress(id: string, signal?: AbortSignal): AsyncGenerator<DownloadProgressEvent> {
    return this.sse(
      "GET",
      HIVE_PATHS.downloadProgress(id),
      undefined,
      signal,
      (x) => parseReply(DownloadProgressEventSchema, x, `${this.nodeName} (download progress)`),
      (cause) => ({
        stage: "error",
        code: "NODE_UNREACHABLE",
        message: `the connection to ${this.nodeName} closed while following the download${cause ? ` (${cause})` : ""}`,
      }),
      undefined,
      0,
    ); // downloads have their own stall limit on the node, and back off between attempts
  }

  /**
   * A client for one of this hive's workers, over the same transport. Only the worker's own socket
   * next to the hive's is accepted: a worker key or prompt is never sent anywhere else (a port
   * another user took, an address a registry or a reply made up).
   */
  workerClient(w: Pick<WorkerInfo, "url" | "api_key" | "id">): WorkerClient {
    if (!this.ownsWorkerAddress(w))
      throw new RbeeError(
        "WORKER_NOT_FOUND",
        `worker ${w.id} has the address ${String(w.url).slice(0, 200)}, which is not its socket on ${this.nodeName}; it is ignored`,
        { worker_id: w.id },
      );
    return new WorkerClient(
      this.transport,
      w.url,
      w.api_key,
      `${this.nodeName}/${w.id}`,
      this.requestTimeoutMs,
      this.retry,
      this.stallLimitMs,
    );
  }

  /** Whether a worker's address is its own socket on this hive's node (TCP only on a TCP hive). */
  ownsWorkerAddress(w: Pick<WorkerInfo, "url" | "id">): boolean {
    if (isOwnWorkerAddress(this.baseUrl, w.id, w.url)) return true;
    // A node without Unix sockets (Windows local hive): workers on loopback TCP, each proving its key per connection.
    return this.baseUrl.startsWith("http://127.0.0.1:") && /^http:\/\/127\.0\.0\.1:\d+$/.test(w.url);
  }
}

export class WorkerClient extends HttpClient {
  constructor(
    transport: Transport,
    url: string,
    apiKey: string,
    name: string,
    requestTimeoutMs = 30_000,
    retry?: Partial<RetryPolicy>,
    stallLimitMs?: number,
  ) {
    super(transport, url, apiKey, name, requestTimeoutMs, retry, stallLimitMs);
  }

  health(): Promise<WorkerHealth> {
    return this.call("GET", WORKER_PATHS.health, undefined, { timeoutMs: 5000, reply: WorkerHealthSchema });
  }
  ready(): Promise<ReadyResponse> {
    return this.call("GET", WORKER_PATHS.ready, undefined, { reply: ReadyResponseSchema });
  }
  loadingProgress(signal?: AbortSignal): AsyncGenerator<LoadingProgressEvent> {
    return this.sse(
      "GET",
      WORKER_PATHS.loadingProgress,
      undefined,
      signal,
      (x) => parseReply(LoadingProgressEventSchema, x, `${this.nodeName} (loading progress)`),
      () => ({
        stage: "error",
        code: "WORKER_CRASHED",
        message: "the worker closed the loading stream unexpectedly (it probably crashed while loading)",
      }),
    );
  }
  async cancel(requestId: string): Promise<void> {
    await this.call("DELETE", WORKER_PATHS.cancel(requestId), undefined, { timeoutMs: 5000 });
  }

  inference(req: InferenceRequest, signal?: AbortSignal) {
    return this.generate(WORKER_PATHS.inference, req, signal);
  }
  infill(req: InfillRequest, signal?: AbortSignal) {
    return this.generate(WORKER_PATHS.infill, req, signal);
  }
  chat(req: ChatRequest, signal?: AbortSignal) {
    return this.generate(WORKER_PATHS.chat, req, signal);
  }

  private generate<R extends { request_id?: string }>(
    path: string,
    req: R,
    signal?: AbortSignal,
  ): AsyncGenerator<StreamEvent> {
    const body = { ...req, request_id: req.request_id ?? randomUUID() };
    return this.sse(
      "POST",
      path,
      body,
      signal,
      parseStreamEvent,
      (cause) => ({
        type: "error",
        code: "WORKER_CRASHED",
        message: `the worker or the connection to it went away${cause ? ` (${cause})` : ""}`,
      }),
      () => {
        // Tell the worker to stop generating; its stream then ends with stop_reason "cancelled".
        this.cancel(body.request_id).catch(() => {});
      },
    );
  }
}
