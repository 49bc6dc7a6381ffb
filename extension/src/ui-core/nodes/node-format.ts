// Labels, descriptions and tooltips of the Remote Nodes tree, as plain strings (unit-tested).

import {
  calibrationSummary,
  type DeviceInfo,
  type DownloadProgressEvent,
  type ModelEntry,
} from "@rbee/hive-agent/protocol";
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
  const lines = [
    `${s.node.name} (${s.node.host}, ${s.node.transport === "loopback" ? "local" : "SSH"})`,
    `Status: ${nodeStatusText(s)}`,
  ];
  if (s.reason) lines.push(s.reason);
  if (s.agentVersion) lines.push(`hive-agent ${s.agentVersion}`);
  if (s.ramTotalBytes !== undefined && s.ramFreeBytes !== undefined)
    lines.push(`RAM: ${formatBytes(s.ramFreeBytes)} free of ${formatBytes(s.ramTotalBytes)}`);
  for (const d of s.devices) lines.push(`${deviceLabel(d)}: ${deviceDescription(d)}`);
  if (s.nativeBuild) lines.push(`CPU build: ${s.nativeBuild.state} (${s.nativeBuild.detail})`);
  if (s.cpuCalibration)
    lines.push(
      `CPU binary: ${calibrationSummary(s.cpuCalibration)}${s.cpuCalibration.state === "ready" ? "" : ` (${s.cpuCalibration.detail})`}`,
    );
  lines.push(`Checked ${new Date(s.checkedAt).toLocaleTimeString()}`);
  return lines.join("\n");
}

/** "42% of 1.2 GiB", "retrying (2/6)", "verifying"; undefined once a download has ended. */
export function downloadText(e: DownloadProgressEvent): string | undefined {
  switch (e.stage) {
    case "downloading":
      return e.bytes_total
        ? `${Math.floor((e.bytes_downloaded / e.bytes_total) * 100)}% of ${formatBytes(e.bytes_total)}`
        : `${formatBytes(e.bytes_downloaded)} so far`;
    case "retrying":
      return `retrying (${e.attempt}/${e.max_attempts}): ${e.message}`;
    case "verifying":
      return "verifying";
    default:
      return undefined;
  }
}

/** Only localhost, its hive never started and nothing on it, nothing being done: the welcome view's case. */
export function isFirstRun(snapshots: readonly NodeSnapshot[], listingErrors: number, activities: number): boolean {
  if (listingErrors || activities || snapshots.length !== 1) return false;
  const [s] = snapshots;
  return s.node.transport === "loopback" && s.status === "not-deployed" && !s.models.length && !s.workers.length;
}

/**
 * The node's models for the tree: its catalog, plus the files its workers run that are not in the
 * catalog (a file: model) — marked by size_bytes -1 — so "Models (0)" never sits next to a running model.
 */
export function modelsShown(s: Pick<NodeSnapshot, "models" | "workers">): ModelEntry[] {
  const known = new Set(s.models.map((m) => m.model_ref));
  const files: ModelEntry[] = [];
  for (const w of s.workers) {
    if (known.has(w.model_ref)) continue;
    known.add(w.model_ref);
    files.push({ model_ref: w.model_ref, local_path: w.model_ref.replace(/^file:/, ""), size_bytes: -1 });
  }
  return [...s.models, ...files];
}

/** "1 token", "2 tokens". */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** A worker's tooltip: what each part of its row means (its id, slots, where it runs). */
export function workerTooltip(w: WorkerView): string {
  const where = w.backend === "cpu" ? "the CPU" : `${w.backend} GPU ${(w.devices ?? [w.device]).join(" + ")}`;
  return [
    `Worker ${w.id}: rbee's name for the process serving this model (pid ${w.pid})`,
    w.model_ref,
    `State: ${w.state}${w.state === "loading" && w.progress !== undefined ? ` (${Math.round(w.progress * 100)}%)` : ""}`,
    `Slots: ${w.slots_busy} of ${w.slots_total} busy — a slot is one request served at a time (completions, chat, Infer)`,
    `Context: ${w.context_size} tokens per slot (prompt + answer must fit; Start Worker sets it)`,
    `Runs on ${where} (shown as "${w.backend === "cpu" ? "cpu" : `${w.backend}:${(w.devices ?? [w.device]).join("+")}`}")`,
    ...(w.last_tokens_per_second !== undefined
      ? [`Last request: ${w.last_tokens_per_second.toFixed(1)} tokens/s`]
      : []),
  ].join("\n");
}
