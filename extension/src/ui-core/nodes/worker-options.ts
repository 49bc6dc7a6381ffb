// What "Start Worker" offers besides the model: where it runs (auto first, then each GPU with its free
// memory, the CPU, or all GPUs together), its context size, slots and keep-alive. Plain data, no
// `vscode` import, so the choices are unit-tested; worker-options-picker.ts asks the questions.

import type { DeviceInfo } from "@rbee/hive-agent/protocol";
import type { WorkerSpec } from "../../keeper/keeper";
import { deviceLabel, formatBytes } from "./node-format";

export type PlacementChoice = {
  label: string;
  description: string;
  spec: Pick<WorkerSpec, "backend" | "device" | "devices" | "allowSplit">;
};

/** Auto first; then every GPU (with its free memory and workers), all GPUs of a backend together, the CPU. */
export function placementChoices(devices: readonly DeviceInfo[]): PlacementChoice[] {
  const out: PlacementChoice[] = [
    {
      label: "Auto",
      description: devices.length
        ? "the GPU with room and the least load; spans GPUs only if no single one has room"
        : "the CPU (this node has no GPU)",
      spec: devices.length ? { allowSplit: true } : {},
    },
  ];
  for (const d of devices)
    out.push({
      label: deviceLabel(d),
      description: `${formatBytes(d.vram_free_bytes)} free${d.workers?.length ? ` · ${d.workers.length} worker${d.workers.length === 1 ? "" : "s"}` : ""}`,
      spec: { backend: d.backend, device: d.index },
    });
  for (const backend of new Set(devices.map((d) => d.backend))) {
    const all = devices.filter((d) => d.backend === backend);
    if (all.length < 2) continue;
    out.push({
      label: `All ${backend.toUpperCase()} GPUs (${all.map((d) => d.index).join(", ")})`,
      description: `split the model over them · ${formatBytes(all.reduce((s, d) => s + d.vram_free_bytes, 0))} free together`,
      spec: { backend, devices: all.map((d) => d.index) },
    });
  }
  if (devices.length) out.push({ label: "CPU", description: "no GPU", spec: { backend: "cpu" } });
  return out;
}

/** Parses a typed keep-alive: seconds, or 30s / 5m / 2h; 0 = never. Undefined when it is not one. */
export function parseKeepAliveInput(text: string): number | undefined {
  const m = /^\s*(\d+)\s*(s|m|h|d)?\s*$/i.exec(text);
  if (!m) return undefined;
  return Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[(m[2]?.toLowerCase() ?? "s") as "s" | "m" | "h" | "d"];
}
