// What every wire format shares: a request reduced to the keeper's Generation, and the small
// readers that turn loosely typed client JSON into it (each API spells the same options its own way).

import { RbeeError, MAX_TOKENS_LIMIT, type ChatMessage } from "@rbee/hive-agent/protocol";
import type { Generation } from "../../keeper/keeper";
import { QueueRejection, type RunResult } from "../scheduler";
import type { ServerResponse } from "node:http";

export interface Call {
  /** The model as the client named it (echoed back); undefined: the gateway's default. */
  model?: string;
  gen: Generation;
  stream: boolean;
  /** llama.cpp's t_max_predict_ms. */
  generationLimitMs?: number;
  /** Answer at once without generating (llama.vscode's n_predict 0 cache warm-up, Ollama's empty prompt). */
  noGeneration?: boolean;
}

/** How one API writes a generation back: whole, or as a stream. */
export interface Responder {
  /** Before the first streamed byte. */
  open(res: ServerResponse): void;
  token(res: ServerResponse, text: string): void;
  end(res: ServerResponse, result: RunResult): void;
  /** A failure after the stream opened. */
  streamError(res: ServerResponse, err: unknown): void;
  complete(res: ServerResponse, text: string, result: RunResult): void;
}

export function invalid(field: string, want: string): never {
  throw new RbeeError("INVALID_REQUEST", `field "${field}" must be ${want}`, { field });
}

export function obj(x: unknown): Record<string, any> {
  if (typeof x !== "object" || x === null || Array.isArray(x))
    throw new RbeeError("INVALID_REQUEST", "request body must be a JSON object");
  return x as Record<string, any>;
}

export function optNum(
  o: Record<string, any>,
  f: string,
  min: number,
  max: number,
  integer = false,
): number | undefined {
  const v = o[f];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v)))
    invalid(f, `${integer ? "an integer" : "a number"} between ${min} and ${max}`);
  return v;
}

export function optStr(o: Record<string, any>, f: string): string | undefined {
  const v = o[f];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") invalid(f, "a string");
  return v;
}

/** `stop` as a string or an array of strings; empty strings are dropped. */
export function stopList(v: unknown, field = "stop"): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === "string"))
    invalid(field, "a string or an array of strings");
  const out = (list as string[]).filter((s) => s.length > 0);
  if (out.length > 16) invalid(field, "at most 16 sequences");
  return out.length ? out : undefined;
}

/** A token budget: absent or "unlimited" (-1, -2) means the gateway's default. */
export function budget(v: number | undefined, fallback: number): number {
  return v === undefined || v < 0 ? fallback : Math.min(v, MAX_TOKENS_LIMIT);
}

/** Message content as text: a string, or OpenAI's array of parts (text parts only). */
export function messageText(content: unknown, field: string): string {
  if (typeof content === "string") return content;
  if (content === null || content === undefined) return "";
  if (Array.isArray(content)) {
    return content
      .map((p, i) => {
        if (p?.type === "text" && typeof p.text === "string") return p.text;
        invalid(`${field}[${i}]`, 'a text part ({"type": "text", "text": …}); rbee workers take text only');
      })
      .join("");
  }
  invalid(field, "a string or an array of text parts");
}

/** Chat messages of OpenAI and Ollama; "developer" is OpenAI's newer name for "system". */
export function chatMessages(x: unknown): ChatMessage[] {
  if (!Array.isArray(x) || !x.length) invalid("messages", "a non-empty array");
  return x.map((m, i) => {
    const role = m?.role === "developer" ? "system" : m?.role;
    if (role !== "system" && role !== "user" && role !== "assistant")
      invalid(`messages[${i}].role`, "system, user or assistant (tool messages are not supported)");
    if (Array.isArray(m.images) && m.images.length)
      invalid(`messages[${i}].images`, "absent: rbee workers take text only");
    return { role, content: messageText(m.content, `messages[${i}].content`) };
  });
}

export function finishReason(r: RunResult): "stop" | "length" {
  return r.stopReason === "max_tokens" ? "length" : "stop";
}

export function writeJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data), ...headers });
  res.end(data);
}

export function openSse(res: ServerResponse, contentType = "text/event-stream") {
  res.writeHead(200, {
    "content-type": contentType,
    "cache-control": "no-cache",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  res.socket?.setNoDelay(true);
}

/** An error as every format needs it: HTTP status, protocol code, message, offending field. */
export interface Failure {
  status: number;
  code: string;
  message: string;
  field?: string;
}

export function describeError(err: unknown): Failure {
  if (err instanceof QueueRejection) return { status: err.status, code: "ALL_SLOTS_BUSY", message: err.message };
  const e = err instanceof RbeeError ? err : new RbeeError("INTERNAL", (err as Error)?.message ?? String(err));
  return { status: e.status, code: e.code, message: e.message, field: e.details?.field as string | undefined };
}
