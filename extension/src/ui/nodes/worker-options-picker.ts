// The questions "Start Worker" asks after the model: where (auto first), then, only if the user wants
// to change them, context size, slots and keep-alive. Escape at any step cancels the start.

import * as vscode from "vscode";
import type { DeviceInfo } from "@rbee/hive-agent/protocol";
import type { WorkerSpec } from "../../keeper/keeper";
import { parseKeepAliveInput, placementChoices } from "../../ui-core/nodes/worker-options";

export type WorkerOptions = Omit<WorkerSpec, "node" | "model">;

const DEFAULTS = "$(check) Start with the defaults";
const CUSTOMIZE = "$(settings-gear) Set context size, slots and keep-alive…";

export async function pickWorkerOptions(
  devices: readonly DeviceInfo[],
  title: string,
  preset: WorkerOptions = {},
): Promise<WorkerOptions | undefined> {
  let placement: WorkerOptions = preset;
  if (preset.device === undefined && preset.devices === undefined && preset.backend === undefined) {
    const picked = await vscode.window.showQuickPick(
      placementChoices(devices).map((c) => ({ label: c.label, description: c.description, spec: c.spec })),
      { title, placeHolder: "Where should the worker run?", ignoreFocusOut: true },
    );
    if (!picked) return undefined;
    placement = { ...preset, ...picked.spec };
  }
  const next = await vscode.window.showQuickPick([{ label: DEFAULTS }, { label: CUSTOMIZE }], {
    title,
    placeHolder: "Context size, slots, keep-alive",
    ignoreFocusOut: true,
  });
  if (!next) return undefined;
  if (next.label === DEFAULTS) return placement;

  const int = (min: number, max: number) => (v: string) =>
    v.trim() === "" || (/^\d+$/.test(v.trim()) && +v >= min && +v <= max)
      ? undefined
      : `a whole number from ${min} to ${max}, or empty for the default`;
  const context = await vscode.window.showInputBox({
    title,
    prompt: "Context size per slot, in tokens (empty: the model's, at most 4096)",
    validateInput: int(16, 1 << 22),
    ignoreFocusOut: true,
  });
  if (context === undefined) return undefined;
  const slots = await vscode.window.showInputBox({
    title,
    prompt: "Slots: requests served at once (empty: 2 on the CPU, 4 on a GPU)",
    validateInput: int(1, 64),
    ignoreFocusOut: true,
  });
  if (slots === undefined) return undefined;
  const keepAlive = await vscode.window.showInputBox({
    title,
    prompt:
      "Keep-alive: idle time before the node stops the worker — seconds or 30s, 5m, 2h; 0 = never (empty: the node's)",
    validateInput: (v) =>
      v.trim() === "" || parseKeepAliveInput(v) !== undefined ? undefined : "seconds, or 30s / 5m / 2h; 0 = never",
    ignoreFocusOut: true,
  });
  if (keepAlive === undefined) return undefined;
  return {
    ...placement,
    ...(context.trim() ? { contextSize: Number(context) } : {}),
    ...(slots.trim() ? { slots: Number(slots) } : {}),
    ...(keepAlive.trim() ? { keepAliveS: parseKeepAliveInput(keepAlive) } : {}),
  };
}
