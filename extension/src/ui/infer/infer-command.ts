// "rbee: Infer": pick a node, a model and a prompt; the answer streams token by token into a new
// editor (or at the cursor). A cold start (hive start, download, model load) shows in a cancellable
// notification; Cancel stops the generation on the worker (DELETE), keeping what was written.

import * as vscode from "vscode";
import type { GenerationResult, KeeperEvent } from "../../keeper/keeper";
import { describeError, showError, type RbeeLog } from "../log";
import { progressStep } from "../narration";
import type { RbeeServices } from "../services";
import { inferSettings, type InferOutput } from "../settings";
import { modelShortName } from "../nodes/node-format";
import { DocumentAppender } from "./editor-sink";
import { pickModel, pickNode, recentModels, rememberModel, type NodePickerSource } from "./pickers";

/** Arguments a keybinding, another extension or a test may pass to skip the pickers. */
export interface InferArgs {
  node?: string;
  model?: string;
  prompt?: string;
  output?: InferOutput;
  maxTokens?: number;
}

export interface InferOutcome {
  text: string;
  tokensOut: number;
  stopReason: GenerationResult["stopReason"];
  /** The document the answer was written to. */
  document: string;
}

export class InferCommand {
  constructor(
    private readonly services: RbeeServices,
    private readonly log: RbeeLog,
    private readonly memento: vscode.Memento,
    private readonly nodes: NodePickerSource,
  ) {}

  async run(args: InferArgs = {}): Promise<InferOutcome | undefined> {
    const settings = inferSettings();
    const node = args.node ?? (settings.node || (await pickNode(this.nodes, "rbee: Infer — on which node?")));
    if (!node) return undefined;
    const model = args.model ?? (await pickModel(this.services, node, recentModels(this.memento), [settings.model], "rbee: Infer — which model?"));
    if (!model) return undefined;

    const editor = vscode.window.activeTextEditor;
    const selection = editor && !editor.selection.isEmpty ? editor.document.getText(editor.selection) : "";
    const prompt = args.prompt ?? (selection || (await vscode.window.showInputBox({ title: "rbee: Infer", prompt: `Prompt for ${modelShortName(model)} on ${node}`, ignoreFocusOut: true })));
    if (!prompt) return undefined;

    const output = args.output ?? settings.output;
    const target = await this.openTarget(output, editor);
    await rememberModel(this.memento, model);
    this.log.info(`[infer] ${modelShortName(model)} on ${node}: ${prompt.length} characters of prompt, up to ${args.maxTokens ?? settings.maxTokens} tokens`);

    return vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: `rbee: ${modelShortName(model)} on ${node}`, cancellable: true },
      async (progress, token) => {
        const abort = new AbortController();
        token.onCancellationRequested(() => abort.abort());
        const sink = new DocumentAppender(target.document, target.start);
        let tokens = 0;
        let lastReport = 0;
        const onEvent = (e: KeeperEvent) => {
          this.log.event(e, "[infer]");
          const step = progressStep(e);
          if (step) progress.report({ message: step.message });
        };
        try {
          const keeper = await this.services.keeper();
          const result = await keeper.generate(
            { node, model },
            { kind: "inference", prompt, max_tokens: args.maxTokens ?? settings.maxTokens, temperature: settings.temperature },
            {
              onEvent,
              onToken: (t) => {
                sink.push(t);
                tokens++;
                const now = Date.now();
                if (now - lastReport > 250) {
                  lastReport = now;
                  progress.report({ message: `generating: ${tokens} tokens` });
                }
              },
            },
            abort.signal,
          );
          await sink.flush();
          this.log.info(`[infer] ${result.tokensOut} tokens, ${result.stopReason}, ${result.decodeMs} ms decoding${result.spawned ? " (cold start)" : ""}`);
          if (result.stopReason === "cancelled") void vscode.window.showInformationMessage(`rbee: stopped after ${result.tokensOut} tokens.`);
          return { text: result.text, tokensOut: result.tokensOut, stopReason: result.stopReason, document: target.document.uri.toString() };
        } catch (e) {
          await sink.flush().catch(() => undefined);
          if (abort.signal.aborted) {
            this.log.info(`[infer] cancelled before the answer started: ${describeError(e)}`);
            return { text: "", tokensOut: 0, stopReason: "cancelled" as const, document: target.document.uri.toString() };
          }
          void showError(this.log, "Infer failed", e);
          return undefined;
        }
      },
    );
  }

  private async openTarget(output: InferOutput, editor: vscode.TextEditor | undefined): Promise<{ document: vscode.TextDocument; start: vscode.Position }> {
    if (output === "atCursor" && editor) return { document: editor.document, start: editor.selection.end };
    const document = await vscode.workspace.openTextDocument({ language: "markdown", content: "" });
    await vscode.window.showTextDocument(document, { preview: false, viewColumn: editor ? vscode.ViewColumn.Beside : vscode.ViewColumn.Active });
    return { document, start: new vscode.Position(0, 0) };
  }
}
