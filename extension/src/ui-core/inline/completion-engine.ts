// Inline completions without VS Code: settings → skip rules → cache → one request per editor after
// a debounce → the worker's /v1/infill → cleaned suggestion → cache. The VS Code provider
// (inline-provider.ts) only converts documents and tokens to and from this; the benchmarks and the
// plain-node tests drive this engine directly against a real worker.
//
// What keeps typing cheap (docs/inline-completions.md):
//  - the window's front edge moves in steps (context-window.ts) and the extra context of other files
//    changes only on a pause, followed by a warm-up request, so the worker's KV cache holds all but
//    the new tokens;
//  - a generation whose output the user is typing along is kept running and its answer reused;
//  - after a suggestion is shown, the one that follows it is fetched ahead (prefetch), so accepting
//    shows the next one from the cache.

import type { InfillExtraChunk, StopReason } from "@rbee/hive-agent/protocol";
import { CompletionCache, type CacheContext } from "./completion-cache";
import {
  contextWindow,
  cursorAllowsCompletion,
  DEFAULT_WINDOW,
  indentOf,
  wantsMultiline,
  type WindowLimits,
} from "./context-window";
import { DEFAULT_EXTRA_CONTEXT, ExtraContext, type ExtraContextLimits } from "./extra-context";
import { debounce, RequestGate } from "./request-gate";
import { cleanSuggestion, trimToIndent } from "./suggestion-filter";

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
  /** Other files' chunks sent with each completion. */
  extraContext: ExtraContextLimits;
  /** Pause in typing (ms) after which queued extra context enters the ring and the cache is warmed. */
  idleMs: number;
  /** Generation time budget after the first token (the worker stops at the next line end). */
  timeBudgetMs: number;
  /** Several lines where a block starts ("auto"), always, or never. */
  multiline: MultilineMode;
  /** Fetch the next suggestion (assuming this one is accepted) while this one is shown. */
  prefetch: boolean;
  /** Per-language overrides (VS Code language ids). */
  languages: Readonly<Record<string, LanguageOverrides>>;
}

export type MultilineMode = "auto" | "always" | "never";
export interface LanguageOverrides {
  enabled?: boolean;
  maxTokens?: number;
  multiline?: MultilineMode;
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
  extraContext: DEFAULT_EXTRA_CONTEXT,
  idleMs: 1000,
  timeBudgetMs: 1000,
  multiline: "auto",
  prefetch: true,
  languages: {},
};

export interface CompletionTarget {
  node: string;
  model: string;
  /** The worker chosen for this file (affinity), when the backend picks one. */
  workerId?: string;
}

export type TargetResolution =
  { target: CompletionTarget } | { none: "no-worker" | "warming" | "error"; reason: string };

export interface InfillRequestBody {
  prefix: string;
  suffix: string;
  /** 0: a warm-up, the prompt is only evaluated into the worker's cache. */
  max_tokens: number;
  temperature: number;
  seed?: number;
  stop?: string[];
  input_extra?: InfillExtraChunk[];
  t_max_predict_ms?: number;
  n_indent?: number;
}

export interface InfillResult {
  text: string;
  stopReason: StopReason;
  /** The worker's own time for the request: prompt evaluation to last token (first_token_ms + decode_ms). */
  workerMs: number;
  /** Prompt tokens, and how many the worker had cached (when it reports them). */
  promptTokens?: number;
  cachedTokens?: number;
  /** Tokens generated (when the server reports them). */
  tokensOut?: number;
}

/** Where completions come from; keeper-backend.ts is the real one. */
export interface CompletionBackend {
  /**
   * The worker to ask now, or why there is none (the backend may be starting one meanwhile).
   * `affinity` names the file: the same file goes to the same worker, whose cache holds it.
   */
  resolveTarget(settings: EngineSettings, affinity?: string): Promise<TargetResolution>;
  /** Streams an infill; `onText` sees the text as it grows. */
  infill(
    target: CompletionTarget,
    body: InfillRequestBody,
    signal: AbortSignal,
    onText?: (textSoFar: string) => void,
  ): Promise<InfillResult>;
}

export type EngineState =
  | { kind: "off"; reason: string }
  | { kind: "idle"; lastLatencyMs?: number; target?: CompletionTarget; last?: LastCompletion }
  | { kind: "requesting"; target?: CompletionTarget }
  | { kind: "no-worker"; reason: string }
  | { kind: "warming"; reason: string }
  | { kind: "error"; message: string };

/** What the status bar shows about the last suggestion. */
export interface LastCompletion {
  source: OutcomeSource;
  latencyMs: number;
  /** Prompt tokens of the last worker request, and how many of them the worker evaluated. */
  contextTokens?: number;
  evaluatedTokens?: number;
}

export interface CompletionRequest {
  /** Identifies the editor: one request in flight per editor, and the affinity to a worker. */
  editor: string;
  /** The document's file name, for the extra context's headers. */
  filename?: string;
  /** Document offset where `before` starts (0 when it is the document's start). */
  beforeOffset?: number;
  /** Ask for another candidate: no cache, no reuse, a different seed. */
  alternative?: boolean;
  languageId: string;
  /** Text before the cursor (may be pre-cut by the caller to a little more than the window). */
  before: string;
  /** Text from the cursor on (likewise). */
  after: string;
  /** VS Code's cancellation, as a signal. */
  signal?: AbortSignal;
}

/** cache: from the cache (a prefetched suggestion included); reused: from a generation already running. */
export type OutcomeSource = "cache" | "reused" | "worker" | "skipped" | "cancelled" | "error";

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
  promptTokens?: number;
  cachedTokens?: number;
  tokensOut?: number;
}

/** A generation on the worker, owned by the engine rather than by the request that started it. */
interface Flight {
  ctx: CacheContext;
  text: string;
  controller: AbortController;
  /** A newer request is typing along this one's output and waits for it. */
  adopted: boolean;
  done: Promise<InfillResult | undefined>;
  target: CompletionTarget;
}

/** What the engine counts, for the benchmark and the tests. */
export interface EngineCounters {
  requests: number;
  cancelled: number;
  prefetches: number;
  warmups: number;
  reused: number;
  promptTokens: number;
  evaluatedTokens: number;
}

export class CompletionEngine {
  readonly cache: CompletionCache;
  readonly extra: ExtraContext;
  readonly counters: EngineCounters = {
    requests: 0,
    cancelled: 0,
    prefetches: 0,
    warmups: 0,
    reused: 0,
    promptTokens: 0,
    evaluatedTokens: 0,
  };
  private readonly gate = new RequestGate();
  private state: EngineState = { kind: "idle" };
  private lastLatencyMs: number | undefined;
  private last: LastCompletion | undefined;
  private readonly flights = new Map<string, Flight>();
  private readonly prefetches = new Map<string, Flight>();
  private idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** The last request's context, for the warm-up after a pause. */
  private lastContext: { editor: string; window: { prefix: string; suffix: string } } | undefined;
  private seed = 1;

  constructor(
    private readonly backend: CompletionBackend,
    private readonly settings: () => EngineSettings,
    private readonly onState: (s: EngineState) => void = () => {},
    cache = new CompletionCache(),
  ) {
    this.cache = cache;
    this.extra = new ExtraContext(() => this.settings().extraContext);
  }

  get currentState(): EngineState {
    return this.state;
  }

  /** Settings changed (model, node): cached answers of the old model no longer apply. */
  reset(): void {
    this.gate.abortAll();
    this.abortFlights();
    this.cache.clear();
    const s = this.settings();
    this.setState(s.enabled ? { kind: "idle" } : { kind: "off", reason: "inline completions are switched off" });
  }

  dispose(): void {
    this.gate.abortAll();
    this.abortFlights();
    clearTimeout(this.idleTimer);
  }

  private abortFlights() {
    for (const f of [...this.flights.values(), ...this.prefetches.values()]) f.controller.abort();
    this.flights.clear();
    this.prefetches.clear();
  }

  /** The text generated so far for `editor`'s running request, if one runs. */
  runningText(editor: string): string | undefined {
    return this.flights.get(editor)?.text;
  }

  /** Whether a prefetch is still running for `editor`. */
  prefetching(editor: string): Promise<unknown> | undefined {
    return this.prefetches.get(editor)?.done;
  }

  /** Settings for this language: the global ones with its overrides. */
  private settingsFor(languageId: string): EngineSettings & { multiline: MultilineMode } {
    const s = this.settings();
    const o = s.languages[languageId] ?? {};
    return {
      ...s,
      enabled: s.enabled && o.enabled !== false,
      maxTokens: o.maxTokens ?? s.maxTokens,
      multiline: o.multiline ?? s.multiline,
    };
  }

  async complete(req: CompletionRequest): Promise<CompletionOutcome> {
    const started = performance.now();
    const s = this.settingsFor(req.languageId);
    const done = (o: Omit<CompletionOutcome, "totalMs" | "debounceMs">, debounceMs = 0): CompletionOutcome => {
      const outcome = { ...o, totalMs: performance.now() - started, debounceMs };
      if (outcome.text) this.noteShown(outcome);
      return outcome;
    };

    if (!s.enabled) {
      if (!this.settings().enabled) this.setState({ kind: "off", reason: "inline completions are switched off" });
      return done({ source: "skipped", reason: "disabled" });
    }
    if (s.disabledLanguages.includes(req.languageId))
      return done({ source: "skipped", reason: `disabled for ${req.languageId}` });
    const lineAfter = req.after.split("\n", 1)[0];
    if (!cursorAllowsCompletion(lineAfter)) return done({ source: "skipped", reason: "the cursor is inside a word" });
    this.scheduleIdle(req.editor);

    const window = contextWindow(req.before, req.after, s.window, req.beforeOffset ?? 0);
    this.lastContext = { editor: req.editor, window };
    const ctx: CacheContext = { scope: req.languageId, prefix: window.prefix, suffix: window.suffix };
    if (!req.alternative) {
      const cached = this.cache.get(ctx);
      if (cached !== undefined) {
        if (this.state.kind !== "idle")
          this.setState({ kind: "idle", lastLatencyMs: this.lastLatencyMs, last: this.last });
        return done({ source: "cache", text: cached });
      }
    }

    // A generation running for this editor (or a prefetch) whose output the user is typing along,
    // or that was asked for this very context: wait for it instead of asking again.
    const running = req.alternative
      ? undefined
      : [this.flights.get(req.editor), this.prefetches.get(req.editor)].find(
          (f) => f && typedAlong(f, ctx) !== undefined,
        );
    if (running) {
      running.adopted = true;
      const ticket = this.gate.begin(req.editor, req.signal);
      try {
        const result = await untilAborted(running.done, ticket.signal);
        if (!result || result.stopReason === "cancelled" || ticket.signal.aborted)
          return done({ source: "cancelled", reason: "superseded" });
        this.counters.reused++;
        const rest = this.cache.get(ctx);
        return done(
          rest
            ? { source: "reused", text: rest, workerMs: result.workerMs }
            : { source: "skipped", reason: "the running suggestion ended where the user typed" },
        );
      } catch (e) {
        const message = (e as Error).message;
        this.setState({ kind: "error", message });
        return done({ source: "error", reason: message });
      } finally {
        ticket.release();
      }
    }
    // A real request beats whatever runs for this editor that the user has typed away from.
    this.prefetches.get(req.editor)?.controller.abort();
    this.flights.get(req.editor)?.controller.abort();

    const ticket = this.gate.begin(req.editor, req.signal);
    let debounced = 0;
    try {
      const t0 = performance.now();
      const waited = await debounce(s.debounceMs, ticket.signal);
      debounced = performance.now() - t0;
      if (!waited) return done({ source: "cancelled", reason: "superseded during the debounce" }, debounced);

      const resolution = await this.backend.resolveTarget(s, req.editor);
      if ("none" in resolution) {
        this.setState(
          resolution.none === "error"
            ? { kind: "error", message: resolution.reason }
            : { kind: resolution.none, reason: resolution.reason },
        );
        return done({ source: "skipped", reason: resolution.reason }, debounced);
      }
      if (ticket.signal.aborted) return done({ source: "cancelled", reason: "superseded" }, debounced);
      this.setState({ kind: "requesting", target: resolution.target });

      const lineBefore = window.prefix.slice(window.prefix.lastIndexOf("\n") + 1);
      const multiline = s.multiline === "always" || (s.multiline === "auto" && wantsMultiline(lineBefore, lineAfter));
      const body: InfillRequestBody = {
        prefix: window.prefix,
        suffix: window.suffix,
        max_tokens: s.maxTokens,
        temperature: req.alternative ? Math.max(0.8, s.temperature) : s.temperature,
        ...(req.alternative ? { seed: ++this.seed } : {}),
        ...(multiline ? { n_indent: indentOf(lineBefore) } : { stop: ["\n"] }),
        ...(s.timeBudgetMs > 0 ? { t_max_predict_ms: s.timeBudgetMs } : {}),
        ...this.extraBody(),
      };
      const flight = this.startFlight(this.flights, req.editor, resolution.target, ctx, body, lineBefore);
      // The flight ends with the ticket unless a newer request adopts it (typing along its output).
      const onAbort = () => {
        if (!flight.adopted) flight.controller.abort();
      };
      ticket.signal.addEventListener("abort", onAbort, { once: true });
      let result: InfillResult | undefined;
      try {
        result = await untilAborted(flight.done, ticket.signal);
      } finally {
        ticket.signal.removeEventListener("abort", onAbort);
      }
      if (!result || result.stopReason === "cancelled" || ticket.signal.aborted) {
        this.setState({ kind: "idle", lastLatencyMs: this.lastLatencyMs, target: resolution.target, last: this.last });
        return done({ source: "cancelled", reason: "superseded", workerMs: result?.workerMs }, debounced);
      }
      const text = this.cache.get(ctx);
      const counts = {
        workerMs: result.workerMs,
        promptTokens: result.promptTokens,
        cachedTokens: result.cachedTokens,
        tokensOut: result.tokensOut,
      };
      const outcome = done(
        text
          ? { source: "worker", text, ...counts }
          : { source: "skipped", reason: "the suggestion repeats the text after the cursor", ...counts },
        debounced,
      );
      this.lastLatencyMs = outcome.totalMs - outcome.debounceMs;
      this.setState({ kind: "idle", lastLatencyMs: this.lastLatencyMs, target: resolution.target, last: this.last });
      if (text && s.prefetch) this.prefetch(req.editor, resolution.target, ctx, text, body);
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

  /** The ring's chunks as the request field (none when extra context is off or empty). */
  private extraBody(): { input_extra?: InfillExtraChunk[] } {
    const chunks = this.extra.chunks;
    return chunks.length ? { input_extra: chunks.map((c) => ({ filename: c.filename, text: c.text })) } : {};
  }

  /**
   * Starts a generation that belongs to the engine: its text is cached under `ctx` when it ends,
   * whoever is still waiting for it.
   */
  private startFlight(
    registry: Map<string, Flight>,
    key: string,
    target: CompletionTarget,
    ctx: CacheContext,
    body: InfillRequestBody,
    lineBefore: string,
  ): Flight {
    const flight: Flight = {
      ctx,
      text: "",
      controller: new AbortController(),
      adopted: false,
      done: Promise.resolve(undefined),
      target,
    };
    this.counters.requests++;
    flight.done = this.backend
      .infill(target, body, flight.controller.signal, (t) => (flight.text = t))
      .then((result) => {
        this.countTokens(result);
        if (result.stopReason === "cancelled") {
          this.counters.cancelled++;
          return result;
        }
        let text = cleanSuggestion(result.text, ctx.suffix);
        if (text && body.n_indent !== undefined) text = trimToIndent(text, indentOf(lineBefore));
        if (text && result.stopReason === "time_limit" && text.includes("\n"))
          text = text.slice(0, text.lastIndexOf("\n"));
        if (text) this.cache.set(ctx, text);
        return result;
      })
      .catch((e: Error) => {
        if (flight.controller.signal.aborted) {
          this.counters.cancelled++;
          return undefined;
        }
        throw e;
      })
      .finally(() => {
        if (registry.get(key) === flight) registry.delete(key);
      });
    flight.done.catch(() => {}); // a failure reaches the waiter; an orphan's is of no interest
    registry.set(key, flight);
    return flight;
  }

  /** Counts a finished request's prompt (a cancelled one's partial evaluation is not known on every server). */
  private countTokens(r: InfillResult) {
    if (r.promptTokens === undefined || r.stopReason === "cancelled") return;
    this.counters.promptTokens += r.promptTokens;
    this.counters.evaluatedTokens += r.promptTokens - (r.cachedTokens ?? 0);
  }

  /** Fetches the suggestion that follows `text` once it is accepted, into the cache. */
  private prefetch(editor: string, target: CompletionTarget, ctx: CacheContext, text: string, body: InfillRequestBody) {
    const next: CacheContext = { scope: ctx.scope, prefix: ctx.prefix + text, suffix: ctx.suffix };
    if (this.cache.get(next) !== undefined) return;
    this.prefetches.get(editor)?.controller.abort();
    this.counters.prefetches++;
    const lineBefore = next.prefix.slice(next.prefix.lastIndexOf("\n") + 1);
    const s = this.settings();
    const multiline = s.multiline === "always" || (s.multiline === "auto" && wantsMultiline(lineBefore, ""));
    const { stop: _stop, n_indent: _indent, seed: _seed, ...rest } = body;
    this.startFlight(
      this.prefetches,
      editor,
      target,
      next,
      { ...rest, prefix: next.prefix, ...(multiline ? { n_indent: indentOf(lineBefore) } : { stop: ["\n"] }) },
      lineBefore,
    );
  }

  /** After a pause in typing: queued extra context enters the ring, and a warm-up fills the worker's cache. */
  private scheduleIdle(editor: string) {
    clearTimeout(this.idleTimer);
    const s = this.settings();
    if (s.extraContext.maxChunks <= 0) return;
    this.idleTimer = setTimeout(() => void this.onIdle(editor), s.idleMs);
    this.idleTimer.unref?.();
  }

  /** Runs the pause work now (the timer's job; tests and the bench call it directly). */
  async onIdle(editor = this.lastContext?.editor): Promise<boolean> {
    if (!this.extra.flush() || !this.lastContext || editor === undefined) return false;
    if (this.flights.has(editor)) return false; // the running request will be superseded anyway
    const s = this.settings();
    const resolution = await this.backend.resolveTarget(s, editor);
    if ("none" in resolution) return false;
    const w = this.lastContext.window;
    this.counters.warmups++;
    const controller = new AbortController();
    try {
      const r = await this.backend.infill(
        resolution.target,
        { prefix: w.prefix, suffix: w.suffix, max_tokens: 0, temperature: s.temperature, ...this.extraBody() },
        controller.signal,
      );
      this.countTokens(r);
      return true;
    } catch {
      return false;
    }
  }

  private noteShown(o: CompletionOutcome) {
    this.last = {
      source: o.source,
      latencyMs: o.totalMs,
      contextTokens: o.promptTokens,
      evaluatedTokens: o.promptTokens !== undefined ? o.promptTokens - (o.cachedTokens ?? 0) : undefined,
    };
    if (o.source === "cache" || o.source === "reused")
      this.setState({
        kind: "idle",
        lastLatencyMs: this.lastLatencyMs,
        target: this.state.kind === "idle" ? this.state.target : undefined,
        last: this.last,
      });
  }

  private setState(s: EngineState) {
    this.state = s;
    this.onState(s);
  }
}

/**
 * The characters typed since `flight` was asked ("" for the same context), when they are what it
 * has generated so far; else undefined.
 */
function typedAlong(flight: Flight, ctx: CacheContext): string | undefined {
  if (ctx.scope !== flight.ctx.scope || ctx.suffix.slice(0, 256) !== flight.ctx.suffix.slice(0, 256)) return undefined;
  const tail = flight.ctx.prefix.slice(-256);
  const at = ctx.prefix.lastIndexOf(tail);
  if (at < 0) return undefined;
  const typed = ctx.prefix.slice(at + tail.length);
  return flight.text.startsWith(typed) ? typed : undefined;
}

/** `p`'s value, or undefined as soon as `signal` aborts. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
