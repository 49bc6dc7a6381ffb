// The extension's settings (package.json "contributes.configuration"), read in one place with their
// defaults and bounds, so a bad value in settings.json degrades to the default instead of an error.

import * as vscode from "vscode";
import { DEFAULT_ENGINE_SETTINGS, type EngineSettings } from "../ui-core/inline/completion-engine";
import type { MACHINE_SETTINGS } from "../ui-core/machine-settings";

export const SECTION = "rbee";

function get<T>(key: string, fallback: T, valid: (v: unknown) => boolean = () => true): T {
  const value = vscode.workspace.getConfiguration(SECTION).get<unknown>(key);
  return value !== undefined && value !== null && valid(value) ? (value as T) : fallback;
}

/** Read from the user's settings only: a workspace's .vscode/settings.json can never set these. */
function getUser<T>(key: (typeof MACHINE_SETTINGS)[number], fallback: T, valid: (v: unknown) => boolean): T {
  const i = vscode.workspace.getConfiguration(SECTION).inspect<unknown>(key);
  const value = i?.globalValue;
  return value !== undefined && value !== null && valid(value) ? (value as T) : fallback;
}

const isInt = (min: number, max: number) => (v: unknown) =>
  typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
const isNum = (min: number, max: number) => (v: unknown) => typeof v === "number" && v >= min && v <= max;
const isString = (v: unknown) => typeof v === "string";

function isLanguageOverrides(v: unknown): boolean {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  return Object.values(v).every(
    (o) =>
      typeof o === "object" &&
      o !== null &&
      (o.enabled === undefined || typeof o.enabled === "boolean") &&
      (o.maxTokens === undefined || isInt(1, 1024)(o.maxTokens)) &&
      (o.multiline === undefined || ["auto", "always", "never"].includes(o.multiline)),
  );
}

export function completionSettings(): EngineSettings {
  const d = DEFAULT_ENGINE_SETTINGS;
  return {
    enabled: get("completion.enabled", d.enabled, (v) => typeof v === "boolean"),
    debounceMs: get("completion.debounceMs", d.debounceMs, isInt(0, 5000)),
    maxTokens: get("completion.maxTokens", d.maxTokens, isInt(1, 1024)),
    temperature: get("completion.temperature", d.temperature, isNum(0, 2)),
    disabledLanguages: get(
      "completion.disabledLanguages",
      d.disabledLanguages as string[],
      (v) => Array.isArray(v) && v.every(isString),
    ),
    node: getUser("completion.node", d.node, isString).trim(),
    model: getUser("completion.model", d.model, isString).trim(),
    window: {
      maxPrefixChars: get("completion.maxPrefixChars", d.window.maxPrefixChars, isInt(100, 100_000)),
      maxSuffixChars: get("completion.maxSuffixChars", d.window.maxSuffixChars, isInt(0, 100_000)),
    },
    extraContext: {
      maxChunks: get("completion.extraContext.chunks", d.extraContext.maxChunks, isInt(0, 256)),
      chunkLines: get("completion.extraContext.chunkLines", d.extraContext.chunkLines, isInt(1, 4096)),
      scopeLines: get("completion.extraContext.scopeLines", d.extraContext.scopeLines, isInt(1, 100_000)),
    },
    idleMs: get("completion.extraContext.idleMs", d.idleMs, isInt(100, 60_000)),
    timeBudgetMs: get("completion.timeBudgetMs", d.timeBudgetMs, isInt(0, 60_000)),
    multiline: get("completion.multiline", d.multiline, (v) => v === "auto" || v === "always" || v === "never"),
    prefetch: get("completion.prefetch", d.prefetch, (v) => typeof v === "boolean"),
    languages: get("completion.languages", d.languages, isLanguageOverrides),
  };
}

export type InferOutput = "newEditor" | "atCursor";

export function inferSettings() {
  return {
    output: get<InferOutput>("infer.output", "newEditor", (v) => v === "newEditor" || v === "atCursor"),
    maxTokens: get("infer.maxTokens", 256, isInt(1, 32768)),
    temperature: get("infer.temperature", 0.8, isNum(0, 2)),
    node: getUser("infer.node", "", isString).trim(),
    model: getUser("infer.model", "", isString).trim(),
  };
}

export function chatSettings() {
  return {
    node: getUser("chat.node", "localhost", isString).trim() || "localhost",
    model: getUser("chat.model", "", isString).trim(),
    maxTokens: get("chat.maxTokens", 512, isInt(1, 32768)),
    temperature: get("chat.temperature", 0.7, isNum(0, 2)),
    systemPrompt: get(
      "chat.systemPrompt",
      "You are a helpful coding assistant. Answer concisely, with code in fenced blocks.",
      isString,
    ),
  };
}

export function nodesSettings() {
  return {
    refreshSeconds: get("nodes.refreshIntervalSeconds", 5, isInt(1, 3600)),
    sshConfigPath: getUser("nodes.sshConfigPath", "", isString).trim(),
    /** Idle seconds before a node stops a worker rbee started (0 = never). */
    idleTimeoutSeconds: get("nodes.idleTimeout", 300, isInt(0, 366 * 86400)),
    /** Stop the local hive (and its workers) when VS Code closes. */
    stopLocalHiveOnExit: get("nodes.stopLocalHiveOnExit", false, (v) => typeof v === "boolean"),
  };
}

export function gatewaySettings() {
  const aliases = get<Record<string, unknown>>(
    "gateway.aliases",
    {},
    (v) => typeof v === "object" && !Array.isArray(v),
  );
  return {
    enabled: get("gateway.enabled", false, (v) => typeof v === "boolean"),
    port: get("gateway.port", 7437, isInt(1, 65535)),
    /** Only string values: a bad entry is skipped, not fatal. */
    aliases: Object.fromEntries(Object.entries(aliases).filter(([, v]) => typeof v === "string" && v.trim())) as Record<
      string,
      string
    >,
    defaultModel: get("gateway.defaultModel", "", isString).trim(),
    queueSize: get("gateway.queueSize", 64, isInt(0, 100_000)),
    queueWaitMs: get("gateway.queueWaitMs", 30_000, isInt(1, 24 * 3600_000)),
  };
}

export async function setSetting(
  key: string,
  value: unknown,
  target = vscode.ConfigurationTarget.Global,
): Promise<void> {
  await vscode.workspace.getConfiguration(SECTION).update(key, value, target);
}
