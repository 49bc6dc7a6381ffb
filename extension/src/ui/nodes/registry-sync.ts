// Keeps the registry's rows for a node in step with what its hive reports, writing only when
// something the keeper relies on changed (an open Remote Nodes view probes every few seconds, and a
// registry write costs a lock and an fsync).

import type { ModelEntry, WorkerInfo } from "../../../../hive-agent/src/protocol";
import type { Registry } from "../../keeper/registry";
import type { NodeEntry } from "./node-list";
import { reconcileReported, registryNeedsSync } from "./node-snapshot";

export async function syncNodeState(registry: Registry, node: NodeEntry, workers: WorkerInfo[], models: ModelEntry[]): Promise<void> {
  const stored = { workers: await registry.listWorkers({ node: node.name }), models: await registry.listModels(node.name) };
  const reconciled = reconcileReported(stored.workers, workers);
  if (!registryNeedsSync(stored, { workers: reconciled, models })) return;
  if (!(await registry.getNode(node.name))) await registry.upsertNode({ alias: node.name, host: node.host, transport: node.transport });
  await registry.replaceNodeState(node.name, reconciled, models);
}
