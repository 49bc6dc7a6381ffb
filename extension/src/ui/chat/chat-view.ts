// The Chat view (a webview view in the rbee sidebar): renders the conversation as markdown (rendered
// and escaped here, in the extension), streams replies, Stop, the model picker, Copy / Insert on code
// blocks. The conversation is kept per workspace (workspaceState).

import * as vscode from "vscode";
import type { KeeperEvent } from "../../keeper/keeper";
import type { RbeeLog } from "../log";
import { progressStep } from "../../ui-core/narration";
import { recentModels, rememberModel } from "../infer/pickers";
import { chatSettings } from "../settings";
import { ChatController, type ChatTurn, type HistoryStore } from "../../ui-core/chat/chat-controller";
import { chatPageHtml } from "../../ui-core/chat/chat-html";
import {
  parseWebviewMessage,
  type HostMessage,
  type RenderedTurn,
  type WebviewMessage,
} from "../../ui-core/chat/chat-protocol";
import type { ChatService } from "../../ui-core/chat/chat-service";
import { renderMarkdown, escapeHtml } from "../../ui-core/chat/markdown";

const HISTORY_KEY = "rbee.chat.history";
const MODEL_KEY = "rbee.chat.model";
/** Streaming replies are re-rendered at most this often (tokens arrive far faster than frames). */
const STREAM_RENDER_MS = 40;

export function renderTurn(t: ChatTurn): RenderedTurn {
  const body = t.role === "user" ? `<p>${escapeHtml(t.content).replace(/\n/g, "<br>")}</p>` : renderMarkdown(t.content);
  const error = t.error ? `<div class="error">${escapeHtml(t.error)}</div>` : "";
  return { role: t.role, html: body + error, status: t.status };
}

export class ChatView implements vscode.WebviewViewProvider, vscode.Disposable {
  static readonly viewType = "rbee.chat";
  readonly controller: ChatController;
  private view: vscode.WebviewView | undefined;
  private lastEditor: vscode.TextEditor | undefined;
  private pendingRender = new Map<number, ChatTurn>();
  private renderTimer: NodeJS.Timeout | undefined;
  private readonly disposables: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly service: ChatService,
    private readonly log: RbeeLog,
  ) {
    const store: HistoryStore = {
      load: () => {
        const v = context.workspaceState.get<unknown>(HISTORY_KEY);
        return Array.isArray(v)
          ? (v as ChatTurn[]).filter(
              (t) => t && (t.role === "user" || t.role === "assistant") && typeof t.content === "string",
            )
          : [];
      },
      save: (turns) => context.workspaceState.update(HISTORY_KEY, turns),
    };
    this.controller = new ChatController(store, service.generate, undefined, () => chatSettings().systemPrompt);
    this.lastEditor = vscode.window.activeTextEditor;
    this.disposables.push(
      vscode.window.onDidChangeActiveTextEditor((e) => {
        if (e) this.lastEditor = e;
      }),
    );
    this.controller.onChange((c) => {
      if (c.kind === "reset") void this.postInit();
      else if (c.kind === "busy") this.post({ type: "busy", busy: c.busy });
      else this.scheduleRender(c.index, c.turn);
    });
  }

  /** The model replies come from: the one picked in the view, else the setting, else the first offered. */
  async currentModel(): Promise<string> {
    const picked = this.context.workspaceState.get<string>(MODEL_KEY);
    if (picked) return picked;
    const configured = chatSettings().model;
    if (configured) return configured;
    return (await this.service.models(recentModels(this.context.globalState)))[0] ?? "";
  }

  resolveWebviewView(view: vscode.WebviewView): void {
    this.view = view;
    const media = vscode.Uri.joinPath(this.context.extensionUri, "extension", "media");
    view.webview.options = { enableScripts: true, localResourceRoots: [media] };
    view.webview.html = chatPageHtml({
      cspSource: view.webview.cspSource,
      scriptUri: view.webview.asWebviewUri(vscode.Uri.joinPath(media, "chat.js")).toString(),
      styleUri: view.webview.asWebviewUri(vscode.Uri.joinPath(media, "chat.css")).toString(),
    });
    view.webview.onDidReceiveMessage(
      (raw) => {
        const m = parseWebviewMessage(raw);
        if (m) void this.handle(m);
        else this.log.warn("[chat] ignored a malformed message from the chat view");
      },
      undefined,
      this.disposables,
    );
    view.onDidDispose(() => (this.view = undefined), undefined, this.disposables);
    view.onDidChangeVisibility(() => view.visible && void this.postInit(), undefined, this.disposables);
  }

  /** Sends a question as if typed in the view (the @rbee participant and tests use the view's own path). */
  async ask(text: string): Promise<ChatTurn> {
    const model = await this.currentModel();
    return this.controller.send(text, model);
  }

  /** Cold-start narration while a reply waits for its worker. */
  narrate(e: KeeperEvent) {
    const step = progressStep(e);
    if (step && this.controller.busy) this.post({ type: "notice", text: step.message });
  }

  private async handle(m: WebviewMessage) {
    switch (m.type) {
      case "ready":
        return this.postInit();
      case "send": {
        if (this.controller.busy)
          return this.post({ type: "notice", text: "A reply is still streaming: Stop it first." });
        const model = await this.currentModel();
        if (!model)
          return this.post({
            type: "notice",
            text: 'No chat model yet: pick one above, run "rbee: Try a Model", or set rbee.chat.model.',
          });
        this.post({ type: "accepted" });
        // The list shows the model the reply comes from while it streams (it may not be running yet).
        void this.postModels(model);
        const reply = await this.controller.send(m.text, model).catch((e: Error) => {
          this.post({ type: "notice", text: e.message });
          return undefined;
        });
        if (reply?.status === "error") this.log.error(`[chat] ${reply.error}`);
        // Remembered only once it answered: a model that fails to load must not become the default.
        else if (reply) await rememberModel(this.context.globalState, model);
        return this.postModels();
      }
      case "stop":
        return this.controller.stop();
      case "clear":
        return this.clear();
      case "model":
        await this.context.workspaceState.update(MODEL_KEY, m.model);
        return this.postModels();
      case "copy":
        await vscode.env.clipboard.writeText(m.code);
        return this.post({ type: "notice", text: "Copied to the clipboard." });
      case "insert": {
        const editor = vscode.window.activeTextEditor ?? this.lastEditor;
        if (!editor || editor.document.isClosed)
          return this.post({ type: "notice", text: "Open an editor to insert the code into." });
        await editor.edit((b) => b.replace(editor.selection, m.code));
        return;
      }
    }
  }

  private async postInit() {
    if (!this.view) return;
    const models = await this.service.models(recentModels(this.context.globalState));
    const model = await this.currentModel();
    this.post({
      type: "init",
      turns: this.controller.turns.map(renderTurn),
      models: withCurrent(models, model),
      model,
      busy: this.controller.busy,
    });
  }

  /** Sends the model list again (workers came or went, a reply started); `model` overrides the current one. */
  async postModels(model?: string) {
    if (!this.view) return;
    const models = await this.service.models(recentModels(this.context.globalState));
    const current = model ?? (await this.currentModel());
    this.post({ type: "models", models: withCurrent(models, current), model: current });
  }

  /** Clear, with Undo: the conversation is gone only once the notification is dismissed. */
  async clear(): Promise<boolean> {
    if (!this.controller.turns.length) return false;
    const before = await this.controller.clear();
    const turns = before.filter((t) => t.role === "user").length;
    void vscode.window
      .showInformationMessage(`rbee: the chat was cleared (${turns} question${turns === 1 ? "" : "s"}).`, "Undo")
      .then(async (choice) => {
        if (choice === "Undo" && (await this.controller.restore(before)))
          this.log.info("[chat] the cleared conversation was restored");
      });
    return true;
  }

  private scheduleRender(index: number, turn: ChatTurn) {
    this.pendingRender.set(index, turn);
    // The final state of a turn goes out at once; streaming updates are batched.
    if (turn.status !== "streaming") return this.flushRender();
    this.renderTimer ??= setTimeout(() => this.flushRender(), STREAM_RENDER_MS);
  }

  private flushRender() {
    clearTimeout(this.renderTimer);
    this.renderTimer = undefined;
    for (const [index, turn] of this.pendingRender) this.post({ type: "turn", index, turn: renderTurn(turn) });
    this.pendingRender.clear();
  }

  private post(m: HostMessage) {
    void this.view?.webview.postMessage(m);
  }

  dispose() {
    this.controller.stop();
    clearTimeout(this.renderTimer);
    for (const d of this.disposables) d.dispose();
  }
}

function withCurrent(models: string[], current: string): string[] {
  return current && !models.includes(current) ? [current, ...models] : models;
}
