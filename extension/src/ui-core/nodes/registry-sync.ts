// Keeps the registry's rows for a node in step with what its hive reports, writing only when
// something the keeper relies on changed (an open Remote Nodes view probes every few seconds, and a
// registry write costs a lock and an fsync).

import type { ModelEntry, WorkerInfo } from "@rbee/hive-agent/protocol";
import type { HiveClient } from "../../keeper/hive-client";
import type { Registry } from "../../keeper/registry";
import type { NodeEntry } from "./node-list";
import { reconcileReported, registryNeedsSync, withoutKeys, type NodeSnapshot } from "./node-snapshot";

export async function syncNodeState(
  registry: Registry,
  node: NodeEntry,
  workers: WorkerInfo[],
  models: ModelEntry[],
): Promise<void> {
  const stored = {
    workers: await registry.listWorkers({ node: node.name }),
    models: await registry.listModels(node.name),
  };
  const reconciled = reconcileReported(stored.workers, workers);
  if (!registryNeedsSync(stored, { workers: reconciled, models })) return;
  if (!(await registry.getNode(node.name)))
    await registry.upsertNode({ alias: node.name, host: node.host, transport: node.transport });
  await registry.replaceNodeState(node.name, reconciled, models);
}

/** Reads a running hive's state for the tree (and syncs the registry with it), for any kind of node. */
export async function probeRunningHive(
  hive: HiveClient,
  registry: Registry,
  node: NodeEntry,
  base: Omit<NodeSnapshot, "status">,
): Promise<NodeSnapshot> {
  const [health, caps, workers, models] = await Promise.all([
    hive.health(),
    hive.capabilities(),
    hive.workers(),
    hive.models(),
  ]);
  // The keeper picks workers from the registry: keep it in step with what the hive reports.
  await syncNodeState(registry, node, workers, models);
  return {
    ...base,
    status: "running",
    agentVersion: health.version,
    backends: caps.backends,
    devices: caps.devices,
    ramTotalBytes: caps.ram_total_bytes,
    ramFreeBytes: caps.ram_free_bytes,
    nativeBuild: caps.native_build,
    cpuCalibration: caps.cpu_calibration,
    workers: withoutKeys(workers),
    models,
  };
}
