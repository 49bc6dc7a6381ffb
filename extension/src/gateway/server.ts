// The gateway's HTTP server: OpenAI-, Ollama- and llama.cpp-shaped endpoints over the keeper's fleet.
// Every endpoint but GET /health and GET / needs the gateway's bearer token. Each request becomes the
// keeper's Generation, goes through the scheduler (routing, queue, failover) and is written back in
// its API's shape; one log line per request, never with prompts or tokens in it.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { RbeeError } from "@rbee/hive-agent/protocol";
import { checkBearer, readJson } from "@rbee/hive-agent/util/http";
import type { Keeper, NodeConnector } from "../keeper/keeper";
import type { GatewayConfig } from "./config";
import { describeError, writeJson, type Call, type Responder } from "./formats/common";
import * as llamacpp from "./formats/llamacpp";
import * as ollama from "./formats/ollama";
import * as openai from "./formats/openai";
import { GatewayMetrics } from "./metrics";
import { QueueRejection, Scheduler, type RunResult, type Target } from "./scheduler";

export interface GatewayOptions {
  keeper: Keeper;
  nodes: NodeConnector;
  /** Read on every request, so the extension's settings apply without a restart. */
  config: () => GatewayConfig;
  token: string;
  /** Whether a name is a node ("localhost", an ssh config Host): `node/model` then forces it. */
  isNode: (name: string) => boolean | Promise<boolean>;
  /** One line per request. */
  log?: (line: string) => void;
}

type Api = "openai" | "ollama" | "llamacpp";

interface Outcome {
  status: number;
  model?: string;
  node?: string;
  tokens?: number;
  ttftMs?: number;
  error?: string;
}

export class Gateway {
  readonly metrics = new GatewayMetrics();
  readonly scheduler: Scheduler;
  private server?: Server;

  constructor(private readonly opts: GatewayOptions) {
    this.scheduler = new Scheduler(opts.keeper, opts.nodes, opts.config, this.metrics);
  }

  /** Listens on host:port (port 0: any free port) and resolves with the address taken. */
  listen(port: number, host: string): Promise<{ host: string; port: number; url: string }> {
    const server = createServer((req, res) => void this.handle(req, res));
    server.keepAliveTimeout = 65_000;
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        const a = server.address() as AddressInfo;
        const shown = a.family === "IPv6" ? `[${a.address}]` : a.address;
        resolve({ host: a.address, port: a.port, url: `http://${shown}:${a.port}` });
      });
    });
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    const started = Date.now();
    const path = (req.url ?? "/").split("?")[0];
    const method = req.method ?? "GET";
    const api: Api = path.startsWith("/v1/") ? "openai" : path.startsWith("/api/") ? "ollama" : "llamacpp";
    let outcome: Outcome = { status: 200 };
    try {
      outcome = await this.route(api, method, path, req, res);
    } catch (e) {
      outcome = { status: describeError(e).status, error: describeError(e).code };
      if (!res.headersSent) this.writeError(api, res, e);
      else res.end();
    }
    this.metrics.requests.add({
      api,
      model: outcome.model ?? "",
      node: outcome.node ?? "",
      status: String(outcome.status),
    });
    this.opts.log?.(
      `${new Date(started).toISOString()} ${method} ${path} ${outcome.status} ${Date.now() - started}ms` +
        (outcome.model ? ` model=${outcome.model}` : "") +
        (outcome.node ? ` node=${outcome.node}` : "") +
        (outcome.tokens !== undefined ? ` tokens=${outcome.tokens}` : "") +
        (outcome.ttftMs !== undefined ? ` ttft=${outcome.ttftMs}ms` : "") +
        (outcome.error ? ` error=${outcome.error}` : ""),
    );
  }

  private writeError(api: Api, res: ServerResponse, e: unknown) {
    const headers: Record<string, string> = e instanceof QueueRejection ? { "retry-after": String(e.retryAfterS) } : {};
    if (api === "openai") openai.writeOpenaiError(res, e, headers);
    else if (api === "ollama") ollama.writeOllamaError(res, e, headers);
    else llamacpp.writeLlamacppError(res, e, headers);
  }

  private async route(
    api: Api,
    method: string,
    path: string,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<Outcome> {
    if (method === "GET" && path === "/health") {
      writeJson(res, 200, { status: "ok" });
      return { status: 200 };
    }
    if (method === "GET" && path === "/") {
      res.writeHead(200, { "content-type": "text/plain" }).end("rbee gateway is running\n");
      return { status: 200 };
    }
    checkBearer(req, [this.opts.token]);
    const config = this.opts.config();
    const max = config.defaultMaxTokens;
    const key = `${method} ${path}`;
    switch (key) {
      case "GET /metrics":
        res.writeHead(200, { "content-type": "text/plain; version=0.0.4" }).end(this.metrics.render());
        return { status: 200 };
      case "GET /v1/models":
        writeJson(res, 200, openai.modelList((await this.models()).map((m) => m.name)));
        return { status: 200 };
      case "POST /v1/chat/completions":
      case "POST /v1/completions": {
        const body = await readJson(req);
        const chat = path.endsWith("chat/completions");
        const call = chat ? openai.parseChat(body, max) : openai.parseCompletion(body);
        const includeUsage = (body as any)?.stream_options?.include_usage === true;
        return this.generate(req, res, call, (name) =>
          openai.openaiResponder(chat ? "chat" : "completion", name, includeUsage),
        );
      }
      case "GET /api/version":
        writeJson(res, 200, { version: ollama.OLLAMA_API_LEVEL });
        return { status: 200 };
      case "GET /api/tags":
        writeJson(res, 200, ollama.tags(await this.models()));
        return { status: 200 };
      case "POST /api/show": {
        const body = (await readJson(req)) as any;
        const name = String(body?.model ?? body?.name ?? "");
        if (!name) throw new RbeeError("INVALID_REQUEST", 'field "model" must be present', { field: "model" });
        writeJson(res, 200, ollama.show(name));
        return { status: 200, model: name };
      }
      case "POST /api/generate":
      case "POST /api/chat": {
        const chat = path === "/api/chat";
        const body = await readJson(req);
        const call = chat ? ollama.parseChat(body, max) : ollama.parseGenerate(body, max);
        if (!call.model) throw new RbeeError("INVALID_REQUEST", 'field "model" must be present', { field: "model" });
        return this.generate(req, res, call, (name) => ollama.ollamaResponder(chat ? "chat" : "generate", name));
      }
      case "POST /infill":
      case "POST /completion": {
        const body = await readJson(req);
        const call = path === "/infill" ? llamacpp.parseInfill(body, max) : llamacpp.parseCompletion(body, max);
        return this.generate(req, res, call, (name) => llamacpp.llamacppResponder(name));
      }
      case "GET /props": {
        const { target, label } = await this.resolve(undefined);
        const snap = this.scheduler.snapshot(target.model);
        writeJson(
          res,
          200,
          llamacpp.props(
            label,
            snap.workers.reduce((n, w) => n + w.slots, 0),
            0,
          ),
        );
        return { status: 200, model: label };
      }
    }
    if (method === "GET" && path.startsWith("/v1/models/")) {
      const id = decodeURIComponent(path.slice("/v1/models/".length));
      const known = (await this.models()).some((m) => m.name === id);
      if (!known)
        throw new RbeeError(
          "MODEL_NOT_FOUND",
          `no alias, worker or catalog entry is called "${id}"; GET /v1/models lists them (any model ref works in requests too)`,
        );
      writeJson(res, 200, openai.modelList([id]).data[0]);
      return { status: 200, model: id };
    }
    throw new RbeeError(
      "NOT_FOUND",
      `the gateway has no endpoint ${method} ${path}; see docs/gateway.md for the ones it serves`,
    );
  }

  /** Queues and runs one generation, streaming it or answering it whole. */
  private async generate(
    req: IncomingMessage,
    res: ServerResponse,
    call: Call,
    responder: (model: string) => Responder,
  ): Promise<Outcome> {
    const arrived = performance.now();
    const { target, label } = await this.resolve(call.model);
    const out = responder(label);
    if (call.noGeneration) {
      // Nothing to generate: answered at once, in the API's own shape.
      const empty: RunResult = {
        text: "",
        tokensOut: 0,
        tokensIn: 0,
        stopReason: "max_tokens",
        decodeMs: 0,
        workerId: "",
        spawned: false,
        node: "",
        failovers: 0,
      };
      if (call.stream) {
        out.open(res);
        out.end(res, empty);
      } else out.complete(res, "", empty);
      return { status: 200, model: label, tokens: 0 };
    }
    const abort = new AbortController();
    // A client that hangs up leaves the queue, or stops its generation.
    res.on("close", () => {
      if (!res.writableFinished) abort.abort();
    });
    let opened = false;
    let text = "";
    let node: string | undefined;
    let ttftMs: number | undefined;
    let result: RunResult;
    try {
      result = await this.scheduler.run(target, call.gen, {
        signal: abort.signal,
        generationLimitMs: call.generationLimitMs,
        onDispatch: (n) => {
          node = n;
          if (!res.headersSent) res.setHeader("x-rbee-node", n);
        },
        // The gateway's own time before the worker saw the request (queue wait included).
        onSend: () => {
          if (!res.headersSent)
            res.setHeader("server-timing", `gateway;dur=${(performance.now() - arrived).toFixed(2)}`);
        },
        onToken: (t) => {
          if (ttftMs === undefined) {
            ttftMs = Math.round((performance.now() - arrived) * 10) / 10;
            this.metrics.ttft.observe({ node: node ?? "", model: target.model }, ttftMs / 1000);
          }
          if (!call.stream) {
            text += t;
            return;
          }
          if (!opened) {
            opened = true;
            out.open(res);
          }
          out.token(res, t);
        },
      });
    } catch (e) {
      if (abort.signal.aborted) return { status: 499, model: label, node, error: "REQUEST_CANCELLED" };
      if (!opened) throw e;
      out.streamError(res, e);
      return { status: 200, model: label, node, ttftMs, error: describeError(e).code };
    }
    const labels = { node: result.node, model: target.model };
    this.metrics.tokens.add(labels, result.tokensOut);
    if (result.decodeMs > 0 && result.tokensOut > 1)
      this.metrics.tokensPerSecond.set(labels, Math.round(((result.tokensOut - 1) / result.decodeMs) * 10000) / 10);
    if (res.destroyed) return { status: 499, model: label, node: result.node, tokens: result.tokensOut, ttftMs };
    if (call.stream) {
      if (!opened) out.open(res);
      out.end(res, result);
    } else out.complete(res, text, result);
    return { status: 200, model: label, node: result.node, tokens: result.tokensOut, ttftMs };
  }

  /**
   * The worker a model name means: an alias from the settings, `node/model` to force a node, or any
   * model ref the CLI takes. No name: the configured default, else the one model that has workers.
   */
  async resolve(name: string | undefined): Promise<{ target: Target; label: string }> {
    const config = this.opts.config();
    let label = name ?? config.defaultModel;
    if (!label) {
      const running = [
        ...new Set((await this.opts.keeper.registry.listWorkers()).filter((w) => w.url).map((w) => w.model_ref)),
      ];
      if (running.length !== 1)
        throw new RbeeError(
          "INVALID_REQUEST",
          running.length
            ? `the request names no model and ${running.length} models have workers (${running.join(", ")}); name one, or set the gateway's defaultModel`
            : "the request names no model and no worker runs; name one (an alias or hf:…, file:/abs/x.gguf), or set the gateway's defaultModel",
          { field: "model" },
        );
      label = running[0];
    }
    let ref = config.aliases[label] ?? label;
    let node: string | undefined;
    const forced = /^([^/:]+)\/(.+)$/.exec(ref);
    if (forced && (await this.opts.isNode(forced[1]))) {
      node = forced[1];
      ref = config.aliases[forced[2]] ?? forced[2];
    }
    return { target: { model: ref, node }, label };
  }

  /** Model names for /v1/models and /api/tags: aliases, then every model a worker runs or a catalog holds. */
  private async models(): Promise<{ name: string; size: number }[]> {
    const registry = this.opts.keeper.registry;
    const sizes = new Map<string, number>();
    for (const n of await registry.listNodes())
      for (const m of await registry.listModels(n.alias)) sizes.set(m.model_ref, m.size_bytes);
    for (const w of await registry.listWorkers()) if (!sizes.has(w.model_ref)) sizes.set(w.model_ref, 0);
    const aliases = this.opts.config().aliases;
    return [
      ...Object.keys(aliases).map((a) => ({ name: a, size: sizes.get(aliases[a]) ?? 0 })),
      ...[...sizes].map(([name, size]) => ({ name, size })),
    ];
  }
}
