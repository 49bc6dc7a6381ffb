// rbee's VS Code entry point: creates the surfaces and wires them to one lazily built keeper stack.
// Kept thin and cheap: nothing here opens the registry, loads sql.js or starts a process — the first
// command, view refresh or completion does (ui/services.ts).

import * as vscode from "vscode";
import { ChatService } from "./ui-core/chat/chat-service";
import { registerChatParticipant } from "./ui/chat/chat-participant";
import { ChatView } from "./ui/chat/chat-view";
import { FirstRunCommands } from "./ui/infer/first-run";
import { InferCommand } from "./ui/infer/infer-command";
import { recentModels } from "./ui/infer/pickers";
import { GatewayService } from "./ui/gateway-service";
import { CompletionEngine } from "./ui-core/inline/completion-engine";
import { RbeeInlineProvider } from "./ui/inline/inline-provider";
import { KeeperCompletionBackend } from "./ui-core/inline/keeper-backend";
import { RbeeLog } from "./ui/log";
import { NodeCommands } from "./ui/nodes/node-commands";
import { NodesTree } from "./ui/nodes/nodes-tree";
import { NodeTokenStore } from "./ui/secrets";
import { RbeeServices } from "./ui-core/services";
import { chatSettings, completionSettings, nodesSettings, setSetting } from "./ui/settings";
import { sshPrompts } from "./ui/ssh-prompts";
import { CompletionStatusBar } from "./ui/status-bar";

/** What activate() returns: for other extensions and for the tests inside VS Code. */
export interface RbeeApi {
  activationMs: number;
  services: RbeeServices;
  tokens: NodeTokenStore;
  nodes: NodesTree;
  inline: RbeeInlineProvider;
  engine: CompletionEngine;
  chat: ChatView;
  /** The models offered as "recent" (only ones that loaded). */
  recentModels(): string[];
  gateway: GatewayService;
}

let services: RbeeServices | undefined;

export function activate(context: vscode.ExtensionContext): RbeeApi {
  const started = performance.now();
  const log = new RbeeLog();
  const tokens = new NodeTokenStore(context.secrets);
  services = new RbeeServices({
    storageDir: context.globalStorageUri.fsPath,
    bundleDir: __dirname,
    extensionDir: context.extensionPath,
    log,
    ssh: { configPath: () => nodesSettings().sshConfigPath || undefined, prompts: sshPrompts, tokens },
    idleTimeoutSeconds: () => nodesSettings().idleTimeoutSeconds,
  });
  const s = services;

  // Remote Nodes.
  const nodes = new NodesTree(s, log);
  const treeView = vscode.window.createTreeView("rbee.nodes", { treeDataProvider: nodes });
  context.subscriptions.push(
    log,
    nodes,
    treeView,
    nodes.attach(treeView),
    new NodeCommands(s, nodes, log, context.globalState).register(),
  );

  // Inline completions and their status bar item.
  const status = new CompletionStatusBar();
  let inline: RbeeInlineProvider | undefined;
  const backend = new KeeperCompletionBackend(
    () => s.keeper(),
    (e) => log.event(e, "[completion]"),
    (target) => {
      log.info(`[completion] the worker for ${target.model} on ${target.node} is ready`);
      // Ask again where the cursor waits; if it moved on, at least the status bar stops spinning.
      void inline?.workerReady().then((asked) => {
        if (!asked && engine.currentState.kind === "warming") status.update({ kind: "idle", target });
      });
    },
  );
  const engine = new CompletionEngine(backend, completionSettings, (state) => status.update(state));
  inline = new RbeeInlineProvider(engine, completionSettings);
  engine.reset();
  context.subscriptions.push(
    status,
    { dispose: () => engine.dispose() },
    vscode.languages.registerInlineCompletionItemProvider({ pattern: "**" }, inline),
    inline.watchDocuments(),
    vscode.commands.registerCommand("rbee.inline.nextCandidate", () => inline.nextCandidate()),
    vscode.commands.registerCommand("rbee.inline.copy", () => inline.copy()),
    vscode.commands.registerCommand("rbee.toggleInline", async () => {
      const enabled = !completionSettings().enabled;
      await setSetting("completion.enabled", enabled);
      return enabled;
    }),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration("rbee.completion")) engine.reset();
    }),
  );

  // "rbee: Infer", and the first-run buttons of the welcome view.
  const infer = new InferCommand(s, log, context.globalState, nodes);
  const firstRun = new FirstRunCommands(s, infer, context.globalState, nodes);
  context.subscriptions.push(
    vscode.commands.registerCommand("rbee.infer", (args?: Parameters<InferCommand["run"]>[0]) => infer.run(args)),
    vscode.commands.registerCommand("rbee.tryModel", (args?: { node?: string; model?: string; prompt?: string }) =>
      firstRun.tryModel(args),
    ),
    vscode.commands.registerCommand("rbee.setCompletionModel", (args?: { node?: string; model?: string }) =>
      firstRun.setCompletionModel(args),
    ),
  );

  // Chat: the webview view and, where VS Code has the API, the @rbee participant.
  let chat: ChatView | undefined;
  const chatService = new ChatService(s, chatSettings, (e) => {
    log.event(e, "[chat]");
    chat?.narrate(e);
  });
  chat = new ChatView(context, chatService, log);
  const chatView = chat;
  context.subscriptions.push(
    chatView,
    vscode.window.registerWebviewViewProvider(ChatView.viewType, chatView, {
      webviewOptions: { retainContextWhenHidden: true },
    }),
    vscode.commands.registerCommand("rbee.chat.clear", () => chatView.clear()),
    // The model list follows the workers: whenever the nodes were looked at again.
    nodes.onDidRefresh(() => void chatView.postModels()),
  );
  const participant = registerChatParticipant(
    context.extensionUri,
    chatService,
    () => chatView.currentModel(),
    () => chatSettings().systemPrompt,
  );
  if (participant) context.subscriptions.push(participant);

  // The OpenAI/Ollama/llama.cpp gateway, when "rbee.gateway.enabled" is on (it loads the keeper then).
  const gateway = new GatewayService(s, log);
  context.subscriptions.push(gateway, gateway.register());

  const activationMs = performance.now() - started;
  log.info(`rbee activated in ${activationMs.toFixed(1)} ms`);
  return {
    activationMs,
    services: s,
    tokens,
    nodes,
    inline,
    engine,
    chat: chatView,
    recentModels: () => recentModels(context.globalState),
    gateway,
  };
}

export async function deactivate(): Promise<void> {
  // Workers and the local hive keep running (they serve other windows and the next session warm),
  // unless rbee.nodes.stopLocalHiveOnExit says otherwise.
  if (services?.loaded && nodesSettings().stopLocalHiveOnExit) {
    const stack = await services.get().catch(() => undefined);
    await stack?.local.stop(10_000).catch(() => undefined);
  }
  await services?.dispose();
  services = undefined;
}
