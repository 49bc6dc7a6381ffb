// What the Remote Nodes view shows about one node, learnt without starting anything, and the rule
// for when a probe must be written to the registry (only when it changed what the registry knows,
// so an open view does not rewrite the shared file every few seconds).

import type { Backend, DeviceInfo, ModelEntry, WorkerInfo } from "../../../../hive-agent/src/protocol";
import type { ModelRecord, WorkerRecord } from "../../keeper/registry-types";
import type { NodeEntry } from "./node-directory";

export type NodeStatusKind = "not-deployed" | "starting" | "running" | "unreachable";

/** A worker as shown: WorkerInfo without its key (a snapshot may end up in a log or a tooltip). */
export type WorkerView = Omit<WorkerInfo, "api_key">;

export interface NodeSnapshot {
  node: NodeEntry;
  status: NodeStatusKind;
  /** Why it is not running / unreachable, or what it is doing while starting. */
  reason?: string;
  agentVersion?: string;
  backends: Backend[];
  devices: DeviceInfo[];
  ramTotalBytes?: number;
  ramFreeBytes?: number;
  workers: WorkerView[];
  models: ModelEntry[];
  /** Epoch ms of the probe. */
  checkedAt: number;
}

export function withoutKeys(workers: readonly WorkerInfo[]): WorkerView[] {
  return workers.map(({ api_key: _key, ...w }) => w);
}

/**
 * Whether the hive's report differs from the registry's rows for the node in anything the keeper
 * uses to pick a worker: the set of workers, their state and URL, or the set of models.
 */
export function registryNeedsSync(stored: { workers: readonly WorkerRecord[]; models: readonly ModelRecord[] }, reported: { workers: readonly WorkerInfo[]; models: readonly ModelEntry[] }): boolean {
  if (stored.workers.length !== reported.workers.length || stored.models.length !== reported.models.length) return true;
  const byId = new Map(stored.workers.map((w) => [w.id, w]));
  for (const w of reported.workers) {
    const s = byId.get(w.id);
    if (!s || s.state !== w.state || s.url !== w.url || s.model_ref !== w.model_ref) return true;
  }
  const models = new Set(stored.models.map((m) => m.model_ref));
  return reported.models.some((m) => !models.has(m.model_ref));
}

/**
 * The hive's worker list as the registry should store it. The hive learns that a worker is ready
 * from the worker's callback, a moment after the worker's own loading stream told the keeper; a
 * worker the registry already holds as ready is not set back to "loading" by that lag.
 */
export function reconcileReported(stored: readonly WorkerRecord[], reported: readonly WorkerInfo[]): WorkerInfo[] {
  const byId = new Map(stored.map((w) => [w.id, w]));
  return reported.map((w) => {
    const s = byId.get(w.id);
    return w.state === "loading" && s && (s.state === "idle" || s.state === "busy") && s.url === w.url ? { ...w, state: s.state } : w;
  });
}
