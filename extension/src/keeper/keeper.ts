// The keeper's infer flow, phase by phase, for the CLI and the VS Code UI alike
// (docs/architecture.md, "One rbee infer, cold"):
//   1 registry → 2 node preflight → 3 model (download) → 4 worker preflight (by the hive, at spawn)
//   → 5 spawn → 6 register → 7 wait for ready → 8 stream.
// A warm call finds a ready worker in the registry and goes straight to 8.

import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { retry } from "@rbee/hive-agent/util/retry";
import {
  AGENT_VERSION,
  RbeeError,
  versionsCompatible,
  type Backend,
  type ChatMessage,
  type InfillRequest,
  type WorkerInfo,
  type DownloadProgressEvent,
  type SamplingOptions,
  type StopReason,
  type StreamEvent,
} from "@rbee/hive-agent/protocol";
import type { HiveClient, WorkerClient } from "./hive-client";
import { DEFAULT_MAX_STALE_MS, rbeeHome, type Registry, type WorkerRecord } from "./registry";

export const PHASES = ["registry", "node", "model", "spawn", "register", "ready", "stream"] as const;
export type Phase = (typeof PHASES)[number];

/** What the keeper narrates while it works; a CLI prints it, the extension shows progress. */
export type KeeperEvent =
  | { kind: "phase"; phase: Phase; status: "started" | "done" | "skipped"; message: string }
  | { kind: "download"; event: DownloadProgressEvent }
  | { kind: "loading"; progress: number }
  | { kind: "retry"; reason: string; attempt: number; of: number; delayMs: number };

/** A connected node: its hive client. Local and SSH nodes both provide one. */
export interface NodeHandle {
  name: string;
  hive: HiveClient;
}

export interface NodeConnector {
  /** Connects to a node's hive, starting or deploying it when the connector knows how. */
  connect(node: string, onEvent: (e: KeeperEvent) => void, signal?: AbortSignal): Promise<NodeHandle>;
  /** The connection to a node was found broken: drop it so the next call reconnects. */
  invalidate?(node: string): void;
}

export interface WorkerSpec {
  node: string;
  model: string;
  backend?: Backend;
  /** A GPU index, or "auto"/undefined: the hive places the worker on the GPU with room and the least load. */
  device?: number | "auto";
  /** Split a new worker over these GPUs; allowSplit lets the hive span GPUs when no single one has room. */
  devices?: number[];
  allowSplit?: boolean;
  contextSize?: number;
  slots?: number;
  threads?: number;
  /** Idle seconds before the hive stops a new worker (0 = never); default: the keeper's, else the node's. */
  keepAliveS?: number;
}

export type Generation =
  | ({ kind: "inference"; prompt: string } & SamplingOptions)
  | ({ kind: "infill"; prefix: string; suffix: string } & Partial<
      Pick<InfillRequest, "input_extra" | "t_max_predict_ms" | "n_indent">
    > &
      SamplingOptions)
  | ({ kind: "chat"; messages: ChatMessage[] } & SamplingOptions);

export interface GenerationResult {
  text: string;
  tokensOut: number;
  stopReason: StopReason;
  decodeMs: number;
  firstTokenMs?: number;
  /** Prompt tokens, where the worker reports them. */
  tokensIn?: number;
  workerId: string;
  /** True when this call had to spawn the worker (a cold start). */
  spawned: boolean;
  /** Set when max_tokens was lowered to fit the worker's context (generate's fitContext). */
  maxTokensCapped?: { requested: number; used: number; contextSize: number };
}

/** The stream broke; what was generated is kept in a file (docs/edge-cases.md, EC4). */
export class StreamInterruptedError extends RbeeError {
  constructor(
    message: string,
    readonly partialText: string,
    readonly partialFile: string | undefined,
    readonly tokensOut: number,
    readonly maxTokens: number,
  ) {
    super("WORKER_CRASHED", message, { tokens_out: tokensOut, max_tokens: maxTokens, partial_file: partialFile });
  }
}

export interface KeeperOptions {
  registry: Registry;
  nodes: NodeConnector;
  /** Phase 7 limit. */
  loadTimeoutMs?: number;
  /** Waits before retrying a worker whose slots are all busy (docs/edge-cases.md, EC6). */
  busyRetryDelaysMs?: number[];
  /** Where partial outputs of broken streams are saved. */
  partialDir?: string;
  /** keep_alive for the workers this keeper spawns when a spec names none (0 = never stop); default: the node's idle timeout. */
  keepAliveS?: () => number | undefined;
}

const noop = () => {};
/** How often a streaming worker's registry entry is marked healthy (well inside the 60 s freshness window). */
const HEALTH_MARK_INTERVAL_MS = 10_000;

export class Keeper {
  private readonly loadTimeoutMs: number;
  private readonly busyDelays: number[];

  constructor(private readonly opts: KeeperOptions) {
    this.loadTimeoutMs = opts.loadTimeoutMs ?? 5 * 60_000;
    this.busyDelays = opts.busyRetryDelaysMs ?? [1000, 2000, 4000];
  }

  get registry() {
    return this.opts.registry;
  }

  /** Phases 1–7: a ready worker for (node, model), reusing one when it can. */
  async ensureWorker(
    spec: WorkerSpec,
    onEvent: (e: KeeperEvent) => void = noop,
    signal?: AbortSignal,
  ): Promise<{ worker: WorkerRecord; client: WorkerClient; spawned: boolean }> {
    const phase = (p: Phase, status: "started" | "done" | "skipped", message: string) =>
      onEvent({ kind: "phase", phase: p, status, message });

    // 1. Registry: a worker known to be ready skips every other phase.
    phase("registry", "started", `looking for a ready worker for ${spec.model} on ${spec.node}`);
    const known = await this.opts.registry.findReadyWorker(spec.node, spec.model);
    if (known && registeredMatches(known.worker, spec)) {
      const client = await this.reuse(spec.node, known.worker, known.fresh);
      if (client) {
        phase("registry", "done", `reusing worker ${known.worker.id}`);
        return { worker: known.worker, client, spawned: false };
      }
    }
    phase("registry", "done", "no ready worker registered");

    // 2. Node preflight.
    phase("node", "started", `connecting to ${spec.node}`);
    const node = await this.connectNode(spec.node, onEvent, signal);
    phase("node", "done", `${spec.node} is up`);

    // Another window or CLI run may have spawned a worker for this model already.
    const running = (await node.hive.workers()).find(
      (w) =>
        w.model_ref === spec.model &&
        w.state !== "stopping" &&
        runningMatches(w, spec) &&
        node.hive.ownsWorkerAddress(w),
    );
    if (running) {
      const record = await this.register(node, running);
      if (running.state === "loading") await this.waitReady(node, record, onEvent, signal);
      phase("spawn", "skipped", `worker ${running.id} already runs ${spec.model}`);
      return { worker: record, client: node.hive.workerClient(running), spawned: false };
    }

    // 3. Model: present in the node's catalog, or downloaded now.
    await this.ensureModel(node, spec.model, onEvent, signal);
    throwIfCancelled(signal, "cancelled before the worker started");

    // 4–5. Worker preflight happens in the hive's spawn (RAM/VRAM, backend), before anything loads.
    phase("spawn", "started", `starting a worker for ${spec.model}`);
    const spawned = await node.hive.spawn({
      model_ref: spec.model,
      backend: spec.backend,
      device: spec.device,
      devices: spec.devices,
      allow_split: spec.allowSplit,
      context_size: spec.contextSize,
      slots: spec.slots,
      threads: spec.threads,
      keep_alive: spec.keepAliveS ?? this.opts.keepAliveS?.(),
    });
    if (signal?.aborted) {
      // Cancelled while the spawn request was on its way: the new worker must not load for nobody.
      await node.hive.shutdown(spawned.worker_id).catch(noop);
      throw new RbeeError("REQUEST_CANCELLED", "cancelled while the worker was starting; it was stopped");
    }
    const info = await node.hive.worker(spawned.worker_id);
    phase("spawn", "done", `worker ${info.id} is loading on ${info.backend}:${info.device}`);

    // 6. Register it, so other windows and later runs find it.
    phase("register", "started", "recording the worker in the registry");
    const record = await this.register(node, info);
    phase("register", "done", `worker ${info.id} registered`);

    // 7. Wait for ready.
    await this.waitReady(node, record, onEvent, signal);
    return { worker: record, client: node.hive.workerClient(info), spawned: true };
  }

  /** Phases 1–8 for one generation: tokens go to `onToken` as they arrive. */
  async generate(
    spec: WorkerSpec,
    gen: Generation,
    handlers: { onEvent?: (e: KeeperEvent) => void; onToken?: (t: string) => void; fitContext?: boolean } = {},
    signal?: AbortSignal,
  ): Promise<GenerationResult> {
    const onEvent = handlers.onEvent ?? noop;
    for (let attempt = 0; ; attempt++) {
      const { worker, client, spawned } = await this.ensureWorker(spec, onEvent, signal);
      try {
        return await this.stream(worker, client, spawned, gen, onEvent, handlers.onToken ?? noop, signal);
      } catch (e) {
        // fitContext: a max_tokens the worker's context cannot hold is lowered to what fits, once.
        const fit = handlers.fitContext ? fittingMaxTokens(e, gen.max_tokens) : undefined;
        if (fit) {
          const result = await this.stream(
            worker,
            client,
            spawned,
            { ...gen, max_tokens: fit.used },
            onEvent,
            handlers.onToken ?? noop,
            signal,
          );
          return { ...result, maxTokensCapped: { requested: gen.max_tokens, ...fit } };
        }
        // A registered worker that vanished before sending anything: forget it, and the connection
        // to its node (the hive may have restarted elsewhere), and start over once.
        if (
          attempt === 0 &&
          e instanceof RbeeError &&
          (e.code === "NODE_UNREACHABLE" || e.code === "CONNECTION_TIMEOUT") &&
          !spawned
        ) {
          await this.opts.registry.removeWorker(worker.id);
          this.nodeHandles.delete(spec.node);
          this.opts.nodes.invalidate?.(spec.node);
          continue;
        }
        throw e;
      }
    }
  }

  /** Phase 8 on a worker from ensureWorker (the gateway picks the worker itself, then streams here). */
  async stream(
    worker: WorkerRecord,
    client: WorkerClient,
    spawned: boolean,
    gen: Generation,
    onEvent: (e: KeeperEvent) => void,
    onToken: (t: string) => void,
    signal?: AbortSignal,
  ): Promise<GenerationResult> {
    onEvent({ kind: "phase", phase: "stream", status: "started", message: `generating on worker ${worker.id}` });
    // Every slot busy: wait 1, 2, 4 s (by default), then give up with a clear error (docs/edge-cases.md, EC6).
    // A busy worker answers before it generates anything, so each try starts from an empty text.
    try {
      return await retry(
        () => this.streamOnce(worker, client, spawned, gen, onEvent, onToken, signal),
        { delaysMs: this.busyDelays },
        {
          signal,
          retryIf: (e) => e instanceof RbeeError && e.code === "ALL_SLOTS_BUSY",
          onRetry: (_e, attempt, delayMs) =>
            onEvent({ kind: "retry", reason: "all slots busy", attempt, of: this.busyDelays.length, delayMs }),
        },
      );
    } catch (e) {
      if (signal?.aborted && e === signal.reason) throw new RbeeError("REQUEST_CANCELLED", "cancelled");
      if (e instanceof RbeeError && e.code === "ALL_SLOTS_BUSY")
        throw new RbeeError(
          "ALL_SLOTS_BUSY",
          `worker ${worker.id} stayed busy (all ${worker.slots_total} slots in use) through ${this.busyDelays.length} retries; try again later, or spawn it with more slots`,
        );
      throw e;
    }
  }

  private async streamOnce(
    worker: WorkerRecord,
    client: WorkerClient,
    spawned: boolean,
    gen: Generation,
    onEvent: (e: KeeperEvent) => void,
    onToken: (t: string) => void,
    signal?: AbortSignal,
  ): Promise<GenerationResult> {
    const { kind, ...body } = gen;
    let text = "";
    let tokensOut = 0;
    const events =
      kind === "inference"
        ? client.inference(body as any, signal)
        : kind === "infill"
          ? client.infill(body as any, signal)
          : client.chat(body as any, signal);
    for await (const e of events as AsyncIterable<StreamEvent>) {
      if (e.type === "token") {
        text += e.t;
        tokensOut++;
        if (e.t) onToken(e.t);
      } else if (e.type === "end") {
        // Each mark rewrites (and syncs) the registry file; one per interval keeps the entry fresh
        // without that cost on every request of a busy worker (the gateway's).
        const now = Date.now();
        if (now - (worker.last_health_at ?? 0) >= HEALTH_MARK_INTERVAL_MS) {
          await this.opts.registry.markWorkerHealthy(worker.id, now).catch(noop);
          worker.last_health_at = now;
        }
        onEvent({
          kind: "phase",
          phase: "stream",
          status: "done",
          message: `${e.tokens_out} tokens, ${e.stop_reason}`,
        });
        return {
          text,
          tokensOut: e.tokens_out,
          stopReason: e.stop_reason,
          decodeMs: e.decode_ms,
          firstTokenMs: e.first_token_ms,
          tokensIn: e.tokens_in,
          workerId: worker.id,
          spawned,
        };
      } else if (e.type === "error") {
        if (e.code === "WORKER_CRASHED") await this.opts.registry.removeWorker(worker.id).catch(noop);
        const file = this.savePartial(text);
        throw new StreamInterruptedError(
          `stream closed unexpectedly after ${tokensOut}/${gen.max_tokens} tokens: ${e.message}` +
            (file ? `; the partial output is saved in ${file}` : ""),
          text,
          file,
          tokensOut,
          gen.max_tokens,
        );
      }
    }
    throw new RbeeError("INTERNAL", "the stream ended without an end event");
  }

  private savePartial(text: string): string | undefined {
    if (!text) return undefined;
    try {
      const dir = this.opts.partialDir ?? path.join(rbeeHome(), "partial");
      mkdirSync(dir, { recursive: true });
      const file = path.join(dir, `partial-${new Date().toISOString().replace(/[:.]/g, "-")}.txt`);
      writeFileSync(file, text);
      return file;
    } catch {
      return undefined;
    }
  }

  /**
   * A client for one registered worker (the inline completions pick the worker that holds a file's
   * cache); undefined when it no longer answers (it is then removed from the registry).
   */
  clientFor(w: WorkerRecord, maxStaleMs = DEFAULT_MAX_STALE_MS): Promise<WorkerClient | undefined> {
    return this.reuse(w.node, w, w.last_health_at !== null && Date.now() - w.last_health_at <= maxStaleMs);
  }

  /** Checks a registered worker before reuse; a stale entry gets a fresh health check first. */
  private async reuse(node: string, w: WorkerRecord, fresh: boolean): Promise<WorkerClient | undefined> {
    // Warm path: only the node's transport is needed; the worker is reached directly, and a fresh
    // registry entry skips the hive's health and version round trips.
    let handle: NodeHandle;
    try {
      handle = this.nodeHandles.get(node) ?? (await this.opts.nodes.connect(node, noop));
    } catch {
      return undefined;
    }
    // Only the worker's own socket in the node's hive home is trusted: an entry pointing anywhere else
    // (a loopback port someone else may hold now, an edited registry) is dropped, not tried.
    let client: WorkerClient;
    try {
      client = handle.hive.workerClient(w);
    } catch {
      await this.opts.registry.removeWorker(w.id);
      return undefined;
    }
    if (fresh) return client;
    try {
      const r = await client.ready();
      if (!r.ready) throw new Error("not ready");
      await this.opts.registry.markWorkerHealthy(w.id, Date.now());
      return client;
    } catch {
      await this.opts.registry.removeWorker(w.id);
      return undefined;
    }
  }

  private nodeHandles = new Map<string, NodeHandle>();

  private async connectNode(
    node: string,
    onEvent: (e: KeeperEvent) => void,
    signal?: AbortSignal,
  ): Promise<NodeHandle> {
    const cached = this.nodeHandles.get(node);
    if (cached) return cached;
    let handle: NodeHandle;
    try {
      handle = await this.opts.nodes.connect(node, onEvent, signal);
      const health = await handle.hive.health();
      // Refuse a hive this keeper cannot talk to, saying how to fix it (docs/edge-cases.md, EC8).
      if (!versionsCompatible(health.version, AGENT_VERSION))
        throw new RbeeError(
          "VERSION_MISMATCH",
          `${node} runs hive-agent ${health.version} but this rbee is ${AGENT_VERSION}; upgrade the node with "rbee nodes deploy ${node}"` +
            (node === "localhost"
              ? ` (for localhost: "rbee hive stop", then run again to start the bundled ${AGENT_VERSION})`
              : "") +
            `, or install rbee ${health.version.split(".")[0]}.x`,
          { node_version: health.version, keeper_version: AGENT_VERSION },
        );
      await this.opts.registry.setNodeStatus(node, "online", { agent_version: health.version }).catch(noop);
      // A registry that was found corrupt and recreated re-learns the node from its hive.
      if (await this.opts.registry.needsRebuild()) {
        await this.opts.registry.replaceNodeState(
          node,
          (await handle.hive.workers()).filter((w) => handle.hive.ownsWorkerAddress(w)),
          await handle.hive.models(),
        );
        await this.opts.registry.markRebuilt();
      }
    } catch (e) {
      await this.opts.registry.setNodeStatus(node, "offline", { error: (e as Error).message }).catch(noop);
      if (e instanceof RbeeError && e.code === "INVALID_API_KEY")
        throw new RbeeError(
          "INVALID_API_KEY",
          `${node} refused rbee's token (authentication failed). ${tokenHint(node)}`,
        );
      throw e;
    }
    this.nodeHandles.set(node, handle);
    return handle;
  }

  private async ensureModel(node: NodeHandle, model: string, onEvent: (e: KeeperEvent) => void, signal?: AbortSignal) {
    onEvent({ kind: "phase", phase: "model", status: "started", message: `checking ${model} on ${node.name}` });
    if (model.startsWith("file:") || !/^(hf:|https?:)/.test(model)) {
      onEvent({ kind: "phase", phase: "model", status: "skipped", message: `${model} is a file on the node` });
      return;
    }
    const models = await node.hive.models();
    const present = models.find((m) => m.model_ref === model);
    if (present) {
      onEvent({ kind: "phase", phase: "model", status: "done", message: `${model} is in the catalog` });
      return;
    }
    const done = await this.download(node, model, onEvent, signal);
    onEvent({ kind: "phase", phase: "model", status: "done", message: `downloaded ${model} to ${done.local_path}` });
  }

  /** Downloads a model into a node's catalog (`rbee models download`, the Remote Nodes tree). */
  async downloadModel(node: string, model: string, onEvent: (e: KeeperEvent) => void = noop, signal?: AbortSignal) {
    return this.download(await this.connectNode(node, onEvent, signal), model, onEvent, signal);
  }

  /** Follows a download to its end, records it in the registry, and fails with the hive's error code. */
  private async download(node: NodeHandle, model: string, onEvent: (e: KeeperEvent) => void, signal?: AbortSignal) {
    const { download_id } = await node.hive.download({ model_ref: model });
    // Cancel reaches the node: the download stops there too, not only our following of it.
    const cancel = () => void node.hive.cancelDownload(download_id).catch(noop);
    signal?.addEventListener("abort", cancel, { once: true });
    try {
      if (signal?.aborted) cancel();
      return await this.followDownload(node, model, download_id, onEvent, signal);
    } finally {
      signal?.removeEventListener("abort", cancel);
    }
  }

  private async followDownload(
    node: NodeHandle,
    model: string,
    download_id: string,
    onEvent: (e: KeeperEvent) => void,
    signal?: AbortSignal,
  ) {
    for await (const event of node.hive.downloadProgress(download_id, signal)) {
      onEvent({ kind: "download", event });
      if (event.stage === "complete") {
        await this.opts.registry
          .upsertModel({
            node: node.name,
            model_ref: model,
            local_path: event.local_path,
            size_bytes: event.size_bytes,
            sha256: event.sha256,
          })
          .catch(noop);
        return event;
      }
      if (event.stage === "error") throw new RbeeError(event.code, event.message);
    }
    throw new RbeeError(
      signal?.aborted ? "REQUEST_CANCELLED" : "NODE_UNREACHABLE",
      signal?.aborted ? "cancelled while downloading" : `the download stream from ${node.name} ended without a result`,
    );
  }

  /** Records a worker the hive reported, once its address is proven to be its own socket on that node. */
  private async register(node: NodeHandle, w: WorkerInfo): Promise<WorkerRecord> {
    node.hive.workerClient(w); // throws WORKER_NOT_FOUND for an address that is not the worker's socket
    return this.opts.registry.upsertWorker({
      id: w.id,
      node: node.name,
      model_ref: w.model_ref,
      url: w.url,
      backend: w.backend,
      device: w.device,
      state: w.state,
      slots_total: w.slots_total,
      api_key: w.api_key,
      ...(w.state !== "loading" ? { last_health_at: Date.now() } : {}),
    });
  }

  /** Phase 7: follows the worker's loading stream until ready, within the load limit (docs/edge-cases.md, EC7). */
  private async waitReady(node: NodeHandle, w: WorkerRecord, onEvent: (e: KeeperEvent) => void, signal?: AbortSignal) {
    onEvent({ kind: "phase", phase: "ready", status: "started", message: `loading ${w.model_ref}` });
    const client = node.hive.workerClient(w);
    const limit = new AbortController();
    let progress = 0;
    const timer = setTimeout(() => limit.abort(), this.loadTimeoutMs);
    const onAbort = () => limit.abort();
    // An already aborted signal fires no "abort" event: without this the load would run to the end.
    if (signal?.aborted) limit.abort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const e of client.loadingProgress(limit.signal)) {
        if (limit.signal.aborted) break;
        if (e.stage === "loading") {
          progress = e.progress;
          onEvent({ kind: "loading", progress });
        } else if (e.stage === "ready") {
          await this.opts.registry.markWorkerHealthy(w.id, Date.now(), "idle");
          onEvent({ kind: "phase", phase: "ready", status: "done", message: `worker ${w.id} is ready` });
          return;
        } else {
          await this.opts.registry.removeWorker(w.id);
          throw new RbeeError(e.code, e.message);
        }
      }
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
    // Limit reached (or cancelled): the half-loaded worker is of no use to anyone.
    await node.hive.shutdown(w.id).catch(noop);
    await this.opts.registry.removeWorker(w.id);
    if (signal?.aborted)
      throw new RbeeError("REQUEST_CANCELLED", "cancelled while the model was loading; the worker was stopped");
    throw new RbeeError(
      "LOADING_TIMEOUT",
      `loading timed out: ${w.model_ref} reached ${Math.round(progress * 100)}% in ${Math.round(this.loadTimeoutMs / 1000)} s; the worker was stopped. Try a smaller model or quantization, or a longer limit`,
      { progress },
    );
  }

  async close() {
    this.nodeHandles.clear();
  }
}

/** A registered worker fits a spec when every option the spec names matches (the registry does not
 * record context size and threads, so a spec naming those is answered from the hive's list). */
function registeredMatches(w: WorkerRecord, spec: WorkerSpec): boolean {
  return (
    (!spec.backend || w.backend === spec.backend) &&
    deviceMatches(w.device, spec) &&
    (!spec.slots || w.slots_total === spec.slots) &&
    spec.contextSize === undefined &&
    spec.threads === undefined
  );
}

function runningMatches(w: WorkerInfo, spec: WorkerSpec): boolean {
  return (
    (!spec.backend || w.backend === spec.backend) &&
    deviceMatches(w.device, spec, w.devices) &&
    (!spec.slots || w.slots_total === spec.slots) &&
    (spec.contextSize === undefined || w.context_size === spec.contextSize) &&
    (spec.threads === undefined || w.threads === spec.threads)
  );
}

/** Any worker fits "auto"; a named device or device set must be the worker's (a registry row knows its first device only). */
function deviceMatches(first: number, spec: WorkerSpec, all?: number[]): boolean {
  if (spec.devices?.length)
    return all
      ? all.join(",") === [...spec.devices].sort((a, b) => a - b).join(",")
      : first === Math.min(...spec.devices) && spec.devices.length === 1;
  return spec.device === undefined || spec.device === "auto" || first === spec.device;
}

/** Where the keeper's token for a node comes from, for an authentication error (docs/edge-cases.md, EC9). */
export function tokenHint(node: string): string {
  return node === "localhost"
    ? `The token comes from ${path.join(rbeeHome(), "hive", "token")}, which the local hive reads at start; if you replaced it, run "rbee hive stop" and try again.`
    : `The token is created when rbee deploys the hive; run "rbee nodes deploy ${node}" to install a fresh one.`;
}

function throwIfCancelled(signal: AbortSignal | undefined, message: string) {
  if (signal?.aborted) throw new RbeeError("REQUEST_CANCELLED", message);
}

/**
 * The max_tokens that fits when a worker refused `requested` because prompt + max_tokens exceed its
 * context (the worker's INVALID_REQUEST names prompt_tokens and context_size); undefined for any other error.
 */
export function fittingMaxTokens(e: unknown, requested: number): { used: number; contextSize: number } | undefined {
  if (!(e instanceof RbeeError) || e.code !== "INVALID_REQUEST" || e.details?.field !== "max_tokens") return undefined;
  const contextSize = Number(e.details.context_size);
  const promptTokens = Number(e.details.prompt_tokens);
  if (!Number.isInteger(contextSize) || !Number.isInteger(promptTokens)) return undefined;
  const used = contextSize - promptTokens;
  return used >= 1 && used < requested ? { used, contextSize } : undefined;
}
