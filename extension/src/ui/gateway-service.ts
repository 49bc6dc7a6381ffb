// The gateway inside VS Code: runs while "rbee.gateway.enabled" is on (restarting when its port
// changes), on the extension's own keeper stack, and offers "rbee: Copy Gateway Config" for Continue,
// llama.vscode and the OpenAI SDK. The gateway itself lives in ../gateway (no vscode there).

import * as vscode from "vscode";
import type { Gateway } from "../gateway/server";
import { SNIPPET_KINDS, SNIPPET_LABELS, configSnippet, type SnippetKind } from "../gateway/snippets";
import type { RbeeLog } from "./log";
import type { RbeeServices } from "../ui-core/services";
import { gatewaySettings } from "./settings";

export class GatewayService implements vscode.Disposable {
  private running?: { gateway: Gateway; port: number; url: string };
  private syncing: Promise<void> = Promise.resolve();

  constructor(
    private readonly services: RbeeServices,
    private readonly log: RbeeLog,
  ) {}

  register(): vscode.Disposable {
    this.sync();
    return vscode.Disposable.from(
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration("rbee.gateway.enabled") || e.affectsConfiguration("rbee.gateway.port")) this.sync();
      }),
      vscode.commands.registerCommand("rbee.gateway.copyConfig", (kind?: SnippetKind) => this.copyConfig(kind)),
    );
  }

  /** The running gateway's URL (for tests and the command), if any. */
  get url(): string | undefined {
    return this.running?.url;
  }

  /** Starts, stops or restarts the gateway to match the settings; calls run one after another. */
  sync(): Promise<void> {
    this.syncing = this.syncing
      .then(() => this.apply())
      .catch((e) => {
        this.log.error(`[gateway] ${(e as Error).message}`);
        void vscode.window.showErrorMessage(`rbee gateway: ${(e as Error).message}`);
      });
    return this.syncing;
  }

  private async apply() {
    const s = gatewaySettings();
    if (this.running && (!s.enabled || this.running.port !== s.port)) {
      await this.running.gateway.close();
      this.log.info(`[gateway] stopped ${this.running.url}`);
      this.running = undefined;
    }
    if (!s.enabled || this.running) return;
    const { Gateway } = require("../gateway/server") as typeof import("../gateway/server");
    const { loadGatewayToken } = require("../gateway/token") as typeof import("../gateway/token");
    const { parseGatewayConfig, DEFAULT_GATEWAY_HOST } =
      require("../gateway/config") as typeof import("../gateway/config");
    const stack = await this.services.get();
    const config = () => {
      const g = gatewaySettings();
      return parseGatewayConfig({
        aliases: g.aliases,
        defaultModel: g.defaultModel || undefined,
        queue: { size: g.queueSize, waitMs: g.queueWaitMs },
      });
    };
    const nodeList = this.services.nodeList;
    const gateway = new Gateway({
      keeper: stack.keeper,
      nodes: stack.nodes,
      config,
      token: loadGatewayToken(),
      isNode: async (name) => name === "localhost" || (await nodeList.list()).nodes.some((n) => n.name === name),
      log: (line) => this.log.info(`[gateway] ${line}`),
    });
    try {
      const address = await gateway.listen(s.port, DEFAULT_GATEWAY_HOST);
      this.running = { gateway, port: s.port, url: address.url };
      this.log.info(`[gateway] listening on ${address.url}`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EADDRINUSE")
        throw new Error(
          `port ${s.port} is in use (another window or "rbee serve" may run the gateway already); change "rbee.gateway.port" or stop the other one`,
        );
      throw e;
    }
  }

  private async copyConfig(kind?: SnippetKind): Promise<string | undefined> {
    const pick =
      kind ??
      (
        await vscode.window.showQuickPick(
          SNIPPET_KINDS.map((k) => ({ label: SNIPPET_LABELS[k], snippet: k })),
          { title: "Copy a config snippet for" },
        )
      )?.snippet;
    if (!pick) return undefined;
    const { loadGatewayToken } = require("../gateway/token") as typeof import("../gateway/token");
    const s = gatewaySettings();
    const url = this.running?.url ?? `http://127.0.0.1:${s.port}`;
    const model = s.defaultModel || Object.keys(s.aliases)[0] || "hf:owner/repo/model.gguf";
    const text = configSnippet(pick, { url, token: loadGatewayToken(), model });
    await vscode.env.clipboard.writeText(text);
    void vscode.window.showInformationMessage(
      s.enabled
        ? `rbee: the ${pick} snippet (with the gateway's token) is on the clipboard.`
        : `rbee: the ${pick} snippet is on the clipboard; turn on "rbee.gateway.enabled" (or run "rbee serve") to serve it.`,
    );
    return pick;
  }

  dispose(): void {
    void this.running?.gateway.close();
    this.running = undefined;
  }
}
