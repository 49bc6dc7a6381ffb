// The real CompletionBackend: the keeper finds (or, for a configured model, starts) the worker, and
// the request goes straight to the worker's /v1/infill stream. With several ready workers for the
// model, each file sticks to one of them (rendezvous hashing on the file and the worker ids), so
// typing in a file always finds that file in its worker's KV cache, and only the files of a worker
// that goes away move.
//
// Why not keeper.generate: an inline completion must fail fast and leave no trace. generate retries
// a busy worker for up to 7 s, saves partial output of broken streams to files and writes the
// registry after every request; none of that helps a suggestion that is stale 100 ms later.

import { createHash } from "node:crypto";
import { RbeeError } from "@rbee/hive-agent/protocol";
import type { WorkerRecord } from "../../keeper/registry";
import type { Keeper, KeeperEvent } from "../../keeper/keeper";
import type {
  CompletionBackend,
  CompletionTarget,
  EngineSettings,
  InfillRequestBody,
  InfillResult,
  TargetResolution,
} from "./completion-engine";

/** How long a failed start of the configured model keeps us from trying again on every keystroke. */
const WARM_RETRY_MS = 60_000;
const LOCALHOST = "localhost";

export class KeeperCompletionBackend implements CompletionBackend {
  private warming: { key: string; promise: Promise<void> } | undefined;
  private warmFailure: { key: string; message: string; at: number } | undefined;

  constructor(
    private readonly keeper: () => Promise<Keeper>,
    /** Progress of a worker being started for completions (status bar, log). */
    private readonly onWarmEvent: (e: KeeperEvent) => void = () => {},
    /** The worker started for completions is ready: the editor asks again (nobody types to trigger it). */
    private readonly onWarmed: (target: CompletionTarget) => void = () => {},
  ) {}

  async resolveTarget(s: EngineSettings, affinity = ""): Promise<TargetResolution> {
    const keeper = await this.keeper();
    const workers = (await keeper.registry.listWorkers(s.node ? { node: s.node } : {})).filter(
      (w) => (w.state === "idle" || w.state === "busy") && w.url,
    );
    if (s.model) {
      const target = { node: s.node || LOCALHOST, model: s.model };
      const fleet = workers.filter((w) => w.model_ref === s.model && (!s.node || w.node === target.node));
      if (fleet.length) return { target: toTarget(pickWorker(fleet, affinity)) };
      if (await keeper.registry.findReadyWorker(target.node, target.model)) return { target };
      return this.warm(keeper, target);
    }
    if (!workers.length)
      return {
        none: "no-worker",
        reason: `no ready worker${s.node ? ` on ${s.node}` : ""}: start one from the Remote Nodes view, or set rbee.completion.model to have rbee start it`,
      };
    // The first ready worker's model, then that model's workers as one fleet.
    const model = workers[0].model_ref;
    return {
      target: toTarget(
        pickWorker(
          workers.filter((w) => w.model_ref === model),
          affinity,
        ),
      ),
    };
  }

  /** Starts the configured model's worker once, in the background; completions resume when it is ready. */
  private warm(keeper: Keeper, target: CompletionTarget): TargetResolution {
    const key = `${target.node}\u0000${target.model}`;
    if (this.warmFailure?.key === key && Date.now() - this.warmFailure.at < WARM_RETRY_MS)
      return {
        none: "error",
        reason: `starting ${target.model} on ${target.node} failed: ${this.warmFailure.message}`,
      };
    if (this.warming?.key !== key) {
      const promise = keeper
        .ensureWorker({ node: target.node, model: target.model }, this.onWarmEvent)
        .then(() => {
          this.warmFailure = undefined;
          this.onWarmed(target);
        })
        .catch((e: Error) => {
          this.warmFailure = { key, message: e.message, at: Date.now() };
        })
        .finally(() => {
          if (this.warming?.promise === promise) this.warming = undefined;
        });
      this.warming = { key, promise };
    }
    return { none: "warming", reason: `starting a worker for ${target.model} on ${target.node}` };
  }

  async infill(
    target: CompletionTarget,
    body: InfillRequestBody,
    signal: AbortSignal,
    onText?: (textSoFar: string) => void,
  ): Promise<InfillResult> {
    const keeper = await this.keeper();
    // The file's own worker (affinity); else, or when it is gone, whichever the keeper finds. A
    // registered, recently checked worker comes back without any network round trip.
    const chosen = target.workerId
      ? (await keeper.registry.listWorkers({ node: target.node })).find((w) => w.id === target.workerId)
      : undefined;
    const client0 = chosen ? await keeper.clientFor(chosen) : undefined;
    const { worker, client } =
      chosen && client0
        ? { worker: chosen, client: client0 }
        : await keeper.ensureWorker({ node: target.node, model: target.model }, undefined, signal);
    let text = "";
    try {
      for await (const e of client.infill(body, signal)) {
        if (e.type === "token") {
          text += e.t;
          if (e.t) onText?.(text);
        } else if (e.type === "end")
          return {
            text,
            stopReason: e.stop_reason,
            workerMs: (e.first_token_ms ?? 0) + e.decode_ms,
            promptTokens: e.tokens_in,
            cachedTokens: e.cached_tokens,
            tokensOut: e.tokens_out,
          };
        else if (e.type === "error") throw new RbeeError(e.code, e.message);
      }
      throw new RbeeError("INTERNAL", "the infill stream ended without an end event");
    } catch (e) {
      // A worker that is gone must not be offered again: the next request finds or starts another.
      if (
        e instanceof RbeeError &&
        ["NODE_UNREACHABLE", "CONNECTION_TIMEOUT", "WORKER_CRASHED", "WORKER_NOT_FOUND"].includes(e.code)
      )
        await keeper.registry.removeWorker(worker.id).catch(() => {});
      throw e;
    }
  }
}

function toTarget(w: WorkerRecord): CompletionTarget {
  return { node: w.node, model: w.model_ref, workerId: w.id };
}

/** Rendezvous (highest random weight) hashing: the same file, the same worker, while it is there. */
export function pickWorker<W extends { id: string }>(workers: readonly W[], affinity: string): W {
  let best = workers[0];
  let bestScore = "";
  for (const w of workers) {
    const score = createHash("sha1").update(`${affinity}\u0000${w.id}`).digest("hex");
    if (score > bestScore) {
      best = w;
      bestScore = score;
    }
  }
  return best;
}
