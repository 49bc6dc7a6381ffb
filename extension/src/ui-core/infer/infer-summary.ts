// What "rbee: Infer" says when it ends: how much came, how fast, why it stopped, and whether
// max_tokens had to be lowered to fit the worker's context. Plain strings (unit-tested).

import type { GenerationResult } from "../../keeper/keeper";
import { plural } from "../nodes/node-format";

const STOP_TEXT: Record<GenerationResult["stopReason"], string> = {
  eos: "the model finished",
  max_tokens: "reached max tokens",
  stop_sequence: "hit a stop sequence",
  cancelled: "stopped",
  indent: "ended its block (indentation)",
  time_limit: "reached its time limit",
};

export function inferSummary(
  r: Pick<GenerationResult, "tokensOut" | "stopReason" | "decodeMs" | "spawned" | "maxTokensCapped">,
  model: string,
): string {
  const speed =
    r.decodeMs > 0 && r.tokensOut > 1 ? ` at ${((r.tokensOut / r.decodeMs) * 1000).toFixed(1)} tokens/s` : "";
  const parts = [
    `rbee: ${plural(r.tokensOut, "token")} from ${model}${speed}; ${STOP_TEXT[r.stopReason] ?? r.stopReason}${r.spawned ? " (after a cold start)" : ""}.`,
  ];
  if (r.maxTokensCapped) parts.push(capNote(r.maxTokensCapped));
  return parts.join(" ");
}

/** The note for a max_tokens lowered to fit: what was asked, what fit, and how to get more. */
export function capNote(c: { requested: number; used: number; contextSize: number }): string {
  return `Max tokens was lowered from ${c.requested} to ${c.used}: the worker's context holds ${plural(c.contextSize, "token")} (prompt included). For longer answers, start a worker with a larger context size (Remote Nodes › Start Worker › Set context size…).`;
}

/** The progress line while tokens stream. */
export function generatingText(tokens: number): string {
  return `generating: ${plural(tokens, "token")}`;
}
