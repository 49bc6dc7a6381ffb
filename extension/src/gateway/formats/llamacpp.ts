// llama.cpp server's API as llama.vscode and llama.vim send it: POST /infill and /completion (streamed
// as `data:` lines without [DONE], like llama-server), GET /health and /props.

import type { ServerResponse } from "node:http";
import type { RunResult } from "../scheduler";
import {
  budget,
  describeError,
  invalid,
  obj,
  openSse,
  optNum,
  optStr,
  stopList,
  writeJson,
  type Call,
  type Responder,
} from "./common";

function sampling(o: Record<string, any>, defaultMax: number) {
  return {
    max_tokens: budget(
      optNum(o, "n_predict", -2, 1 << 30, true) ?? optNum(o, "max_tokens", -2, 1 << 30, true),
      defaultMax,
    ),
    temperature: optNum(o, "temperature", 0, 10),
    top_p: optNum(o, "top_p", 0, 1),
    top_k: optNum(o, "top_k", 0, 100000, true),
    seed: optNum(o, "seed", -1, 2 ** 32 - 1, true) === -1 ? undefined : optNum(o, "seed", 0, 2 ** 32 - 1, true),
    stop: stopList(o.stop),
  };
}

function limits(o: Record<string, any>) {
  const t = optNum(o, "t_max_predict_ms", 0, 1 << 30, true);
  return { generationLimitMs: t ? t : undefined, noGeneration: o.n_predict === 0 };
}

function promptText(v: unknown): string {
  if (v === undefined || v === null) return "";
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.length === 1 && typeof v[0] === "string") return v[0];
  invalid("prompt", "a string (token arrays are not supported)");
}

/**
 * input_extra chunks ({filename, text}) go to the worker as they are: it lays them out before the
 * prefix as the model expects (repo-level FIM where it has the tokens), where they stay cached.
 */
function extraContext(v: unknown): { filename?: string; text: string }[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) invalid("input_extra", "an array of {filename, text}");
  return v.map((c, i) => {
    if (typeof c?.text !== "string") invalid(`input_extra[${i}].text`, "a string");
    if (c.filename !== undefined && typeof c.filename !== "string") invalid(`input_extra[${i}].filename`, "a string");
    return c.filename !== undefined ? { filename: c.filename, text: c.text } : { text: c.text };
  });
}

export function parseInfill(body: unknown, defaultMax: number): Call {
  const o = obj(body);
  // llama-server: prefix, then the FIM middle token, then `prompt` (the start of the cursor's line).
  const extra = extraContext(o.input_extra);
  const prefix = (optStr(o, "input_prefix") ?? "") + promptText(o.prompt);
  const nIndent = optNum(o, "n_indent", 0, 1024, true);
  const tMax = optNum(o, "t_max_predict_ms", 0, 600_000);
  return {
    model: optStr(o, "model")?.trim() || undefined,
    stream: o.stream === true,
    gen: {
      kind: "infill",
      prefix,
      suffix: optStr(o, "input_suffix") ?? "",
      ...sampling(o, defaultMax),
      ...(extra?.length ? { input_extra: extra } : {}),
      ...(nIndent ? { n_indent: nIndent } : {}),
      ...(tMax ? { t_max_predict_ms: tMax } : {}),
    },
    ...limits(o),
  };
}

export function parseCompletion(body: unknown, defaultMax: number): Call {
  const o = obj(body);
  return {
    model: optStr(o, "model")?.trim() || undefined,
    stream: o.stream === true,
    gen: { kind: "inference", prompt: promptText(o.prompt), ...sampling(o, defaultMax) },
    ...limits(o),
  };
}

function stopFields(r: RunResult | undefined) {
  const type = !r
    ? "limit"
    : r.stopReason === "max_tokens" || r.stopReason === "cancelled"
      ? "limit"
      : r.stopReason === "stop_sequence"
        ? "word"
        : "eos";
  return {
    stop_type: type,
    stopped_eos: type === "eos",
    stopped_word: type === "word",
    stopped_limit: type === "limit",
    stopping_word: "",
  };
}

function timings(r: RunResult | undefined) {
  const predicted = r?.tokensOut ?? 0;
  const ms = r?.decodeMs ?? 0;
  return {
    prompt_n: r?.tokensIn ?? 0,
    prompt_ms: r?.firstTokenMs ?? 0,
    predicted_n: predicted,
    predicted_ms: ms,
    predicted_per_token_ms: predicted ? ms / predicted : 0,
    predicted_per_second: ms > 0 ? (predicted * 1000) / ms : 0,
  };
}

export function llamacppResponder(modelName: string): Responder {
  let n = 0;
  const final = (content: string, r: RunResult | undefined) => ({
    index: 0,
    content,
    tokens: [],
    id_slot: 0,
    stop: true,
    model: modelName,
    tokens_predicted: r?.tokensOut ?? 0,
    tokens_evaluated: r?.tokensIn ?? 0,
    tokens_cached: 0,
    truncated: false,
    has_new_line: content.includes("\n"),
    generation_settings: { model: modelName },
    ...stopFields(r),
    timings: timings(r),
  });
  return {
    open(res) {
      openSse(res);
    },
    token(res, text) {
      res.write(
        `data: ${JSON.stringify({ index: 0, content: text, tokens: [], stop: false, id_slot: 0, tokens_predicted: ++n, tokens_evaluated: 0 })}\n\n`,
      );
    },
    end(res, r) {
      res.end(`data: ${JSON.stringify(final("", r))}\n\n`);
    },
    streamError(res, err) {
      res.end(`error: ${JSON.stringify(llamacppError(err).body)}\n\n`);
    },
    complete(res, text, r) {
      writeJson(res, 200, final(text, r));
    },
  };
}

/** llama-server's error shape: { error: { code: <http status>, message, type } }. */
export function llamacppError(err: unknown): { status: number; body: unknown } {
  const f = describeError(err);
  const type =
    f.status === 401
      ? "authentication_error"
      : f.status === 404
        ? "not_found_error"
        : f.status === 429 || f.code === "ALL_SLOTS_BUSY"
          ? "unavailable_error"
          : f.status < 500
            ? "invalid_request_error"
            : "server_error";
  return { status: f.status, body: { error: { code: f.status, message: f.message, type } } };
}

export function writeLlamacppError(res: ServerResponse, err: unknown, headers: Record<string, string> = {}) {
  const { status, body } = llamacppError(err);
  writeJson(res, status, body, headers);
}

export function props(modelName: string, totalSlots: number, nCtx: number) {
  return {
    default_generation_settings: { n_ctx: nCtx, model: modelName, params: {} },
    total_slots: totalSlots,
    model_path: modelName,
    chat_template: "",
    modalities: { vision: false, audio: false },
    build_info: "rbee gateway",
  };
}
