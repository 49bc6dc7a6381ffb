import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ERROR_CODES,
  ERROR_STATUS,
  RbeeError,
  isErrorEnvelope,
  parseInferenceRequest,
  parseInfillRequest,
  parseSpawnRequest,
  parseStreamEvent,
  parseDownloadRequest,
} from "../../hive-agent/src/protocol";
import { StopMatcher } from "../../hive-agent/src/worker/stop-matcher";
import { parseModelRef, pickQuantization } from "../../hive-agent/src/catalog/model-ref";

const invalid = (field: string) => (e: any) =>
  e instanceof RbeeError && e.code === "INVALID_REQUEST" && e.message.includes(`"${field}"`);

test("every error code has an HTTP status", () => {
  for (const c of ERROR_CODES) assert.ok(ERROR_STATUS[c] >= 400 && ERROR_STATUS[c] < 600, c);
  assert.ok(isErrorEnvelope(new RbeeError("ALL_SLOTS_BUSY", "x").toEnvelope()));
  assert.ok(!isErrorEnvelope({ error: { code: "MADE_UP", message: "x" } }));
});

test("inference requests are validated field by field", () => {
  assert.deepEqual(parseInferenceRequest({ prompt: "p", max_tokens: 5, seed: 3, stop: ["\n"] }).stop, ["\n"]);
  assert.throws(() => parseInferenceRequest({ max_tokens: 5 }), invalid("prompt"));
  assert.throws(() => parseInferenceRequest({ prompt: "p" }), invalid("max_tokens"));
  assert.throws(() => parseInferenceRequest({ prompt: "p", max_tokens: 1.5 }), invalid("max_tokens"));
  assert.throws(() => parseInferenceRequest({ prompt: "p", max_tokens: 5, temperature: -1 }), invalid("temperature"));
  assert.throws(() => parseInferenceRequest({ prompt: "p", max_tokens: 5, top_p: 2 }), invalid("top_p"));
  assert.throws(() => parseInferenceRequest({ prompt: "p", max_tokens: 5, stop: [""] }), invalid("stop"));
  assert.throws(() => parseInferenceRequest({ prompt: "p", max_tokens: 5, request_id: "../x" }), invalid("request_id"));
  assert.throws(
    () => parseInferenceRequest([1, 2]),
    (e: any) => e.code === "INVALID_REQUEST",
  );
});

test("infill requests: llama.cpp's input_extra, t_max_predict_ms and n_indent are optional; max_tokens 0 is a warm-up", () => {
  const plain = parseInfillRequest({ prefix: "a", suffix: "b", max_tokens: 4 });
  assert.deepEqual([plain.input_extra, plain.t_max_predict_ms, plain.n_indent], [undefined, undefined, undefined]);
  const r = parseInfillRequest({
    prefix: "a",
    suffix: "b",
    max_tokens: 0,
    input_extra: [{ text: "x", filename: "f.ts" }, { text: "y" }],
    t_max_predict_ms: 500,
    n_indent: 4,
  });
  assert.deepEqual(r.input_extra, [{ text: "x", filename: "f.ts" }, { text: "y" }]);
  assert.equal(r.max_tokens, 0);
  assert.equal(r.t_max_predict_ms, 500);
  assert.equal(r.n_indent, 4);
  assert.throws(
    () => parseInfillRequest({ prefix: "a", suffix: "b", max_tokens: 1, input_extra: [{ filename: "f" }] }),
    invalid("input_extra[0].text"),
  );
  assert.throws(
    () => parseInfillRequest({ prefix: "a", suffix: "b", max_tokens: 1, input_extra: "x" }),
    invalid("input_extra"),
  );
  assert.throws(
    () => parseInfillRequest({ prefix: "a", suffix: "b", max_tokens: 1, n_indent: -1 }),
    invalid("n_indent"),
  );
  assert.throws(() => parseInferenceRequest({ prompt: "p", max_tokens: 0 }), invalid("max_tokens"));
});

test("spawn and download requests are validated", () => {
  assert.equal(parseSpawnRequest({ model_ref: "a.gguf", backend: "cuda", device: 1 }).device, 1);
  assert.throws(() => parseSpawnRequest({ model_ref: "a.gguf", backend: "tpu" }), invalid("backend"));
  assert.throws(() => parseSpawnRequest({ model_ref: "a.gguf", slots: 0 }), invalid("slots"));
  assert.throws(() => parseDownloadRequest({ model_ref: "hf:a/b", sha256: "abc" }), invalid("sha256"));
});

test("stream events: unknown error codes become INTERNAL, unknown types are refused", () => {
  assert.deepEqual(parseStreamEvent({ type: "error", code: "WHAT", message: "m" }), {
    type: "error",
    code: "INTERNAL",
    message: "m",
  });
  assert.throws(() => parseStreamEvent({ type: "bogus" }));
});

test("the stop matcher never releases part of a stop sequence", () => {
  const m = new StopMatcher(["</s>", "\n\n"]);
  assert.deepEqual(m.push("hello <"), { text: "hello ", stopped: false });
  assert.deepEqual(m.push("/"), { text: "", stopped: false });
  assert.deepEqual(m.push("x"), { text: "</x", stopped: false });
  assert.deepEqual(m.push("a\n"), { text: "a", stopped: false });
  assert.deepEqual(m.push("\nrest"), { text: "", stopped: true });
  const n = new StopMatcher(["END"]);
  n.push("E");
  assert.equal(n.flush(), "E");
  assert.deepEqual(new StopMatcher([]).push("abc"), { text: "abc", stopped: false });
});

test("model refs parse, and refs that escape the models folder are refused", () => {
  assert.deepEqual(parseModelRef("hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"), {
    kind: "hf",
    owner: "Qwen",
    repo: "Qwen2.5-Coder-1.5B-Instruct-GGUF",
    file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    revision: "main",
  });
  assert.equal(parseModelRef("hf:a/b").kind, "hf");
  assert.equal(parseModelRef("file:/models/x.gguf").kind, "file");
  assert.equal(parseModelRef("https://example.org/m/x.gguf").kind, "url");
  assert.equal(parseModelRef("sub/x.gguf").kind, "catalog");
  for (const bad of [
    "../x.gguf",
    "a/../../x.gguf",
    "hf:a/../b.gguf",
    "hf:a",
    "file:x.gguf",
    "http://example.org/x.gguf",
    "ftp://h/x.gguf",
    "x.bin",
    ".hidden/x.gguf",
  ])
    assert.throws(
      () => parseModelRef(bad),
      (e: any) => e.code === "INVALID_REQUEST",
      bad,
    );
});

test("the preferred quantization is picked from a repository's files", () => {
  assert.equal(pickQuantization(["m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-F16.gguf"]), "m-Q4_K_M.gguf");
  assert.equal(pickQuantization(["mmproj-Q4_K_M.gguf", "m-q8_0.gguf"]), "m-q8_0.gguf");
  assert.equal(pickQuantization(["README.md"]), undefined);
});
