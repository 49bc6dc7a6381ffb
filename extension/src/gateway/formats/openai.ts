// OpenAI's API as its SDKs send it: GET /v1/models, POST /v1/chat/completions, POST /v1/completions
// (`suffix` makes it fill-in-the-middle), streamed as `data:` chunks ending in `data: [DONE]`, with usage
// and OpenAI's error shape.

import { randomUUID } from "node:crypto";
import type { ServerResponse } from "node:http";
import type { RunResult } from "../scheduler";
import {
  budget,
  chatMessages,
  describeError,
  finishReason,
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
  if (o.n !== undefined && o.n !== 1) invalid("n", "1 (one choice per request)");
  if (Array.isArray(o.tools) && o.tools.length) invalid("tools", "absent: rbee workers do not call tools");
  const max = optNum(o, "max_completion_tokens", 1, 1 << 30, true) ?? optNum(o, "max_tokens", 1, 1 << 30, true);
  return {
    max_tokens: budget(max, defaultMax),
    temperature: optNum(o, "temperature", 0, 2),
    top_p: optNum(o, "top_p", 0, 1),
    seed: optNum(o, "seed", 0, 2 ** 32 - 1, true),
    stop: stopList(o.stop),
  };
}

function model(o: Record<string, any>): string | undefined {
  return optStr(o, "model")?.trim() || undefined;
}

export function parseChat(body: unknown, defaultMax: number): Call {
  const o = obj(body);
  return {
    model: model(o),
    stream: o.stream === true,
    gen: { kind: "chat", messages: chatMessages(o.messages), ...sampling(o, defaultMax) },
  };
}

export function parseCompletion(body: unknown): Call {
  const o = obj(body);
  let prompt = o.prompt;
  if (Array.isArray(prompt)) {
    if (prompt.length !== 1 || typeof prompt[0] !== "string") invalid("prompt", "a string (or an array of one string)");
    prompt = prompt[0];
  }
  if (typeof prompt !== "string") invalid("prompt", "a string");
  if (o.echo === true) invalid("echo", "false: the prompt is not echoed");
  // OpenAI's default for the legacy completions endpoint is 16 tokens.
  const s = sampling(o, 16);
  const suffix = optStr(o, "suffix");
  return {
    model: model(o),
    stream: o.stream === true,
    gen: suffix !== undefined ? { kind: "infill", prefix: prompt, suffix, ...s } : { kind: "inference", prompt, ...s },
  };
}

function usage(r: RunResult) {
  const prompt = r.tokensIn ?? 0;
  return { prompt_tokens: prompt, completion_tokens: r.tokensOut, total_tokens: prompt + r.tokensOut };
}

/** Writes chat or completion answers; `includeUsage` is stream_options.include_usage. */
export function openaiResponder(kind: "chat" | "completion", modelName: string, includeUsage: boolean): Responder {
  const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
  const chunk = (choice: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ id, object, created, model: modelName, system_fingerprint: null, choices: [{ index: 0, ...choice, logprobs: null }], ...extra })}\n\n`;
  return {
    open(res) {
      openSse(res);
      if (kind === "chat") res.write(chunk({ delta: { role: "assistant", content: "" }, finish_reason: null }));
    },
    token(res, text) {
      res.write(
        chunk(kind === "chat" ? { delta: { content: text }, finish_reason: null } : { text, finish_reason: null }),
      );
    },
    end(res, r) {
      res.write(
        chunk(
          kind === "chat"
            ? { delta: {}, finish_reason: finishReason(r) }
            : { text: "", finish_reason: finishReason(r) },
        ),
      );
      if (includeUsage)
        res.write(
          `data: ${JSON.stringify({ id, object, created, model: modelName, choices: [], usage: usage(r) })}\n\n`,
        );
      res.end("data: [DONE]\n\n");
    },
    streamError(res, err) {
      res.end(`data: ${JSON.stringify(openaiError(err).body)}\n\n`);
    },
    complete(res, text, r) {
      const choice =
        kind === "chat"
          ? { message: { role: "assistant", content: text, refusal: null }, finish_reason: finishReason(r) }
          : { text, finish_reason: finishReason(r) };
      writeJson(res, 200, {
        id,
        object: kind === "chat" ? "chat.completion" : "text_completion",
        created,
        model: modelName,
        system_fingerprint: null,
        choices: [{ index: 0, ...choice, logprobs: null }],
        usage: usage(r),
      });
    },
  };
}

/** OpenAI's error shape: { error: { message, type, param, code } }. */
export function openaiError(err: unknown): { status: number; body: unknown } {
  const f = describeError(err);
  const type =
    f.status === 401
      ? "authentication_error"
      : f.status === 404
        ? "not_found_error"
        : f.status === 429
          ? "rate_limit_error"
          : f.status < 500
            ? "invalid_request_error"
            : "server_error";
  const code =
    f.status === 429
      ? "rate_limit_exceeded"
      : f.code === "INVALID_API_KEY"
        ? "invalid_api_key"
        : f.code === "MODEL_NOT_FOUND"
          ? "model_not_found"
          : f.code.toLowerCase();
  return { status: f.status, body: { error: { message: f.message, type, param: f.field ?? null, code } } };
}

export function modelList(ids: string[]) {
  return { object: "list", data: ids.map((id) => ({ id, object: "model", created: 0, owned_by: "rbee" })) };
}

export function writeOpenaiError(res: ServerResponse, err: unknown, headers: Record<string, string> = {}) {
  const { status, body } = openaiError(err);
  writeJson(res, status, body, headers);
}
