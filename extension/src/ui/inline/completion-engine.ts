// Inline completions without VS Code: settings → skip rules → cache → one request per editor after
// a debounce → the worker's /v1/infill → cleaned suggestion → cache. The VS Code provider
// (inline-provider.ts) only converts documents and tokens to and from this; the benchmarks and the
// plain-node tests drive this engine directly against a real worker.

import type { StopReason } from "../../../../hive-agent/src/protocol";
import { CompletionCache } from "./completion-cache";
import { contextWindow, cursorAllowsCompletion, DEFAULT_WINDOW, type WindowLimits } from "./context-window";
import { debounce, RequestGate } from "./request-gate";
import { cleanSuggestion } from "./suggestion-filter";

export interface EngineSettings {
  enabled: boolean;
  debounceMs: number;
  maxTokens: number;
  temperature: number;
  /** Language ids (VS Code's) where completions are off. */
  disabledLanguages: readonly string[];
  /** Node and model to ask; empty = the first ready worker. */
  node: string;
  model: string;
  window: WindowLimits;
}

export const DEFAULT_ENGINE_SETTINGS: EngineSettings = {
  enabled: true,
  debounceMs: 150,
  maxTokens: 48,
  temperature: 0.2,
  disabledLanguages: [],
  node: "",
  model: "",
  window: DEFAULT_WINDOW,
};

export interface CompletionTarget {
  node: string;
  model: string;
}

export type TargetResolution =
  | { target: CompletionTarget }
  | { none: "no-worker" | "warming" | "error"; reason: string };

export interface InfillRequestBody {
  prefix: string;
  suffix: string;
  max_tokens: number;
  temperature: number;
}

export interface InfillResult {
  text: string;
  stopReason: StopReason;
  /** The worker's own time for the request: prompt evaluation to last token (first_token_ms + decode_ms). */
  workerMs: number;
}

/** Where completions come from; keeper-backend.ts is the real one. */
export interface CompletionBackend {
  /** The worker to ask now, or why there is none (the backend may be starting one meanwhile). */
  resolveTarget(settings: EngineSettings): Promise<TargetResolution>;
  infill(target: CompletionTarget, body: InfillRequestBody, signal: AbortSignal): Promise<InfillResult>;
}

export type EngineState =
  | { kind: "off"; reason: string }
  | { kind: "idle"; lastLatencyMs?: number; target?: CompletionTarget }
  | { kind: "requesting"; target?: CompletionTarget }
  | { kind: "no-worker"; reason: string }
  | { kind: "warming"; reason: string }
  | { kind: "error"; message: string };

export interface CompletionRequest {
  /** Identifies the editor: one request in flight per editor. */
  editor: string;
  languageId: string;
  /** Text before the cursor (may be pre-cut by the caller to a little more than the window). */
  before: string;
  /** Text from the cursor on (likewise). */
  after: string;
  /** VS Code's cancellation, as a signal. */
  signal?: AbortSignal;
}

export type OutcomeSource = "cache" | "worker" | "skipped" | "cancelled" | "error";

export interface CompletionOutcome {
  /** The ghost text to show, when there is one. */
  text?: string;
  source: OutcomeSource;
  /** Why nothing is shown (skipped, error). */
  reason?: string;
  /** From the call to its answer. */
  totalMs: number;
  /** The part of totalMs spent in the debounce. */
  debounceMs: number;
  /** The worker's own generation time, for worker answers. */
  workerMs?: number;
}

export class CompletionEngine {
  readonly cache: CompletionCache;
  private readonly gate = new RequestGate();
  private state: EngineState = { kind: "idle" };
  private lastLatencyMs: number | undefined;

  constructor(
    private readonly backend: CompletionBackend,
    private readonly settings: () => EngineSettings,
    private readonly onState: (s: EngineState) => void = () => {},
    cache = new CompletionCache(),
  ) {
    this.cache = cache;
  }

  get currentState(): EngineState {
    return this.state;
  }

  /** Settings changed (model, node): cached answers of the old model no longer apply. */
  reset(): void {
    this.gate.abortAll();
    this.cache.clear();
    const s = this.settings();
    this.setState(s.enabled ? { kind: "idle" } : { kind: "off", reason: "inline completions are switched off" });
  }

  dispose(): void {
    this.gate.abortAll();
  }

  async complete(req: CompletionRequest): Promise<CompletionOutcome> {
    const started = performance.now();
    const s = this.settings();
    const done = (o: Omit<CompletionOutcome, "totalMs" | "debounceMs">, debounceMs = 0): CompletionOutcome => ({ ...o, totalMs: performance.now() - started, debounceMs });

    if (!s.enabled) {
      this.setState({ kind: "off", reason: "inline completions are switched off" });
      return done({ source: "skipped", reason: "disabled" });
    }
    if (s.disabledLanguages.includes(req.languageId)) return done({ source: "skipped", reason: `disabled for ${req.languageId}` });
    const lineAfter = req.after.split("\n", 1)[0];
    if (!cursorAllowsCompletion(lineAfter)) return done({ source: "skipped", reason: "the cursor is inside a word" });

    const window = contextWindow(req.before, req.after, s.window);
    const cacheContext = { scope: req.languageId, prefix: window.prefix, suffix: window.suffix };
    const cached = this.cache.get(cacheContext);
    if (cached !== undefined) {
      if (this.state.kind !== "idle") this.setState({ kind: "idle", lastLatencyMs: this.lastLatencyMs });
      return done({ source: "cache", text: cached });
    }

    const ticket = this.gate.begin(req.editor, req.signal);
    let debounced = 0;
    try {
      const t0 = performance.now();
      const waited = await debounce(s.debounceMs, ticket.signal);
      debounced = performance.now() - t0;
      if (!waited) return done({ source: "cancelled", reason: "superseded during the debounce" }, debounced);

      const resolution = await this.backend.resolveTarget(s);
      if ("none" in resolution) {
        this.setState(resolution.none === "error" ? { kind: "error", message: resolution.reason } : { kind: resolution.none, reason: resolution.reason });
        return done({ source: "skipped", reason: resolution.reason }, debounced);
      }
      if (ticket.signal.aborted) return done({ source: "cancelled", reason: "superseded" }, debounced);
      this.setState({ kind: "requesting", target: resolution.target });
      const result = await this.backend.infill(
        resolution.target,
        { prefix: window.prefix, suffix: window.suffix, max_tokens: s.maxTokens, temperature: s.temperature },
        ticket.signal,
      );
      if (result.stopReason === "cancelled" || ticket.signal.aborted) {
        this.setState({ kind: "idle", lastLatencyMs: this.lastLatencyMs, target: resolution.target });
        return done({ source: "cancelled", reason: "superseded", workerMs: result.workerMs }, debounced);
      }
      const text = cleanSuggestion(result.text, window.suffix);
      const outcome = done(text ? { source: "worker", text, workerMs: result.workerMs } : { source: "skipped", reason: "the suggestion repeats the text after the cursor", workerMs: result.workerMs }, debounced);
      if (text) this.cache.set(cacheContext, text);
      this.lastLatencyMs = outcome.totalMs - outcome.debounceMs;
      this.setState({ kind: "idle", lastLatencyMs: this.lastLatencyMs, target: resolution.target });
      return outcome;
    } catch (e) {
      if (ticket.signal.aborted) return done({ source: "cancelled", reason: "superseded" }, debounced);
      const message = (e as Error).message;
      this.setState({ kind: "error", message });
      return done({ source: "error", reason: message }, debounced);
    } finally {
      ticket.release();
    }
  }

  private setState(s: EngineState) {
    this.state = s;
    this.onState(s);
  }
}
