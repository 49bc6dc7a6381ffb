// The worker's HTTP API (docs/protocol.md, "Worker endpoints"): readiness, loading progress, and the three generation
// endpoints as SSE token streams, with cancellation by DELETE or by the client hanging up.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { randomUUID } from "node:crypto";
import {
  parseChatRequest,
  parseInferenceRequest,
  parseInfillRequest,
  RbeeError,
  WORKER_PATHS,
  type LoadingProgressEvent,
  type ReadyResponse,
  type StreamEvent,
  type WorkerHealth,
  type WorkerState,
} from "../protocol";
import {
  SERVER_OPTIONS,
  answerHello,
  checkBearer,
  endSse,
  limitServer,
  listenOn,
  matchPath,
  readJson,
  sendError,
  sendJson,
  startSse,
  writeSse,
} from "../util/http";
import type { Logger } from "../util/log";
import type { Engine, GenerationOptions, Prompt } from "./engine";
import { TokenFrames, tokenFrame } from "./token-frames";

export class WorkerServer {
  private server: Server;
  private engine?: Engine;
  private state: WorkerState = "loading";
  private progress = 0;
  private progressListeners = new Set<(e: LoadingProgressEvent) => void>();
  private active = new Map<string, AbortController>();
  private lastActivity = Date.now();
  private lastProgress = Date.now();
  private lastTokensPerSecond?: number;
  /** Token frames, written once the next decode is dispatched (token-frames.ts). */
  private frames = new TokenFrames();

  constructor(
    private readonly apiKey: string,
    private readonly modelRef: string,
    private readonly log: Logger,
  ) {
    this.server = createServer(SERVER_OPTIONS, (req, res) => {
      this.handle(req, res).catch((e) => sendError(res, e));
    });
    // Requests must arrive promptly; responses (streams) may be long and are not limited.
    limitServer(this.server);
  }

  /** Listens on `unix:<path>` (or loopback TCP without sockets); resolves with the address. */
  listen(address: string): Promise<string> {
    return listenOn(this.server, address);
  }

  setProgress(progress: number) {
    this.progress = progress;
    for (const l of this.progressListeners) l({ stage: "loading", progress });
  }

  setReady(engine: Engine) {
    this.engine = engine;
    this.frames = new TokenFrames(() => engine.decodeComing);
    engine.dispatch.afterDispatch = this.frames.flush;
    this.state = "idle";
    // The idle clock starts when the worker can first be used: a slow load is not idle time.
    this.lastActivity = this.lastProgress = Date.now();
    for (const l of this.progressListeners) l({ stage: "ready" });
  }

  setLoadFailed(err: RbeeError) {
    for (const l of this.progressListeners) l({ stage: "error", code: err.code, message: err.message });
  }

  /** Stops accepting work, cancels what runs, and closes the listener. */
  async stop() {
    this.state = "stopping";
    for (const c of this.active.values()) c.abort();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  health(): WorkerHealth {
    return {
      status: "alive",
      state: this.state,
      slots_total: this.engine?.slotsTotal ?? 0,
      slots_busy: this.engine?.slotsBusy ?? 0,
      last_activity: this.lastActivity,
      last_progress: this.lastProgress,
      ...(this.lastTokensPerSecond !== undefined ? { last_tokens_per_second: this.lastTokensPerSecond } : {}),
    };
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    if (answerHello(req, res, this.apiKey)) return;
    checkBearer(req, [this.apiKey]);
    const path = (req.url ?? "/").split("?")[0];
    const method = req.method ?? "GET";

    if (method === "GET" && path === WORKER_PATHS.health) return sendJson(res, 200, this.health());
    if (method === "GET" && path === WORKER_PATHS.ready) {
      const body: ReadyResponse = {
        ready: this.engine !== undefined && this.state !== "stopping",
        state: this.state,
        ...(this.state === "loading" ? { progress: this.progress } : {}),
      };
      return sendJson(res, 200, body);
    }
    if (method === "GET" && path === WORKER_PATHS.loadingProgress) return this.streamLoadingProgress(res);
    if (method === "POST" && path === WORKER_PATHS.inference) {
      const r = parseInferenceRequest(await readJson(req));
      return this.generate(req, res, r, { kind: "text", prompt: r.prompt });
    }
    if (method === "POST" && path === WORKER_PATHS.infill) {
      const r = parseInfillRequest(await readJson(req));
      return this.generate(req, res, r, { kind: "infill", prefix: r.prefix, suffix: r.suffix, extra: r.input_extra });
    }
    if (method === "POST" && path === WORKER_PATHS.chat) {
      const r = parseChatRequest(await readJson(req));
      return this.generate(req, res, r, { kind: "chat", messages: r.messages });
    }
    const cancel = method === "DELETE" && matchPath(/^\/v1\/inference\/([^/]+)$/, path);
    if (cancel) {
      // Idempotent: cancelling an unknown or finished request is not an error.
      this.active.get(cancel[0])?.abort();
      res.writeHead(204).end();
      return;
    }
    throw new RbeeError("NOT_FOUND", `no endpoint ${method} ${path} on this worker`);
  }

  private streamLoadingProgress(res: ServerResponse) {
    startSse(res);
    if (this.engine) {
      writeSse(res, { stage: "ready" } satisfies LoadingProgressEvent);
      return endSse(res);
    }
    writeSse(res, { stage: "loading", progress: this.progress } satisfies LoadingProgressEvent);
    const listener = (e: LoadingProgressEvent) => {
      writeSse(res, e);
      if (e.stage !== "loading") {
        this.progressListeners.delete(listener);
        endSse(res);
      }
    };
    this.progressListeners.add(listener);
    res.on("close", () => this.progressListeners.delete(listener));
  }

  private async generate(req: IncomingMessage, res: ServerResponse, opts: GenerationOptions, prompt: Prompt) {
    const engine = this.engine;
    if (!engine || this.state === "loading")
      throw new RbeeError("WORKER_NOT_READY", "the model is still loading; wait for /v1/ready");
    if (this.state === "stopping") throw new RbeeError("SHUTTING_DOWN", "this worker is shutting down");
    const requestId = opts.request_id ?? randomUUID();
    if (this.active.has(requestId))
      throw new RbeeError("INVALID_REQUEST", `request_id "${requestId}" is already running`, { field: "request_id" });
    const prepared = engine.prepare(prompt, opts.max_tokens);
    const abort = new AbortController();
    // A client that hangs up cancels its generation (the response closes before we end it).
    res.on("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    this.active.set(requestId, abort);
    let slot;
    try {
      // Waits briefly for a slot whose request was just cancelled if its cache fits best.
      slot = await engine.acquireSlotWarm(prepared.tokens, abort.signal);
    } catch (e) {
      this.active.delete(requestId);
      throw e;
    }
    this.touch();

    try {
      startSse(res);
      const send = (e: StreamEvent) => writeSse(res, e);
      send({ type: "started", request_id: requestId, model: this.modelRef });
      const frames = this.frames;
      const result = await engine.generate(slot, prepared, opts, abort.signal, (t) => {
        this.lastProgress = Date.now();
        frames.queue(res, tokenFrame(t.text, t.index));
      });
      frames.take(res);
      if (result.decodeMs > 0 && result.tokensOut > 1)
        this.lastTokensPerSecond = Math.round(((result.tokensOut - 1) / result.decodeMs) * 1000 * 10) / 10;
      send({
        type: "end",
        tokens_out: result.tokensOut,
        decode_ms: Math.round(result.decodeMs),
        stop_reason: result.stopReason,
        first_token_ms: Math.round(result.firstTokenMs * 10) / 10,
        tokens_in: prepared.tokens.length,
        cached_tokens: result.cachedTokens,
      });
      endSse(res);
      this.log.debug(`request ${requestId}: ${result.tokensOut} tokens, ${result.stopReason}`);
    } catch (e) {
      this.log.warn(`request ${requestId} failed: ${(e as Error).message}`);
      this.frames.take(res);
      sendError(res, e);
    } finally {
      this.frames.take(res);
      this.active.delete(requestId);
      engine.releaseSlot(slot);
      this.touch();
    }
  }

  private touch() {
    this.lastActivity = Date.now();
    this.lastProgress = this.lastActivity;
    if (this.engine && this.state !== "stopping") this.state = this.engine.slotsBusy > 0 ? "busy" : "idle";
  }
}
