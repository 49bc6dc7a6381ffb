// Ollama's API as its clients send it: GET /api/tags, /api/version, POST /api/show, /api/generate
// (`suffix` makes it fill-in-the-middle, `raw` skips the chat template) and /api/chat, streamed as
// newline-delimited JSON unless `stream: false`.

import type { ServerResponse } from "node:http";
import type { RunResult } from "../scheduler";
import {
  budget,
  chatMessages,
  describeError,
  finishReason,
  obj,
  openSse,
  optNum,
  optStr,
  stopList,
  writeJson,
  type Call,
  type Responder,
} from "./common";

/**
 * What /api/version reports. Tools gate features on Ollama's version (e.g. `suffix` arrived in 0.3),
 * so the gateway answers with the Ollama API level it implements, not rbee's own version.
 */
export const OLLAMA_API_LEVEL = "0.5.0";

function options(o: Record<string, any>, defaultMax: number) {
  const opt = o.options === undefined || o.options === null ? {} : obj(o.options);
  return {
    max_tokens: budget(optNum(opt, "num_predict", -2, 1 << 30, true), defaultMax),
    temperature: optNum(opt, "temperature", 0, 10),
    top_p: optNum(opt, "top_p", 0, 1),
    top_k: optNum(opt, "top_k", 0, 100000, true),
    seed: optNum(opt, "seed", 0, 2 ** 32 - 1, true),
    stop: stopList(opt.stop, "options.stop"),
  };
}

export function parseGenerate(body: unknown, defaultMax: number): Call {
  const o = obj(body);
  const prompt = optStr(o, "prompt") ?? "";
  const suffix = optStr(o, "suffix");
  const system = optStr(o, "system");
  const s = options(o, defaultMax);
  const stream = o.stream !== false;
  const model = optStr(o, "model")?.trim() || undefined;
  // An empty prompt is how Ollama clients ask for the model to be loaded: nothing to generate.
  if (!prompt && !suffix) return { model, stream, gen: { kind: "inference", prompt, ...s }, noGeneration: true };
  if (suffix !== undefined && suffix !== "")
    return { model, stream, gen: { kind: "infill", prefix: prompt, suffix, ...s } };
  // Like Ollama: `raw` sends the prompt as is; otherwise the model's template makes it a user turn.
  if (o.raw === true) return { model, stream, gen: { kind: "inference", prompt, ...s } };
  return {
    model,
    stream,
    gen: {
      kind: "chat",
      messages: [...(system ? [{ role: "system" as const, content: system }] : []), { role: "user", content: prompt }],
      ...s,
    },
  };
}

export function parseChat(body: unknown, defaultMax: number): Call {
  const o = obj(body);
  return {
    model: optStr(o, "model")?.trim() || undefined,
    stream: o.stream !== false,
    gen: { kind: "chat", messages: chatMessages(o.messages), ...options(o, defaultMax) },
  };
}

const ns = (ms: number) => Math.round(ms * 1e6);

function finalFields(r: RunResult, startedAt: number) {
  return {
    done: true,
    done_reason: finishReason(r),
    total_duration: ns(Date.now() - startedAt),
    load_duration: 0,
    prompt_eval_count: r.tokensIn ?? 0,
    prompt_eval_duration: ns(r.firstTokenMs ?? 0),
    eval_count: r.tokensOut,
    eval_duration: ns(r.decodeMs),
  };
}

export function ollamaResponder(kind: "generate" | "chat", modelName: string): Responder {
  const startedAt = Date.now();
  const base = () => ({ model: modelName, created_at: new Date().toISOString() });
  const piece = (text: string) =>
    kind === "chat" ? { message: { role: "assistant", content: text } } : { response: text };
  const line = (x: unknown) => JSON.stringify(x) + "\n";
  return {
    open(res) {
      openSse(res, "application/x-ndjson");
    },
    token(res, text) {
      res.write(line({ ...base(), ...piece(text), done: false }));
    },
    end(res, r) {
      res.end(
        line({
          ...base(),
          ...piece(""),
          ...(kind === "generate" ? { context: [] } : {}),
          ...finalFields(r, startedAt),
        }),
      );
    },
    streamError(res, err) {
      res.end(line({ error: describeError(err).message }));
    },
    complete(res, text, r) {
      writeJson(res, 200, {
        ...base(),
        ...piece(text),
        ...(kind === "generate" ? { context: [] } : {}),
        ...finalFields(r, startedAt),
      });
    },
  };
}

/** Ollama's error shape: { error: "message" }. */
export function writeOllamaError(res: ServerResponse, err: unknown, headers: Record<string, string> = {}) {
  const f = describeError(err);
  writeJson(res, f.status, { error: f.message }, headers);
}

function details() {
  return { parent_model: "", format: "gguf", family: "", families: null, parameter_size: "", quantization_level: "" };
}

export function tags(models: { name: string; size: number }[]) {
  return {
    models: models.map((m) => ({
      name: m.name,
      model: m.name,
      modified_at: new Date(0).toISOString(),
      size: m.size,
      digest: "",
      details: details(),
    })),
  };
}

/**
 * /api/show. Continue decides whether a model can fill in the middle by looking for ".Suffix" in the
 * template, so the template says so: every worker takes infill requests (and answers
 * INFILL_UNSUPPORTED for a model without FIM tokens).
 */
export function show(name: string) {
  return {
    modelfile: "",
    parameters: "",
    template:
      "{{ if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>{{ else }}{{ .Prompt }}{{ end }}",
    details: details(),
    model_info: { "general.name": name },
    capabilities: ["completion", "insert"],
    modified_at: new Date(0).toISOString(),
  };
}
