// One chat conversation without VS Code: the history (kept per workspace by the caller's store),
// one reply streaming at a time, Stop, and the context sent to the model. The webview view and the
// @rbee chat participant both sit on top of the same ChatGenerate function.

import type { ChatMessage, StopReason } from "@rbee/hive-agent/protocol";
import type { TurnStatus } from "./chat-protocol";

export interface ChatTurn {
  role: "user" | "assistant";
  content: string;
  status: TurnStatus;
  /** Why the reply failed, shown under it. */
  error?: string;
}

export interface HistoryStore {
  load(): ChatTurn[];
  save(turns: ChatTurn[]): void | PromiseLike<void>;
}

/** Streams a reply to `messages`; resolves when the stream ends (stop_reason "cancelled" after a Stop). */
export type ChatGenerate = (
  model: string,
  messages: ChatMessage[],
  onToken: (t: string) => void,
  signal: AbortSignal,
) => Promise<{ stopReason: StopReason }>;

export interface ChatLimits {
  /** Most turns kept in the stored history. */
  maxTurns: number;
  /** Most characters of past turns sent to the model with a new question. */
  maxContextChars: number;
}

export const DEFAULT_CHAT_LIMITS: ChatLimits = { maxTurns: 200, maxContextChars: 12_000 };

/**
 * The messages sent for the next reply: the system prompt, then as many of the latest finished
 * turns as fit in maxContextChars (whole turns only, oldest dropped first), ending with the question.
 */
export function contextMessages(
  history: readonly ChatTurn[],
  question: string,
  limits: ChatLimits = DEFAULT_CHAT_LIMITS,
  system?: string,
): ChatMessage[] {
  const picked: ChatMessage[] = [];
  let budget = limits.maxContextChars - question.length;
  for (let i = history.length - 1; i >= 0; i--) {
    const t = history[i];
    if (!t.content || t.status === "error" || t.status === "streaming") continue;
    if (t.content.length > budget) break;
    budget -= t.content.length;
    picked.unshift({ role: t.role, content: t.content });
  }
  // A conversation sent to a chat template starts with the user.
  while (picked.length && picked[0].role !== "user") picked.shift();
  return [
    ...(system ? [{ role: "system" as const, content: system }] : []),
    ...picked,
    { role: "user", content: question },
  ];
}

export type ChatChange =
  { kind: "turn"; index: number; turn: ChatTurn } | { kind: "reset" } | { kind: "busy"; busy: boolean };

export class ChatController {
  private turnList: ChatTurn[];
  private active: AbortController | undefined;
  private readonly listeners = new Set<(c: ChatChange) => void>();

  constructor(
    private readonly store: HistoryStore,
    private readonly generate: ChatGenerate,
    private readonly limits: ChatLimits = DEFAULT_CHAT_LIMITS,
    /** The system prompt, read at each question (a settings change applies to the next one). */
    private readonly system: () => string | undefined = () => undefined,
  ) {
    // A reply that was streaming when the window closed is kept as stopped.
    this.turnList = store.load().map((t) => (t.status === "streaming" ? { ...t, status: "stopped" } : t));
  }

  get turns(): readonly ChatTurn[] {
    return this.turnList;
  }

  get busy(): boolean {
    return this.active !== undefined;
  }

  onChange(listener: (c: ChatChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Asks `model`; resolves when the reply is complete, stopped or failed. One reply at a time. */
  async send(question: string, model: string): Promise<ChatTurn> {
    if (this.active) throw new Error("a reply is still streaming: stop it first");
    if (!model) throw new Error("no chat model chosen: pick one in the chat panel or set rbee.chat.model");
    const messages = contextMessages(this.turnList, question, this.limits, this.system() || undefined);
    const controller = new AbortController();
    this.active = controller;
    this.emit({ kind: "busy", busy: true });
    this.push({ role: "user", content: question, status: "done" });
    const reply: ChatTurn = { role: "assistant", content: "", status: "streaming" };
    const index = this.push(reply);
    try {
      const { stopReason } = await this.generate(
        model,
        messages,
        (t) => {
          reply.content += t;
          this.emit({ kind: "turn", index, turn: reply });
        },
        controller.signal,
      );
      reply.status = stopReason === "cancelled" || controller.signal.aborted ? "stopped" : "done";
    } catch (e) {
      reply.status = controller.signal.aborted ? "stopped" : "error";
      if (reply.status === "error") reply.error = (e as Error).message;
    } finally {
      this.active = undefined;
      this.emit({ kind: "turn", index, turn: reply });
      this.emit({ kind: "busy", busy: false });
      await this.persist();
    }
    return reply;
  }

  /** Stops the streaming reply (the worker's generation is cancelled); a no-op when idle. */
  stop(): void {
    this.active?.abort();
  }

  /** Empties the conversation; returns what it held, for restore() (Undo). */
  async clear(): Promise<ChatTurn[]> {
    this.stop();
    const before = this.turnList.map((t) => ({
      ...t,
      status: t.status === "streaming" ? ("stopped" as const) : t.status,
    }));
    this.turnList = [];
    this.emit({ kind: "reset" });
    await this.persist();
    return before;
  }

  /** Puts back a cleared conversation (Undo after Clear); refused while a reply streams. */
  async restore(turns: readonly ChatTurn[]): Promise<boolean> {
    if (this.active) return false;
    this.turnList = [...turns, ...this.turnList].slice(-this.limits.maxTurns);
    this.emit({ kind: "reset" });
    await this.persist();
    return true;
  }

  private push(turn: ChatTurn): number {
    this.turnList.push(turn);
    if (this.turnList.length > this.limits.maxTurns) {
      this.turnList.splice(0, this.turnList.length - this.limits.maxTurns);
      this.emit({ kind: "reset" });
    } else this.emit({ kind: "turn", index: this.turnList.length - 1, turn });
    return this.turnList.indexOf(turn);
  }

  private async persist() {
    await this.store.save(this.turnList.map((t) => ({ ...t })));
  }

  private emit(c: ChatChange) {
    for (const l of this.listeners) l(c);
  }
}
