// What the Remote Nodes view shows about one node, learnt without starting anything, and the rule
// for when a probe must be written to the registry (only when it changed what the registry knows,
// so an open view does not rewrite the shared file every few seconds).

import type {
  Backend,
  CpuCalibration,
  DeviceInfo,
  ModelEntry,
  NativeBuildStatus,
  WorkerInfo,
} from "@rbee/hive-agent/protocol";
import type { ModelRecord, WorkerRecord } from "../../keeper/registry-types";
import type { NodeEntry } from "./node-list";

/** "unchecked": an SSH host rbee has not used yet, not probed by the automatic refresh. */
export type NodeStatusKind = "not-deployed" | "starting" | "running" | "unreachable" | "unchecked";

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
  /** The node's own CPU build of llama.cpp, as its hive reports it. */
  nativeBuild?: NativeBuildStatus;
  /** Which CPU binary the node measured fastest, as its hive reports it. */
  cpuCalibration?: CpuCalibration;
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
export function registryNeedsSync(
  stored: { workers: readonly WorkerRecord[]; models: readonly ModelRecord[] },
  reported: { workers: readonly WorkerInfo[]; models: readonly ModelEntry[] },
): boolean {
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
    return w.state === "loading" && s && (s.state === "idle" || s.state === "busy") && s.url === w.url
      ? { ...w, state: s.state }
      : w;
  });
}

/** How long an unreachable node is left alone by the automatic refresh before it is tried again. */
export const UNREACHABLE_RETRY_MS = 60_000;

/**
 * Whether the view's automatic refresh probes a node now. localhost always (a local file and a
 * loopback call). An SSH host only once rbee has used it (deployed, or generated there): an ssh
 * config often lists dozens of unrelated hosts, and connecting to all of them every few seconds
 * would be rude; they are probed when the user refreshes or deploys. An unreachable node is retried
 * once a minute, not at every refresh.
 */
export function shouldAutoProbe(
  node: NodeEntry,
  knownToRegistry: boolean,
  previous: NodeSnapshot | undefined,
  now: number,
): boolean {
  if (node.transport === "loopback") return true;
  if (!knownToRegistry) return false;
  return !(previous?.status === "unreachable" && now - previous.checkedAt < UNREACHABLE_RETRY_MS);
}

/** What the view shows for a node it did not probe this time. */
export function uncheckedSnapshot(node: NodeEntry, now: number): NodeSnapshot {
  return {
    node,
    status: "unchecked",
    reason: "not checked yet: ⟳ checks it, ▶ deploys rbee there",
    backends: [],
    devices: [],
    workers: [],
    models: [],
    checkedAt: now,
  };
}
