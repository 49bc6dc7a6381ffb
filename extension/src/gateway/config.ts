// The gateway's settings: aliases ("fim" → "hf:…"), queue limits, the model for requests that name
// none, and how new workers are started. `rbee serve` reads them from ~/.rbee/gateway.json (or
// --config); the extension builds them from VS Code settings. Bad values fail with the field's name.

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { BACKENDS, RbeeError, type Backend } from "@rbee/hive-agent/protocol";
import { rbeeHome } from "../keeper/registry";

/** Neither Ollama's 11434 nor llama-server's 8080. */
export const DEFAULT_GATEWAY_PORT = 7437;
export const DEFAULT_GATEWAY_HOST = "127.0.0.1";

export interface GatewayConfig {
  /** Short names for model refs, e.g. { "fim": "hf:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF/…q8_0.gguf" }. */
  aliases: Record<string, string>;
  /** The model of requests that name none (llama.cpp's /infill and /completion send no model). */
  defaultModel?: string;
  queue: {
    /** Requests that may wait per model; one more is answered 429. */
    size: number;
    /** How long a request may wait for a slot before it is answered 503. */
    waitMs: number;
  };
  /** Options of workers the gateway starts (the keeper's defaults where left out). */
  spawn: { backend?: Backend; threads?: number; slots?: number; contextSize?: number; keepAliveS?: number };
  /** Nodes the gateway may start workers on; default: localhost and every node the registry saw online. */
  nodes?: string[];
  /** Tokens generated when a request does not say (OpenAI chat, Ollama's num_predict -1). */
  defaultMaxTokens: number;
}

export const DEFAULT_GATEWAY_CONFIG: GatewayConfig = {
  aliases: {},
  queue: { size: 64, waitMs: 30_000 },
  spawn: {},
  defaultMaxTokens: 1024,
};

export function defaultGatewayConfigPath(home = rbeeHome()): string {
  return path.join(home, "gateway.json");
}

function bad(field: string, want: string): never {
  throw new RbeeError("INVALID_REQUEST", `gateway setting "${field}" must be ${want}`, { field });
}

function int(v: unknown, field: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
    bad(field, `an integer between ${min} and ${max}`);
  return v;
}

/** Validates a settings object (the file's JSON, or the extension's settings) over the defaults. */
export function parseGatewayConfig(x: unknown): GatewayConfig {
  if (typeof x !== "object" || x === null || Array.isArray(x)) bad("(root)", "a JSON object");
  const o = x as Record<string, any>;
  const aliases: Record<string, string> = {};
  if (o.aliases !== undefined) {
    if (typeof o.aliases !== "object" || o.aliases === null || Array.isArray(o.aliases))
      bad("aliases", "an object of name → model ref");
    for (const [k, v] of Object.entries(o.aliases)) {
      if (typeof v !== "string" || !v.trim()) bad(`aliases.${k}`, "a model ref (hf:…, https://…, file:/abs/x.gguf)");
      aliases[k] = v.trim();
    }
  }
  if (o.defaultModel !== undefined && (typeof o.defaultModel !== "string" || !o.defaultModel.trim()))
    bad("defaultModel", "a model ref or alias");
  if (o.nodes !== undefined && (!Array.isArray(o.nodes) || !o.nodes.every((n: unknown) => typeof n === "string" && n)))
    bad("nodes", "an array of node names");
  const q = o.queue ?? {};
  const s = o.spawn ?? {};
  if (s.backend !== undefined && !BACKENDS.includes(s.backend)) bad("spawn.backend", `one of ${BACKENDS.join(", ")}`);
  return {
    aliases,
    defaultModel: o.defaultModel?.trim(),
    queue: {
      size: int(q.size, "queue.size", 0, 100_000) ?? DEFAULT_GATEWAY_CONFIG.queue.size,
      waitMs: int(q.waitMs, "queue.waitMs", 1, 24 * 3600_000) ?? DEFAULT_GATEWAY_CONFIG.queue.waitMs,
    },
    spawn: {
      backend: s.backend,
      threads: int(s.threads, "spawn.threads", 1, 1024),
      slots: int(s.slots, "spawn.slots", 1, 64),
      contextSize: int(s.contextSize, "spawn.contextSize", 16, 1 << 22),
      keepAliveS: int(s.keepAliveS, "spawn.keepAliveS", 0, 366 * 86400),
    },
    nodes: o.nodes,
    defaultMaxTokens: int(o.defaultMaxTokens, "defaultMaxTokens", 1, 32768) ?? DEFAULT_GATEWAY_CONFIG.defaultMaxTokens,
  };
}

/** The settings file, or the defaults when it does not exist. */
export function loadGatewayConfig(file = defaultGatewayConfigPath()): GatewayConfig {
  if (!existsSync(file)) return parseGatewayConfig({});
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new RbeeError("INVALID_REQUEST", `${file} is not valid JSON (${(e as Error).message}); fix or remove it`);
  }
  try {
    return parseGatewayConfig(json);
  } catch (e) {
    throw new RbeeError("INVALID_REQUEST", `${file}: ${(e as Error).message}`);
  }
}
