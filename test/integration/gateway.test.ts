// `rbee serve` on localhost, driven by the clients people use: the official `openai` and `ollama` npm
// clients, and requests shaped exactly as llama.vscode and Continue send them. Real gateway process,
// real local hive, real worker on a generated GGUF.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { statSync, rmSync } from "node:fs";
import OpenAI from "openai";
import { Ollama } from "ollama";
import { ensureModel } from "../fixtures/models";
import { newRbeeHome, runCli } from "../helpers/cli";
import { isAlive } from "../helpers/hive";
import {
  gatewayConfigPath,
  requestLog,
  startGateway,
  writeGatewayConfig,
  type RunningGateway,
} from "../helpers/gateway";

const model = `file:${ensureModel("tiny")}`;

describe("rbee serve: OpenAI, Ollama and llama.cpp clients", () => {
  const home = newRbeeHome();
  const env = { RBEE_HOME: home };
  let gw: RunningGateway;
  let openai: OpenAI;
  let ollama: Ollama;

  before(async () => {
    // "tiny" is an alias; the worker the gateway starts runs on the CPU with one thread.
    writeGatewayConfig(gatewayConfigPath(home), {
      aliases: { tiny: model },
      spawn: { backend: "cpu", threads: 1, slots: 2 },
    });
    gw = await startGateway([], env);
    openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: gw.token, maxRetries: 0 });
    ollama = new Ollama({ host: gw.url, headers: { Authorization: `Bearer ${gw.token}` } });
  });
  after(async () => {
    await gw?.stop();
    await runCli(["hive", "stop"], env);
    rmSync(home, { recursive: true, force: true });
  });

  test("the token lives in a 0600 file under RBEE_HOME and every endpoint but /health needs it", async () => {
    const file = `${home}/gateway/token`;
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal((await runCli(["serve", "--show-token"], env)).stdout.trim(), gw.token);
    assert.equal((await fetch(`${gw.url}/health`)).status, 200);
    const refused = await fetch(`${gw.url}/v1/models`, { headers: { authorization: "Bearer wrong" } });
    assert.equal(refused.status, 401);
    assert.equal(((await refused.json()) as any).error.code, "invalid_api_key");
    const stranger = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: "not-the-token", maxRetries: 0 });
    await assert.rejects(
      stranger.models.list(),
      (e: any) => e instanceof OpenAI.AuthenticationError && e.status === 401,
    );
    assert.doesNotMatch(gw.cli.stderr, new RegExp(gw.token), "the token never reaches the log");
  });

  test("rbee serve: usage errors exit 2 and say what to do (bad port, port in use)", async () => {
    const bad = await runCli(["serve", "--port", "70000"], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--port must be an integer between 0 and 65535/);
    const taken = await runCli(["serve", "--port", new URL(gw.url).port], env);
    assert.equal(taken.code, 2);
    assert.match(taken.stderr, /is in use; pick another with --port/);
    const help = await runCli(["serve", "--help"], env);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /--show-token/);
  });

  test("openai: models list, chat whole and streamed (same seed, same text), usage counts", async () => {
    const ids = (await openai.models.list()).data.map((m) => m.id);
    assert.ok(ids.includes("tiny"), ids.join(","));
    assert.equal((await openai.models.retrieve("tiny")).id, "tiny");
    await assert.rejects(
      openai.models.retrieve("nothing-by-this-name"),
      (e: any) => e.status === 404 && e.code === "model_not_found",
    );
    const req = {
      model: "tiny",
      messages: [{ role: "user" as const, content: "Say hi" }],
      max_tokens: 12,
      seed: 7,
      temperature: 0.8,
    };
    const whole = await openai.chat.completions.create(req);
    assert.equal(whole.object, "chat.completion");
    assert.equal(whole.model, "tiny");
    assert.equal(whole.choices[0].finish_reason, "length");
    assert.equal(whole.usage?.completion_tokens, 12);
    assert.ok(whole.usage!.prompt_tokens > 3, "the chat template's tokens are counted");
    assert.equal(whole.usage!.total_tokens, whole.usage!.prompt_tokens + 12);
    const stream = await openai.chat.completions.create({
      ...req,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null | undefined;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? "";
      finish ??= chunk.choices[0]?.finish_reason;
      usage ??= chunk.usage ?? undefined;
    }
    assert.equal(text, whole.choices[0].message.content);
    assert.equal(finish, "length");
    assert.equal(usage?.completion_tokens, 12);
  });

  test("openai: completions with stop sequences, and with suffix (fill-in-the-middle)", async () => {
    const base = { model: "tiny", prompt: "def fib(n):", max_tokens: 24, seed: 11 };
    const full = (await openai.completions.create(base)).choices[0];
    assert.equal(full.finish_reason, "length");
    // A stop sequence taken from the middle of the text cuts it there, and is not part of the answer.
    const stop = full.text.slice(Math.floor(full.text.length / 2), Math.floor(full.text.length / 2) + 3);
    const cut = (await openai.completions.create({ ...base, stop: [stop, "\u0000never"] })).choices[0];
    assert.equal(cut.finish_reason, "stop");
    assert.equal(cut.text, full.text.slice(0, full.text.indexOf(stop)));
    let streamed = "";
    for await (const c of await openai.completions.create({ ...base, stop, stream: true }))
      streamed += c.choices[0]?.text ?? "";
    assert.equal(streamed, cut.text);
    const fim = await openai.completions.create({
      model: "tiny",
      prompt: "def add(a, b):\n    return ",
      suffix: "\n\nprint(add(1, 2))\n",
      max_tokens: 6,
      seed: 1,
    });
    assert.equal(fim.usage?.completion_tokens, 6);
    assert.ok(fim.choices[0].text.length > 0);
    assert.notEqual(
      fim.choices[0].text,
      (
        await openai.completions.create({
          model: "tiny",
          prompt: "def add(a, b):\n    return ",
          max_tokens: 6,
          seed: 1,
        })
      ).choices[0].text,
      "the suffix reaches the model",
    );
  });

  test("openai: aborting mid-stream stops the generation and frees the slot", async () => {
    const stream = await openai.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "count" }],
      max_tokens: 3000,
      stream: true,
    });
    let chunks = 0;
    for await (const _ of stream) if (++chunks === 3) stream.controller.abort();
    await gw.until(
      "the aborted request to leave its slot",
      async () => (await gw.metric("rbee_gateway_inflight")) === 0,
    );
    await gw.until("the aborted request's log line", () =>
      requestLog(gw).some((r) => r.path === "/v1/chat/completions" && r.status === 499),
    );
    const line = requestLog(gw).find((r) => r.status === 499)!.line;
    const tokens = Number(/tokens=(\d+)/.exec(line)?.[1] ?? 0);
    assert.ok(tokens < 3000, `generation stopped early (${line})`);
  });

  test("openai: errors come in OpenAI's shape (bad field, unknown model)", async () => {
    await assert.rejects(
      openai.chat.completions.create({ model: "tiny", messages: [], max_tokens: 4 }),
      (e: any) => e.status === 400 && e.param === "messages" && e.type === "invalid_request_error",
    );
    await assert.rejects(
      openai.chat.completions.create({
        model: "no-such-model.gguf",
        messages: [{ role: "user", content: "x" }],
        max_tokens: 4,
      }),
      (e: any) => e.status >= 400 && typeof e.message === "string",
    );
  });

  test("ollama: version, tags, generate and chat whole and streamed, stop, abort", async () => {
    assert.match((await ollama.version()).version, /^\d+\.\d+\.\d+/);
    assert.ok((await ollama.list()).models.some((m) => m.name === "tiny"));
    // An empty prompt is a "load the model" call: answered at once, nothing generated.
    const load = await ollama.generate({ model: "tiny", prompt: "" });
    assert.equal(load.done, true);
    assert.equal(load.response, "");
    assert.equal(load.eval_count, 0);
    const opts = { num_predict: 10, seed: 3 };
    const whole = await ollama.generate({ model: "tiny", prompt: "def main():", raw: true, options: opts });
    assert.equal(whole.done, true);
    assert.equal(whole.done_reason, "length");
    assert.equal(whole.eval_count, 10);
    let streamed = "";
    for await (const part of await ollama.generate({
      model: "tiny",
      prompt: "def main():",
      raw: true,
      options: opts,
      stream: true,
    }))
      streamed += part.response;
    assert.equal(streamed, whole.response);
    const stop = whole.response!.slice(4, 7);
    const cut = await ollama.generate({
      model: "tiny",
      prompt: "def main():",
      raw: true,
      options: { ...opts, stop: [stop] },
    });
    assert.equal(cut.response, whole.response!.slice(0, whole.response!.indexOf(stop)));
    assert.equal(cut.done_reason, "stop");
    const chat = await ollama.chat({ model: "tiny", messages: [{ role: "user", content: "hi" }], options: opts });
    assert.equal(chat.message.role, "assistant");
    assert.equal(chat.eval_count, 10);
    let chatStreamed = "";
    for await (const part of await ollama.chat({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      options: opts,
      stream: true,
    }))
      chatStreamed += part.message.content;
    assert.equal(chatStreamed, chat.message.content);
    const before = requestLog(gw).filter((r) => r.status === 499).length;
    const long = await ollama.chat({
      model: "tiny",
      messages: [{ role: "user", content: "hi" }],
      options: { num_predict: 3000 },
      stream: true,
    });
    let parts = 0;
    await assert.rejects(
      async () => {
        for await (const _ of long) if (++parts === 3) long.abort();
      },
      (e: any) => e.name === "AbortError",
    );
    await gw.until(
      "the aborted Ollama chat to be logged",
      () => requestLog(gw).filter((r) => r.status === 499).length > before,
    );
    await gw.until("its slot to free", async () => (await gw.metric("rbee_gateway_inflight")) === 0);
  });

  test("llama.vscode's /infill requests, as it sends them", async () => {
    // Bodies as built by createRequestPayload() in ggml-org/llama.vscode, src/llama-server.ts: the
    // cache warm-up (n_predict 0) and a completion with defaultRequestParams spread in. No "model":
    // the gateway serves the one model that has workers.
    const chunks = [
      {
        text: "export function sum(xs: number[]) {\n  return xs.reduce((a, b) => a + b, 0);\n}\n",
        time: Date.now(),
        filename: "src/sum.ts",
      },
    ];
    const warm = await gw.fetch("/infill", {
      method: "POST",
      body: JSON.stringify({
        input_prefix: "",
        input_suffix: "",
        input_extra: chunks,
        prompt: "",
        n_predict: 0,
        samplers: [],
        cache_prompt: true,
        t_max_prompt_ms: 500,
        t_max_predict_ms: 1,
      }),
    });
    assert.equal(warm.status, 200);
    assert.equal(((await warm.json()) as any).content, "");
    const res = await gw.fetch("/infill", {
      method: "POST",
      body: JSON.stringify({
        input_prefix: "import { sum } from './sum';\n\nfunction mean(xs: number[]) {\n",
        input_suffix: "\n}\n",
        input_extra: chunks,
        prompt: "  return ",
        n_predict: 16,
        top_k: 40,
        top_p: 0.99,
        stream: false,
        samplers: ["top_k", "top_p", "infill"],
        cache_prompt: true,
        n_indent: 2,
        t_max_prompt_ms: 500,
        t_max_predict_ms: 10_000,
      }),
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as any;
    assert.equal(typeof body.content, "string");
    assert.equal(body.stop, true);
    // n_indent 2 may end the answer early at a line indented less (the worker honours it): at most 16.
    assert.ok(
      body.timings.predicted_n >= 1 && body.timings.predicted_n <= 16,
      `predicted_n ${body.timings.predicted_n}`,
    );
    assert.equal(body.content.length > 0, true);
    // The extra context reaches the prompt: more prompt tokens than without it.
    const without: any = await (
      await gw.fetch("/infill", {
        method: "POST",
        body: JSON.stringify({
          input_prefix: "import { sum } from './sum';\n\nfunction mean(xs: number[]) {\n",
          input_suffix: "\n}\n",
          prompt: "  return ",
          n_predict: 1,
        }),
      })
    ).json();
    assert.ok(
      body.timings.prompt_n > without.timings.prompt_n + 10,
      `${body.timings.prompt_n} vs ${without.timings.prompt_n}`,
    );
    // llama.vim and the llama.cpp web UI: /completion streamed, /health, /props.
    const streamed = await gw.fetch("/completion", {
      method: "POST",
      body: JSON.stringify({ prompt: "int main() {", n_predict: 5, stream: true }),
    });
    const events = (await streamed.text())
      .split("\n\n")
      .filter(Boolean)
      .map((e) => JSON.parse(e.replace(/^data: /, "")));
    assert.equal(events.length, 6);
    assert.equal(events.at(-1).stop, true);
    assert.equal(events.at(-1).timings.predicted_n, 5);
    assert.equal(((await (await gw.fetch("/props")).json()) as any).total_slots, 2);
  });

  test("Continue's Ollama autocomplete: /api/show says FIM, /api/generate with suffix streams NDJSON", async () => {
    // As in continuedev/continue, core/llm/llms/Ollama.ts: the constructor POSTs /api/show and looks for
    // ".Suffix" in the template; _streamFim POSTs /api/generate with _getGenerateOptions(options, prefix, suffix).
    const show: any = await (
      await gw.fetch("/api/show", { method: "POST", body: JSON.stringify({ name: "tiny" }) })
    ).json();
    assert.ok(show.template.includes(".Suffix"));
    const res = await gw.fetch("/api/generate", {
      method: "POST",
      body: JSON.stringify({
        model: "tiny",
        prompt: "def is_even(n):\n    return ",
        suffix: "\n\nprint(is_even(4))\n",
        raw: true,
        options: {
          temperature: 0.01,
          top_p: undefined,
          top_k: undefined,
          num_predict: 8,
          stop: ["\n\n", "```"],
          num_ctx: 4096,
        },
        keep_alive: 1800,
        stream: true,
      }),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /application\/x-ndjson/);
    const lines = (await res.text())
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(lines.at(-1).done, true);
    assert.ok(lines.at(-1).eval_count >= 1 && lines.at(-1).eval_count <= 8);
    assert.ok(lines.slice(0, -1).every((l) => l.done === false && typeof l.response === "string"));
  });

  test("a worker that went away (stopped idle, crashed) is replaced by the next request, which still succeeds", async () => {
    const [before] = JSON.parse((await runCli(["workers", "list", "--json"], env)).stdout).workers;
    process.kill(before.pid, "SIGKILL");
    await gw.until("the worker process to be gone", () => !isAlive(before.pid));
    const failovers = await gw.metric("rbee_gateway_failovers_total");
    const answer = await openai.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "again" }],
      max_tokens: 4,
    });
    assert.equal(answer.usage?.completion_tokens, 4);
    assert.equal(
      (await gw.metric("rbee_gateway_failovers_total")) - failovers,
      1,
      "the dead worker was tried once, then replaced",
    );
    const [after] = JSON.parse((await runCli(["workers", "list", "--json"], env)).stdout).workers;
    assert.notEqual(after.id, before.id);
  });

  test("/metrics counts requests, tokens and first-token times; one log line per request", async () => {
    const text = await gw.metrics();
    assert.match(text, /# TYPE rbee_gateway_requests_total counter/);
    assert.ok((await gw.metric("rbee_gateway_requests_total", { api: "openai", status: "200" })) >= 5);
    assert.ok((await gw.metric("rbee_gateway_tokens_generated_total", { node: "localhost", model })) > 50);
    assert.ok((await gw.metric("rbee_gateway_time_to_first_token_seconds_count", { node: "localhost" })) >= 5);
    const timed = await gw.fetch("/v1/completions", {
      method: "POST",
      body: JSON.stringify({ model: "tiny", prompt: "x", max_tokens: 2 }),
    });
    assert.equal(timed.headers.get("x-rbee-node"), "localhost");
    assert.match(
      timed.headers.get("server-timing") ?? "",
      /^gateway;dur=\d+\.\d\d$/,
      "the gateway's own time before the worker",
    );
    const logged = requestLog(gw);
    assert.ok(logged.some((r) => r.path === "/infill" && r.status === 200 && /node=localhost tokens=16/.test(r.line)));
  });
});
