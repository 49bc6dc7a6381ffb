// The llama.cpp side of a worker: loads one model, owns one context with N sequences (slots), and turns
// a prompt, an infill (prefix/suffix) or a chat into a stream of tokens. No HTTP here.

import type { Llama, LlamaContext, LlamaContextSequence, LlamaModel, Token, ChatWrapper } from "node-llama-cpp";
import type { Backend, ChatMessage, DecodeBatching, InfillExtraChunk, SamplingOptions, StopReason } from "../protocol";
import { RbeeError } from "../protocol";
import { StopMatcher } from "./stop-matcher";
import { LineLimits } from "./line-limits";
import { loadLlama, type CpuBinary } from "./native-build";
import { StepGate, type StepGateMember } from "./step-gate";
import { linesUpStreams, prioritizationFor } from "./decode-batching";
import { infillLimits, layoutInfill, type InfillVocab } from "./infill-prompt";

export interface EngineOptions {
  modelPath: string;
  backend: Backend;
  /** Total context per slot, in tokens. */
  contextSize: number;
  slots: number;
  threads: number;
  batchSize?: number;
  /** Folder of the node's native llama.cpp build (hive-agent build-native); loadLlama decides when it is used. */
  nativeDir?: string;
  /** The CPU binary the node's calibration chose (native-build.ts loadLlama), and where its variant copies are. */
  cpuBinary?: CpuBinary;
  variantsDir?: string;
  /** How concurrent streams share decodes (decode-batching.ts); default "together". */
  decodeBatching?: DecodeBatching;
  onLoadProgress?: (progress: number) => void;
}

/** What the engine reports for every generated token. */
export interface TokenEvent {
  /** Text that became final with this token (may be "" while a UTF-8 sequence or a stop prefix is pending). */
  text: string;
  index: number;
}

export interface GenerationResult {
  tokensOut: number;
  decodeMs: number;
  firstTokenMs: number;
  stopReason: StopReason;
  /** Prompt size, and how many of its tokens the slot's KV cache already held. */
  promptTokens: number;
  cachedTokens: number;
}

/** Generation limits beyond the sampling options (infill requests carry them). */
export interface GenerationOptions extends SamplingOptions {
  /** Stop once this long has passed since the first token at a line end (at twice it, anywhere). */
  t_max_predict_ms?: number;
  /** Stop at a generated line (after the first) indented by fewer than this many spaces/tabs. */
  n_indent?: number;
}

export type Prompt =
  | { kind: "text"; prompt: string }
  | { kind: "infill"; prefix: string; suffix: string; extra?: readonly InfillExtraChunk[] }
  | { kind: "chat"; messages: ChatMessage[] };

/** A prompt turned into tokens and checked against the context, ready for a slot. */
export interface PreparedPrompt {
  tokens: Token[];
  stopTokenSequences: Token[][];
  stopTexts: string[];
}

const BACKEND_TO_GPU = { cuda: "cuda", metal: "metal", vulkan: "vulkan", cpu: false } as const;

/** No tokenizer here averages more characters per token than this over a whole prompt. */
const MAX_CHARS_PER_TOKEN = 32;

export class Engine {
  private freeSlots: LlamaContextSequence[] = [];
  /** The CPU binary this worker loaded (CPU workers only), reported to the hive. */
  cpuBinary?: CpuBinary;
  /** How concurrent streams share decodes, reported to the hive. */
  decodeBatching: DecodeBatching = "together";
  /**
   * Each slot's llama.cpp sequence id: node-llama-cpp hands out ids 0, 1, 2… in getSequence() order
   * and does not expose them, so the creation order stands for it.
   */
  private readonly slotIds = new Map<LlamaContextSequence, number>();
  private chatWrapper?: ChatWrapper;
  private infillVocab?: InfillVocab | null;
  /** Busy slots and the signal of the request on each; a cancelled one is about to come free. */
  private readonly busy = new Map<LlamaContextSequence, AbortSignal | undefined>();
  private readonly releaseWaiters = new Set<() => void>();
  /** Keeps concurrent generations in step so each decode batch carries all of them (step-gate.ts). */
  private readonly stepGate = new StepGate();

  private constructor(
    private readonly nlc: typeof import("node-llama-cpp"),
    readonly llama: Llama,
    readonly model: LlamaModel,
    readonly context: LlamaContext,
    readonly slotsTotal: number,
    /** Which llama.cpp binary runs ("native", "prebuilt:zen4", "prebuilt"), and why when it is not the one asked for. */
    readonly build: string,
    /** The GPUs this process's llama.cpp sees (only its own when the hive pinned it); empty on the CPU. */
    readonly gpuDevices: string[],
    /** VRAM the load took, where the driver tells (undefined otherwise). */
    readonly vramUsedBytes: number | undefined,
    /** When decodes are handed to llama.cpp (the server writes token frames right after: token-frames.ts). */
    readonly dispatch: DecodeDispatch = new DecodeDispatch(),
  ) {
    for (let i = 0; i < slotsTotal; i++) {
      const slot = context.getSequence();
      this.slotIds.set(slot, i);
      this.freeSlots.push(slot);
    }
  }

  static async load(opts: EngineOptions): Promise<Engine> {
    const nlc = await import("node-llama-cpp");
    let llama: Llama;
    let llamaBuild = "prebuilt";
    let cpuBinary: CpuBinary | undefined;
    try {
      if (opts.backend === "cpu") {
        // The binary the node's calibration measured fastest (hive/calibrator.ts), else the native
        // build where it pays off, else the prebuilt: see native-build.ts and docs/cpu-calibration.md.
        const loaded = await loadLlama({
          dir: opts.nativeDir,
          threads: opts.threads,
          binary: opts.cpuBinary,
          variantsDir: opts.variantsDir,
          llamaOptions: { logLevel: nlc.LlamaLogLevel.error },
        });
        llama = loaded.llama;
        cpuBinary = loaded.binary;
        llamaBuild = `${loaded.binary}${loaded.fallbackReason ? ` (${loaded.fallbackReason})` : ""}`;
      } else {
        llama = await nlc.getLlama({
          gpu: BACKEND_TO_GPU[opts.backend],
          build: "never",
          logLevel: nlc.LlamaLogLevel.error,
        });
      }
    } catch (e) {
      throw new RbeeError(
        "BACKEND_UNAVAILABLE",
        `backend ${opts.backend} cannot be used on this node: ${(e as Error).message}`,
      );
    }
    const gpu = opts.backend !== "cpu";
    const vramBefore = gpu ? (await llama.getVramState()).used : 0;
    const model = await llama.loadModel({
      modelPath: opts.modelPath,
      onLoadProgress: opts.onLoadProgress,
      gpuLayers: opts.backend === "cpu" ? 0 : "max",
    });
    const dispatch = new DecodeDispatch();
    const context = await model.createContext({
      contextSize: opts.contextSize, // per sequence: node-llama-cpp gives each slot its own cells
      // node-llama-cpp's own schedule (the next check phase), with a hook a turn after it: see DecodeDispatch.
      // Streams' tokens in one decode, or one at a time where the node measured that batching loses.
      batching: {
        dispatchSchedule: dispatch.schedule,
        itemPrioritizationStrategy: prioritizationFor(opts.decodeBatching),
      },
      sequences: opts.slots,
      threads: { ideal: opts.threads, min: 1 },
      batchSize: opts.batchSize,
      // On a CPU, flash attention evaluates a prompt deep in the context 1.5–2× faster (512 tokens
      // after 2048: 0.65 s vs 1.3 s, small model, 1 thread), which is an editor's every keystroke;
      // llama-server has it on by default ("auto").
      ...(opts.backend === "cpu" ? { flashAttention: true } : {}),
      // Infill and chat prompts are rebuilt per request; a slot keeps its KV cache so a request that
      // extends the previous one (typing in the editor) only evaluates the new tokens.
    });
    const gpuDevices = gpu ? await llama.getGpuDeviceNames() : [];
    const vramUsed = gpu ? (await llama.getVramState()).used - vramBefore : 0;
    const engine = new Engine(
      nlc,
      llama,
      model,
      context,
      opts.slots,
      llamaBuild,
      gpuDevices,
      vramUsed > 0 ? vramUsed : undefined,
      dispatch,
    );
    engine.cpuBinary = cpuBinary;
    engine.decodeBatching = opts.decodeBatching ?? "together";
    return engine;
  }

  /**
   * Whether a decode is on its way: one is scheduled for dispatch, or generations are held at the step
   * gate until the last of them has its token (then they all queue theirs). Token frames wait for it.
   */
  get decodeComing(): boolean {
    return this.dispatch.scheduled || this.stepGate.holding;
  }

  get slotsBusy(): number {
    return this.slotsTotal - this.freeSlots.length;
  }

  get infillSupported(): boolean {
    const t = this.model.tokens.infill;
    return t.prefix != null && t.suffix != null;
  }

  /**
   * Takes the free slot whose KV cache shares the longest prefix with the prompt (so a request that
   * extends an earlier one, as typing in the editor does, evaluates only the new tokens), the lowest
   * sequence id among equals (busy slots then stay a run of consecutive ids, which llama.cpp decodes as
   * one micro-batch: step-gate.ts). Fails at once with ALL_SLOTS_BUSY; the caller retries with backoff.
   */
  acquireSlot(prompt: readonly Token[] = [], signal?: AbortSignal): LlamaContextSequence {
    if (this.freeSlots.length === 0)
      throw new RbeeError("ALL_SLOTS_BUSY", `all ${this.slotsTotal} slots of this worker are busy; retry shortly`);
    let best = 0;
    let bestShared = -1;
    for (let i = 0; i < this.freeSlots.length; i++) {
      const slot = this.freeSlots[i];
      const shared = sharedPrefixLength(slot.contextTokens, prompt);
      if (
        shared > bestShared ||
        (shared === bestShared && this.slotIds.get(slot)! < this.slotIds.get(this.freeSlots[best])!)
      ) {
        best = i;
        bestShared = shared;
      }
    }
    const slot = this.freeSlots.splice(best, 1)[0];
    this.busy.set(slot, signal);
    return slot;
  }

  /**
   * acquireSlot, except that a slot whose request was just cancelled is waited for (up to
   * `maxWaitMs`) when its cache fits the prompt better than every free slot, or when no slot is
   * free. That is the editor's case: each keystroke cancels the request before it and sends one
   * that extends it; taking another slot would evaluate the whole prompt again.
   */
  async acquireSlotWarm(
    prompt: readonly Token[],
    signal?: AbortSignal,
    maxWaitMs = 2000,
  ): Promise<LlamaContextSequence> {
    const deadline = performance.now() + maxWaitMs;
    for (;;) {
      let bestFree = -1;
      for (const slot of this.freeSlots) bestFree = Math.max(bestFree, sharedPrefixLength(slot.contextTokens, prompt));
      let bestCancelling = -1;
      for (const [slot, s] of this.busy)
        if (s?.aborted) bestCancelling = Math.max(bestCancelling, sharedPrefixLength(slot.contextTokens, prompt));
      const worthWaiting = bestCancelling > bestFree + 16 || (bestFree < 0 && bestCancelling >= 0);
      const left = deadline - performance.now();
      if (!worthWaiting || left <= 0 || signal?.aborted) return this.acquireSlot(prompt, signal);
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.releaseWaiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, left);
        this.releaseWaiters.add(done);
      });
    }
  }

  releaseSlot(slot: LlamaContextSequence) {
    this.busy.delete(slot);
    this.freeSlots.push(slot);
    for (const w of [...this.releaseWaiters]) w();
  }

  /** Tokenizes a prompt and checks it fits; throws INVALID_REQUEST / INFILL_UNSUPPORTED before any slot is taken. */
  prepare(p: Prompt, maxTokens: number): PreparedPrompt {
    const contextPerSlot = this.context.contextSize;
    // Text this long cannot fit whatever the vocabulary: refuse it before tokenizing, which for a
    // multi-megabyte request would hold the worker's only thread for seconds.
    // (An infill's prefix and suffix are cut to fit instead.)
    const chars =
      p.kind === "text"
        ? p.prompt.length
        : p.kind === "chat"
          ? p.messages.reduce((n, m) => n + m.content.length, 0)
          : 0;
    if (chars > contextPerSlot * MAX_CHARS_PER_TOKEN)
      throw new RbeeError(
        "PAYLOAD_TOO_LARGE",
        `the prompt has ${chars} characters, more than fit in this worker's context of ${contextPerSlot} tokens per slot; shorten it or spawn the worker with a larger context_size`,
        { field: "prompt" },
      );
    const prepared = this.tokenizePrompt(p, maxTokens);
    if (prepared.tokens.length + maxTokens > contextPerSlot)
      throw new RbeeError(
        "INVALID_REQUEST",
        `prompt (${prepared.tokens.length} tokens) + max_tokens (${maxTokens}) exceed this worker's context of ${contextPerSlot} tokens per slot; shorten the prompt or spawn the worker with a larger context_size`,
        { field: "max_tokens", prompt_tokens: prepared.tokens.length, context_size: contextPerSlot },
      );
    return prepared;
  }

  private tokenizePrompt(p: Prompt, maxTokens: number): PreparedPrompt {
    const model = this.model;
    const bos = model.tokens.shouldPrependBosToken && model.tokens.bos != null ? [model.tokens.bos] : [];
    switch (p.kind) {
      case "text":
        return { tokens: [...bos, ...model.tokenize(p.prompt)], stopTokenSequences: [], stopTexts: [] };
      case "infill": {
        const vocab = this.resolveInfillVocab(bos);
        if (!vocab)
          throw new RbeeError(
            "INFILL_UNSUPPORTED",
            "this model has no fill-in-the-middle tokens; use a code model such as a Qwen2.5-Coder or DeepSeek-Coder GGUF",
          );
        // Extra context first, capped suffix, prefix cut in steps: see infill-prompt.ts.
        const layout = layoutInfill(vocab, p, infillLimits(this.context.contextSize, maxTokens));
        return { tokens: layout.tokens, stopTokenSequences: [], stopTexts: [] };
      }
      case "chat": {
        this.chatWrapper ??= this.resolveChatWrapper();
        const chatHistory = p.messages.map((m) =>
          m.role === "assistant"
            ? { type: "model" as const, response: [m.content] }
            : { type: m.role, text: m.content },
        );
        chatHistory.push({ type: "model", response: [] });
        const state = this.chatWrapper.generateContextState({ chatHistory });
        // A trigger made of plain text (ChatML's "<|im_end|>" in a vocabulary without that token) is
        // matched on text, so none of it leaks into the reply; one with special tokens, token by token.
        const textTriggers = state.stopGenerationTriggers.filter((t) => t.values.every((v) => typeof v === "string"));
        const tokenTriggers = state.stopGenerationTriggers.filter((t) => !textTriggers.includes(t));
        return {
          tokens: state.contextText.tokenize(model.tokenizer),
          stopTexts: textTriggers.map((t) => t.values.join("")).filter((t) => t.length > 0),
          stopTokenSequences: tokenTriggers
            .map((t) => t.tokenize(model.tokenizer, "trimLeadingSpace"))
            .filter((t) => t.length > 0),
        };
      }
    }
  }

  private resolveInfillVocab(bos: Token[]): InfillVocab | null {
    if (this.infillVocab !== undefined) return this.infillVocab;
    const model = this.model;
    const { prefix, suffix, middle } = model.tokens.infill;
    // A repo-level marker counts only when the vocabulary has it as one (special) token.
    const special = (text: string): Token | null => {
      const t = model.tokenize(text, true);
      return t.length === 1 && model.tokenize(text, false).length > 1 ? t[0] : null;
    };
    this.infillVocab =
      prefix == null || suffix == null
        ? null
        : {
            tokenize: (text) => model.tokenize(text),
            bos,
            pre: prefix,
            suf: suffix,
            mid: middle,
            repoName: special("<|repo_name|>"),
            fileSep: special("<|file_sep|>"),
          };
    return this.infillVocab;
  }

  private resolveChatWrapper(): ChatWrapper {
    // Resolved on first chat: it reads the model's Jinja template (tokenizer.chat_template).
    return this.nlc.resolveChatWrapper(this.model);
  }

  /**
   * Generates on one slot until max_tokens, an end-of-generation token, a stop sequence or the signal.
   * `onToken` is called once per generated token, so a stream carries exactly tokens_out token events.
   */
  async generate(
    slot: LlamaContextSequence,
    prepared: PreparedPrompt,
    opts: GenerationOptions,
    signal: AbortSignal,
    onToken: (e: TokenEvent) => void,
  ): Promise<GenerationResult> {
    const { tokens: input, stopTokenSequences, stopTexts } = prepared;

    const started = performance.now();
    // Reuse the slot's KV cache for the common prefix, leaving at least the last prompt token to
    // evaluate: its logits give the first generated token.
    await slot.adaptStateToTokens(input.slice(0, -1), false);
    const cachedTokens = slot.nextTokenIndex;
    const counts = { promptTokens: input.length, cachedTokens };
    const cancelled: GenerationResult = {
      tokensOut: 0,
      decodeMs: 0,
      firstTokenMs: 0,
      stopReason: "cancelled",
      ...counts,
    };
    const pending = input.slice(slot.nextTokenIndex);
    if (opts.max_tokens === 0) {
      // A warm-up: the whole prompt into the cache, nothing generated.
      while (pending.length) {
        if (signal.aborted) return cancelled;
        await slot.evaluateWithoutGeneratingNewTokens(pending.splice(0, this.context.batchSize));
      }
      return { tokensOut: 0, decodeMs: 0, firstTokenMs: 0, stopReason: "max_tokens", ...counts };
    }
    // A long prompt goes in one batch at a time, so a cancel (the editor's next keystroke) takes
    // effect within one batch instead of after the whole prompt; what was evaluated stays cached
    // for the request that follows.
    const batch = this.context.batchSize;
    while (pending.length > batch) {
      if (signal.aborted) return cancelled;
      await slot.evaluateWithoutGeneratingNewTokens(pending.splice(0, batch));
    }
    const toEvaluate = pending;
    if (signal.aborted) return cancelled;

    const stops = new StopMatcher([...(opts.stop ?? []), ...stopTexts]);
    const generated: Token[] = [];
    let pendingTokens: Token[] = []; // tokens whose text is not complete UTF-8 yet
    let stopReason: StopReason = "max_tokens";
    let firstTokenAt = 0;
    let inStep: StepGateMember | undefined;
    const lines = new LineLimits(opts);

    const iterator = slot.evaluate(toEvaluate, {
      temperature: opts.temperature ?? 0.8,
      topK: opts.top_k ?? 40,
      topP: opts.top_p ?? 0.95,
      seed: opts.seed,
      yieldEogToken: true,
    });
    try {
      for await (const token of iterator) {
        if (signal.aborted) {
          stopReason = "cancelled";
          break;
        }
        if (!firstTokenAt) {
          firstTokenAt = performance.now();
          // Lined up with the other streams so their tokens share each decode (not when one at a time).
          if (linesUpStreams(this.decodeBatching)) inStep = this.stepGate.join(this.slotIds.get(slot)!);
        }
        if (this.model.isEogToken(token)) {
          stopReason = "eos";
          break;
        }
        generated.push(token);
        const index = generated.length - 1;
        if (endsWithSequence(generated, stopTokenSequences)) {
          stopReason = "stop_sequence";
          onToken({ text: stops.flush(), index });
          break;
        }
        pendingTokens.push(token);
        // Detokenize with a few preceding tokens as context (leading-space rules of some tokenizers).
        const pendingStart = generated.length - pendingTokens.length;
        const piece = this.model.detokenize(
          pendingTokens,
          false,
          generated.slice(Math.max(0, pendingStart - 8), pendingStart),
        );
        let text = "";
        if (!piece.endsWith("\uFFFD")) {
          pendingTokens = [];
          const r = stops.push(piece);
          text = r.text;
          if (r.stopped) {
            stopReason = "stop_sequence";
            onToken({ text, index });
            break;
          }
        }
        const isLast = generated.length >= opts.max_tokens;
        if (isLast) text += stops.flush();
        const cut = lines.push(text);
        if (cut >= 0) {
          stopReason = "indent";
          onToken({ text: text.slice(0, cut), index });
          break;
        }
        onToken({ text, index });
        if (isLast) break;
        if (lines.overBudget(firstTokenAt)) {
          stopReason = "time_limit";
          break;
        }
        // Queue the next token together with the other slots' (one batch), not one step behind them.
        const others = inStep?.arrive();
        if (others) await others;
      }
    } finally {
      inStep?.leave();
      await iterator.return?.();
    }
    const end = performance.now();
    return {
      tokensOut: generated.length,
      decodeMs: firstTokenAt ? end - firstTokenAt : 0,
      firstTokenMs: firstTokenAt ? firstTokenAt - started : 0,
      stopReason,
      ...counts,
    };
  }

  async dispose() {
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }
}

/**
 * node-llama-cpp's decode dispatch, made observable: it schedules a dispatch as its default
 * ("nextCycle": setImmediate) does, and calls `afterDispatch` on the next event-loop turn after the
 * dispatch has run. The decode itself is handed to llama.cpp's thread a few microtasks after
 * dispatch() returns (node-llama-cpp awaits its thread allocation first), so a hook run directly
 * after dispatch() — or its writes, which Node flushes on the next tick — would still come first;
 * one turn later the decode is running, and work done in the hook (writing token frames) no longer
 * delays it.
 */
export class DecodeDispatch {
  /** Called after every dispatch (at most one listener: the worker's server). */
  afterDispatch?: () => void;
  private queued = 0;

  readonly schedule = (dispatch: () => void): void => {
    this.queued++;
    setImmediate(() => {
      this.queued--;
      dispatch();
      if (this.afterDispatch) setImmediate(this.afterDispatch);
    });
  };

  /** Whether a dispatch is waiting for the event loop's check phase. */
  get scheduled(): boolean {
    return this.queued > 0;
  }
}

function sharedPrefixLength(a: readonly Token[], b: readonly Token[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function endsWithSequence(tokens: Token[], sequences: Token[][]): boolean {
  outer: for (const seq of sequences) {
    if (seq.length > tokens.length) continue;
    for (let i = 0; i < seq.length; i++) if (tokens[tokens.length - seq.length + i] !== seq[i]) continue outer;
    return true;
  }
  return false;
}
