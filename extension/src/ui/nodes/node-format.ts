// Labels, descriptions and tooltips of the Remote Nodes tree, as plain strings (unit-tested).

import type { DeviceInfo, ModelEntry } from "../../../../hive-agent/src/protocol";
import type { NodeSnapshot, WorkerView } from "./node-snapshot";

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** "qwen2.5-coder-1.5b-q8_0.gguf" for any ref form (hf:, https:, file:). */
export function modelShortName(ref: string): string {
  const clean = ref.replace(/[?#].*$/, "").replace(/\/+$/, "");
  const last = clean.split(/[/:]/).filter(Boolean).pop();
  return last ?? ref;
}

const STATUS_TEXT: Record<NodeSnapshot["status"], string> = {
  "not-deployed": "not deployed",
  starting: "starting",
  running: "running",
  unreachable: "unreachable",
  unchecked: "not checked",
};

export function nodeStatusText(s: Pick<NodeSnapshot, "status" | "node">): string {
  // localhost's hive is not deployed but started; saying so avoids a confusing "deploy" for it.
  if (s.status === "not-deployed" && s.node.transport === "loopback") return "hive not running";
  return STATUS_TEXT[s.status];
}

export function nodeDescription(s: NodeSnapshot): string {
  const parts = [nodeStatusText(s)];
  if (s.status === "running") {
    if (s.agentVersion) parts.push(`v${s.agentVersion}`);
    if (s.backends.length) parts.push(s.backends.join(", "));
  } else if (s.reason) parts.push(s.reason);
  return parts.join(" · ");
}

export function deviceLabel(d: DeviceInfo): string {
  return `${d.backend.toUpperCase()} ${d.index}: ${d.name}`;
}

/** A ten-cell text bar of how full a GPU is: "▰▰▰▱▱▱▱▱▱▱". */
export function usageBar(used: number, total: number, cells = 10): string {
  const filled = total > 0 ? Math.min(cells, Math.max(0, Math.round((used / total) * cells))) : 0;
  return "▰".repeat(filled) + "▱".repeat(cells - filled);
}

export function deviceDescription(d: DeviceInfo): string {
  const used = Math.max(0, d.vram_total_bytes - d.vram_free_bytes);
  const workers = d.workers?.length ? ` · ${d.workers.length} worker${d.workers.length === 1 ? "" : "s"}` : "";
  return `${usageBar(used, d.vram_total_bytes)} ${formatBytes(d.vram_free_bytes)} free of ${formatBytes(d.vram_total_bytes)}${workers}`;
}

/** Workers placed on a device (a split worker is under each of its devices); CPU workers have none. */
export function workersOn(d: Pick<DeviceInfo, "backend" | "index">, workers: readonly WorkerView[]): WorkerView[] {
  return workers.filter((w) => w.backend === d.backend && (w.devices ?? [w.device]).includes(d.index));
}

export function workerDescription(w: WorkerView): string {
  const parts: string[] = [w.state];
  if (w.state === "loading" && w.progress !== undefined) parts[0] = `loading ${Math.round(w.progress * 100)}%`;
  parts.push(`${w.slots_busy}/${w.slots_total} slots`);
  parts.push(w.backend === "cpu" ? "cpu" : `${w.backend}:${(w.devices ?? [w.device]).join("+")}`);
  if (w.last_tokens_per_second !== undefined) parts.push(`${w.last_tokens_per_second.toFixed(1)} tok/s`);
  return parts.join(" · ");
}

export function modelDescription(m: ModelEntry): string {
  return formatBytes(m.size_bytes);
}

export function nodeTooltip(s: NodeSnapshot): string {
  const lines = [`${s.node.name} (${s.node.host}, ${s.node.transport === "loopback" ? "local" : "SSH"})`, `Status: ${nodeStatusText(s)}`];
  if (s.reason) lines.push(s.reason);
  if (s.agentVersion) lines.push(`hive-agent ${s.agentVersion}`);
  if (s.ramTotalBytes !== undefined && s.ramFreeBytes !== undefined) lines.push(`RAM: ${formatBytes(s.ramFreeBytes)} free of ${formatBytes(s.ramTotalBytes)}`);
  for (const d of s.devices) lines.push(`${deviceLabel(d)}: ${deviceDescription(d)}`);
  if (s.nativeBuild) lines.push(`CPU build: ${s.nativeBuild.state} (${s.nativeBuild.detail})`);
  lines.push(`Checked ${new Date(s.checkedAt).toLocaleTimeString()}`);
  return lines.join("\n");
}
