// The status bar item of inline completions: state, the last latency, whether it came from the
// cache, and the context it used; a click toggles them.

import * as vscode from "vscode";
import type { EngineState } from "../ui-core/inline/completion-engine";
import { modelShortName } from "../ui-core/nodes/node-format";

export function statusText(s: EngineState): { text: string; tooltip: string } {
  switch (s.kind) {
    case "off":
      return { text: "$(circle-slash) rbee", tooltip: `rbee: ${s.reason}. Click to switch inline completions on.` };
    case "idle": {
      // The last suggestion shown: how long it took, where it came from, how much context it used.
      const last = s.last;
      const ms = last ? last.latencyMs : s.lastLatencyMs;
      // Before any worker answered, "on" alone would promise ghost text that cannot come yet.
      if (!s.target && ms === undefined)
        return {
          text: "$(sparkle) rbee",
          tooltip:
            "rbee inline completions: on, but no worker has served one yet. Set the completion model (rbee starts its worker when you type), or start a worker in Remote Nodes. Click to switch off.",
        };
      const latency = ms !== undefined ? ` ${Math.round(ms)} ms` : "";
      const from = last && last.source !== "worker" ? (last.source === "reused" ? " (running)" : " (cache)") : "";
      const tokens =
        last?.contextTokens !== undefined
          ? `; ${last.contextTokens} tokens of context, ${last.evaluatedTokens ?? 0} evaluated`
          : "";
      const target = s.target ? `${modelShortName(s.target.model)} on ${s.target.node}` : "the first ready worker";
      return {
        text: `$(sparkle) rbee${latency}${from}`,
        tooltip: `rbee inline completions: on (${target})${latency ? `; last suggestion took${latency}${from ? ` from the ${from === " (cache)" ? "cache" : "running generation"}` : ""}${tokens}` : ""}. Click to switch off.`,
      };
    }
    case "requesting":
      return {
        text: "$(loading~spin) rbee",
        tooltip: `rbee: asking ${s.target ? modelShortName(s.target.model) : "the worker"}…`,
      };
    case "no-worker":
      return { text: "$(debug-disconnect) rbee", tooltip: `rbee: ${s.reason}` };
    case "warming":
      return { text: "$(sync~spin) rbee", tooltip: `rbee: ${s.reason}` };
    case "error":
      return { text: "$(warning) rbee", tooltip: `rbee: the last completion failed: ${s.message}` };
  }
}

export class CompletionStatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;

  constructor() {
    this.item = vscode.window.createStatusBarItem("rbee.completionStatus", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "rbee inline completions";
    this.item.command = "rbee.toggleInline";
    this.item.show();
  }

  update(s: EngineState) {
    const { text, tooltip } = statusText(s);
    this.item.text = text;
    this.item.tooltip = tooltip;
    this.item.backgroundColor =
      s.kind === "error" ? new vscode.ThemeColor("statusBarItem.warningBackground") : undefined;
  }

  dispose() {
    this.item.dispose();
  }
}
