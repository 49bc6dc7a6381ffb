// The gateway's pure parts: settings validation, the config snippets other tools paste, the
// Prometheus text, and the token file's permissions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync, chmodSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseGatewayConfig, DEFAULT_GATEWAY_PORT } from "../../extension/src/gateway/config";
import { configSnippet } from "../../extension/src/gateway/snippets";
import { GatewayMetrics } from "../../extension/src/gateway/metrics";
import { loadGatewayToken } from "../../extension/src/gateway/token";

test("settings: defaults, and a bad value names its field", () => {
  const d = parseGatewayConfig({});
  assert.deepEqual(d.queue, { size: 64, waitMs: 30_000 });
  assert.ok(![11434, 8080].includes(DEFAULT_GATEWAY_PORT as number), "clashes with neither Ollama nor llama-server");
  const c = parseGatewayConfig({
    aliases: { fim: " hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/q8_0.gguf " },
    queue: { size: 0, waitMs: 5 },
    spawn: { backend: "cpu", threads: 2 },
  });
  assert.equal(c.aliases.fim, "hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/q8_0.gguf");
  assert.equal(c.queue.size, 0);
  assert.equal(c.spawn.backend, "cpu");
  assert.throws(() => parseGatewayConfig({ queue: { size: -1 } }), /queue\.size/);
  assert.throws(() => parseGatewayConfig({ aliases: { x: 3 } }), /aliases\.x/);
  assert.throws(() => parseGatewayConfig({ spawn: { backend: "tpu" } }), /spawn\.backend/);
});

test("snippets carry the URL, token and model, in each tool's syntax", () => {
  const input = { url: "http://127.0.0.1:7437", token: 'rbee-t"k', model: "fim" };
  const vscodeJson = JSON.parse(`{${configSnippet("llama.vscode", input).trim()}}`);
  assert.equal(vscodeJson["llama-vscode.endpoint"], "http://127.0.0.1:7437");
  assert.equal(vscodeJson["llama-vscode.api_key"], 'rbee-t"k');
  const cont = configSnippet("continue", input);
  assert.match(cont, /provider: openai\n {4}model: "fim"\n {4}apiBase: "http:\/\/127\.0\.0\.1:7437\/v1"/);
  assert.match(
    cont,
    /provider: ollama[\s\S]*apiBase: "http:\/\/127\.0\.0\.1:7437"\n {4}apiKey: "rbee-t\\"k"\n {4}roles: \[autocomplete\]/,
  );
  assert.match(configSnippet("openai-sdk", input), /baseURL: "http:\/\/127\.0\.0\.1:7437\/v1"/);
});

test("metrics render as Prometheus text, labels escaped, histogram buckets cumulative", () => {
  const m = new GatewayMetrics();
  m.requests.add({ api: "openai", model: 'a"b', node: "n1", status: "200" });
  m.ttft.observe({ node: "n1", model: "m" }, 0.02);
  m.ttft.observe({ node: "n1", model: "m" }, 3);
  const text = m.render();
  assert.match(text, /^rbee_gateway_requests_total\{api="openai",model="a\\"b",node="n1",status="200"\} 1$/m);
  assert.match(text, /^rbee_gateway_time_to_first_token_seconds_bucket\{model="m",node="n1",le="0\.025"\} 1$/m);
  assert.match(text, /^rbee_gateway_time_to_first_token_seconds_bucket\{model="m",node="n1",le="5"\} 2$/m);
  assert.match(text, /^rbee_gateway_time_to_first_token_seconds_count\{model="m",node="n1"\} 2$/m);
});

test("the token file is made 0600 once, and tightened if someone opened it up", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbee-token-"));
  try {
    const file = path.join(dir, "gateway", "token");
    const token = loadGatewayToken(file);
    assert.match(token, /^rbee-[A-Za-z0-9_-]{43}$/);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(loadGatewayToken(file), token);
    chmodSync(file, 0o644);
    assert.equal(loadGatewayToken(file), token);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    writeFileSync(file, "");
    const fresh = loadGatewayToken(file);
    assert.match(fresh, /^rbee-/, "an empty file gets a fresh token");
    assert.notEqual(fresh, token);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
