// Routing and queueing: which worker serves a request, and what waits when every slot is busy.
//   - a model's ready workers (from the registry, on any node) share its requests, fewest in flight
//     first, ties in turn; with none, the keeper starts one on the best node (GPU, free VRAM, load);
//   - `node/model` keeps a request on one node;
//   - when every slot is taken a request waits in a bounded FIFO per model, and starts as soon as a
//     slot frees; past the queue's size it is refused (429), past its wait limit too (503), both with
//     Retry-After; a client that goes away leaves the queue at once;
//   - a worker that fails before the first token (node dropped, worker killed) hands the request to
//     another worker of the model.
// The keeper does the rest: ensureWorker finds or starts the worker, stream talks to it.

import { RbeeError } from "@rbee/hive-agent/protocol";
import type { WorkerClient } from "../keeper/hive-client";
import type { Generation, GenerationResult, Keeper, NodeConnector } from "../keeper/keeper";
import { LOCALHOST } from "../keeper/local-connector";
import type { WorkerRecord } from "../keeper/registry";
import type { GatewayConfig } from "./config";
import type { GatewayMetrics } from "./metrics";

/** A request the queue refused: 429 (queue full) or 503 (waited too long), with a Retry-After. */
export class QueueRejection extends Error {
  constructor(
    readonly status: 429 | 503,
    readonly retryAfterS: number,
    message: string,
  ) {
    super(message);
  }
}

export interface Target {
  /** The model ref the worker runs. */
  model: string;
  /** Set by the `node/model` form: only this node may serve. */
  node?: string;
}

export interface RunResult extends GenerationResult {
  node: string;
  failovers: number;
}

export interface RunOptions {
  onToken(text: string): void;
  /** A node's worker took the request (again, after a failover). */
  onDispatch?(node: string): void;
  /** The request is about to leave for the worker. */
  onSend?(): void;
  /** The client went away: leave the queue, stop generating. */
  signal?: AbortSignal;
  /** Stops generation (not the wait) after this long, keeping what was generated (llama.cpp's t_max_predict_ms). */
  generationLimitMs?: number;
}

interface Slots {
  slots: number;
  inflight: number;
  /** The keeper's answer for this node's worker, kept while it serves (the warm path skips the registry). */
  conn?: { worker: WorkerRecord; client: WorkerClient };
}

interface Waiter {
  seq: number;
  node?: string;
  exclude: Set<string>;
  resolve(node: string): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
}

interface Lane {
  model: string;
  queue: Waiter[];
  workers: Map<string, Slots>;
  spawning: Map<string, Promise<void>>;
  turn: number;
  refreshedAt: number;
  /** Moving average of a request's time in a slot, for Retry-After. */
  serviceMs: number;
}

/** Failures of a worker or its node, before any token, that another worker may not share. */
const FAILOVER_CODES = new Set([
  "NODE_UNREACHABLE",
  "CONNECTION_TIMEOUT",
  "WORKER_CRASHED",
  "WORKER_NOT_READY",
  "WORKER_NOT_FOUND",
  "SHUTTING_DOWN",
]);
const REFRESH_MS = 1000;
const noop = () => {};

export class Scheduler {
  private readonly lanes = new Map<string, Lane>();
  private seq = 0;

  constructor(
    private readonly keeper: Keeper,
    private readonly nodes: NodeConnector,
    private readonly config: () => GatewayConfig,
    private readonly metrics: GatewayMetrics,
  ) {}

  /** Queues, routes and streams one generation; fails over before the first token. */
  async run(target: Target, gen: Generation, opts: RunOptions): Promise<RunResult> {
    const lane = this.lane(target.model);
    const exclude = new Set<string>();
    const seq = ++this.seq;
    let failovers = 0;
    const failedOn = new Set<string>();
    for (;;) {
      const node = await this.acquire(lane, target, seq, exclude, opts.signal);
      const started = Date.now();
      let sawToken = false;
      let worker: WorkerRecord | undefined;
      const limit = new AbortController();
      const onAbort = () => limit.abort();
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      const timer = opts.generationLimitMs !== undefined ? setTimeout(onAbort, opts.generationLimitMs) : undefined;
      try {
        opts.onDispatch?.(node);
        // The warm path: a spec without spawn options lets the keeper reuse the registered worker;
        // once found, the gateway keeps it until it fails or the registry shows another.
        const slot = lane.workers.get(node);
        const ensured = slot?.conn
          ? { ...slot.conn, spawned: false }
          : await this.keeper.ensureWorker({ node, model: target.model }, noop, opts.signal);
        if (slot && !slot.conn) slot.conn = { worker: ensured.worker, client: ensured.client };
        worker = ensured.worker;
        opts.onSend?.();
        const result = await this.keeper.stream(
          ensured.worker,
          ensured.client,
          ensured.spawned,
          gen,
          noop,
          (t) => {
            sawToken = true;
            opts.onToken(t);
          },
          limit.signal,
        );
        return { ...result, node, failovers };
      } catch (e) {
        const code = (e as RbeeError)?.code;
        if (sawToken || opts.signal?.aborted || !FAILOVER_CODES.has(code)) throw e;
        // The worker failed before it said anything: forget it and let another take the request.
        lane.workers.delete(node);
        if (worker && (code === "NODE_UNREACHABLE" || code === "CONNECTION_TIMEOUT"))
          await this.keeper.registry.removeWorker(worker.id).catch(noop);
        // Another node's worker takes it if there is one. Without one, the node gets a second chance
        // (its hive may only have stopped an idle worker; the keeper then starts a new one there).
        const elsewhere =
          !target.node && this.eligible(lane, { exclude: new Set([...exclude, node]) }, true).length > 0;
        if (elsewhere || failedOn.has(node)) {
          if (target.node) throw e;
          exclude.add(node);
        }
        failedOn.add(node);
        failovers++;
        this.metrics.failovers.add({ model: target.model, node });
      } finally {
        clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
        this.release(lane, node, Date.now() - started);
      }
    }
  }

  /** Queue depth and workers per model, for /props and tests. */
  snapshot(model: string): { queued: number; workers: { node: string; slots: number; inflight: number }[] } {
    const lane = this.lanes.get(model);
    return {
      queued: lane?.queue.length ?? 0,
      workers: [...(lane?.workers ?? [])].map(([node, s]) => ({ node, ...s })),
    };
  }

  private lane(model: string): Lane {
    let lane = this.lanes.get(model);
    if (!lane)
      this.lanes.set(
        model,
        (lane = {
          model,
          queue: [],
          workers: new Map(),
          spawning: new Map(),
          turn: 0,
          refreshedAt: 0,
          serviceMs: 1000,
        }),
      );
    return lane;
  }

  /** Waits for a slot (or a new worker) and returns the node whose slot it took. */
  private async acquire(
    lane: Lane,
    target: Target,
    seq: number,
    exclude: Set<string>,
    signal?: AbortSignal,
  ): Promise<string> {
    if (signal?.aborted) throw new RbeeError("REQUEST_CANCELLED", "the client went away");
    const w: Waiter = { seq, node: target.node, exclude, resolve: noop, reject: noop };
    if (!this.eligible(lane, w).length || Date.now() - lane.refreshedAt > REFRESH_MS) await this.refresh(lane);
    const promise = new Promise<string>((resolve, reject) => {
      w.resolve = resolve;
      w.reject = reject;
    });
    // Nobody ahead and a slot free: no queueing at all.
    const free = lane.queue.length ? undefined : this.pick(lane, w);
    if (free) {
      this.take(lane, free);
      return free;
    }
    const { size, waitMs } = this.config().queue;
    const hasWorker = this.eligible(lane, w, true).length > 0;
    // The size bounds waiting for a slot; requests waiting for the model's first worker all wait for it.
    if (hasWorker && lane.queue.length >= size) {
      this.metrics.rejected.add({ model: lane.model, reason: "queue_full" });
      throw new QueueRejection(
        429,
        this.retryAfter(lane),
        `${lane.queue.length} requests already wait for ${lane.model} (the queue holds ${size}); retry later`,
      );
    }
    // Arrival order: a request that failed over keeps its place.
    const at = lane.queue.findIndex((q) => q.seq > seq);
    lane.queue.splice(at < 0 ? lane.queue.length : at, 0, w);
    this.depth(lane);
    const onAbort = () => {
      if (this.dequeue(lane, w)) w.reject(new RbeeError("REQUEST_CANCELLED", "the client went away while queued"));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    if (hasWorker) this.startTimer(lane, w, waitMs);
    else this.spawnFor(lane, w);
    // Those ahead may be waiting for another node than a free one this request may use.
    this.pump(lane);
    try {
      return await promise;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private startTimer(lane: Lane, w: Waiter, waitMs: number) {
    w.timer ??= setTimeout(() => {
      if (!this.dequeue(lane, w)) return;
      this.metrics.rejected.add({ model: lane.model, reason: "wait_timeout" });
      w.reject(
        new QueueRejection(
          503,
          this.retryAfter(lane),
          `no slot for ${lane.model} freed within ${waitMs} ms; retry later`,
        ),
      );
    }, waitMs);
  }

  private dequeue(lane: Lane, w: Waiter): boolean {
    const i = lane.queue.indexOf(w);
    if (i < 0) return false;
    lane.queue.splice(i, 1);
    clearTimeout(w.timer);
    this.depth(lane);
    return true;
  }

  private depth(lane: Lane) {
    this.metrics.queueDepth.set({ model: lane.model }, lane.queue.length);
  }

  /** Seconds until a slot is likely to free for a newcomer: the queue ahead over the slots, at the recent service time. */
  private retryAfter(lane: Lane): number {
    const slots = [...lane.workers.values()].reduce((n, s) => n + s.slots, 0) || 1;
    return Math.max(1, Math.ceil((lane.serviceMs * (lane.queue.length + 1)) / slots / 1000));
  }

  /** Workers this waiter may use; with `any`, busy ones too. */
  private eligible(lane: Lane, w: Pick<Waiter, "node" | "exclude">, any = false): [string, Slots][] {
    return [...lane.workers].filter(
      ([node, s]) => (!w.node || node === w.node) && !w.exclude.has(node) && (any || s.inflight < s.slots),
    );
  }

  /** The free worker with the fewest requests per slot; equal ones take turns. */
  private pick(lane: Lane, w: Waiter): string | undefined {
    const free = this.eligible(lane, w);
    if (!free.length) return undefined;
    const load = (s: Slots) => s.inflight / s.slots;
    const best = Math.min(...free.map(([, s]) => load(s)));
    const tied = free.filter(([, s]) => load(s) === best);
    return tied[lane.turn++ % tied.length][0];
  }

  private take(lane: Lane, node: string) {
    const s = lane.workers.get(node)!;
    s.inflight++;
    this.metrics.inflight.set({ node, model: lane.model }, s.inflight);
  }

  private release(lane: Lane, node: string, heldMs: number) {
    const s = lane.workers.get(node);
    if (s) {
      s.inflight = Math.max(0, s.inflight - 1);
      this.metrics.inflight.set({ node, model: lane.model }, s.inflight);
    } else this.metrics.inflight.set({ node, model: lane.model }, 0);
    lane.serviceMs = lane.serviceMs * 0.8 + heldMs * 0.2;
    this.pump(lane);
  }

  /** Hands free slots to waiters, in arrival order. */
  private pump(lane: Lane) {
    for (const w of [...lane.queue]) {
      const node = this.pick(lane, w);
      if (!node) continue;
      this.dequeue(lane, w);
      this.take(lane, node);
      w.resolve(node);
    }
    // A waiter none of the remaining workers may serve (its node failed) needs a worker of its own.
    for (const w of lane.queue) if (!this.eligible(lane, w, true).length) this.spawnFor(lane, w);
  }

  /** Re-reads the model's ready workers from the registry (other windows and runs start them too). */
  private async refresh(lane: Lane) {
    lane.refreshedAt = Date.now();
    const records = await this.keeper.registry.listWorkers({ model_ref: lane.model });
    const seen = new Set<string>();
    for (const r of records) {
      if (!r.url || (r.state !== "idle" && r.state !== "busy") || seen.has(r.node)) continue;
      seen.add(r.node);
      const s = lane.workers.get(r.node);
      if (s) {
        s.slots = r.slots_total;
        if (s.conn && !records.some((x) => x.id === s.conn!.worker.id)) s.conn = undefined;
      } else lane.workers.set(r.node, { slots: r.slots_total, inflight: 0 });
    }
    for (const [node, s] of lane.workers) if (!seen.has(node) && s.inflight === 0) lane.workers.delete(node);
  }

  /** Starts a worker for a waiter that no worker can serve, once per (model, node). */
  private spawnFor(lane: Lane, w: Waiter) {
    if ([...lane.spawning.keys()].some((n) => (!w.node || n === w.node) && !w.exclude.has(n))) return;
    const placing = w.node ? Promise.resolve(w.node) : this.bestNode(w.exclude);
    const key = w.node ?? `?${lane.spawning.size}`;
    const job = placing
      .then(async (node) => {
        const { worker } = await this.keeper.ensureWorker({ node, model: lane.model, ...this.config().spawn });
        const s = lane.workers.get(node);
        if (s) s.slots = worker.slots_total;
        else lane.workers.set(node, { slots: worker.slots_total, inflight: 0 });
      })
      .then(
        () => {
          lane.spawning.delete(key);
          this.pump(lane);
          for (const q of lane.queue) this.startTimer(lane, q, this.config().queue.waitMs);
        },
        (e) => {
          lane.spawning.delete(key);
          // Whoever no worker can serve learns why.
          for (const q of [...lane.queue])
            if (!this.eligible(lane, q, true).length && this.dequeue(lane, q)) q.reject(e);
        },
      );
    lane.spawning.set(key, job);
  }

  /** Where a new worker goes: a node with a GPU first, then the most free VRAM, then the fewest workers. */
  private async bestNode(exclude: Set<string>): Promise<string> {
    const configured = this.config().nodes;
    const online = configured ?? [
      LOCALHOST,
      ...(await this.keeper.registry.listNodes()).filter((n) => n.status === "online").map((n) => n.alias),
    ];
    const candidates = [...new Set(online)].filter((n) => !exclude.has(n));
    if (!candidates.length)
      throw new RbeeError(
        "NODE_UNREACHABLE",
        `no node is left to start a worker on (tried ${[...exclude].join(", ")}); check the nodes with "rbee nodes list"`,
      );
    if (candidates.length === 1) return candidates[0];
    const workers = await this.keeper.registry.listWorkers();
    const scored = await Promise.all(
      candidates.map(async (node) => {
        try {
          const caps = await (await this.nodes.connect(node, noop)).hive.capabilities();
          const gpu = caps.devices.some((d) => d.backend !== "cpu") ? 1 : 0;
          const vram = Math.max(0, ...caps.devices.map((d) => d.vram_free_bytes));
          return {
            node,
            ok: true,
            gpu,
            vram,
            load: workers.filter((w) => w.node === node).length,
            ram: caps.ram_free_bytes,
          };
        } catch {
          return { node, ok: false, gpu: 0, vram: 0, load: 0, ram: 0 };
        }
      }),
    );
    const ok = scored.filter((s) => s.ok);
    if (!ok.length)
      throw new RbeeError(
        "NODE_UNREACHABLE",
        `none of the nodes ${candidates.join(", ")} answered; check them with "rbee nodes list"`,
      );
    ok.sort((a, b) => b.gpu - a.gpu || b.vram - a.vram || a.load - b.load || b.ram - a.ram);
    return ok[0].node;
  }
}
