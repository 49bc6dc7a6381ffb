// "rbee: Infer": pick a node, a model and a prompt; the answer streams token by token into a new
// editor (or at the cursor). A cold start (hive start, download, model load) shows in a cancellable
// notification; Cancel stops the generation on the worker (DELETE), keeping what was written.

import * as vscode from "vscode";
import type { GenerationResult, KeeperEvent } from "../../keeper/keeper";
import { describeError, showError, type RbeeLog } from "../log";
import { progressStep } from "../../ui-core/narration";
import type { RbeeServices } from "../../ui-core/services";
import { inferSettings, type InferOutput } from "../settings";
import { modelShortName, plural } from "../../ui-core/nodes/node-format";
import { DocumentAppender } from "./editor-sink";
import { generatingText, inferSummary } from "../../ui-core/infer/infer-summary";
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
  /** The document the answer was written to (closed again when nothing was written). */
  document: string;
  /** Set when max tokens was lowered to fit the worker's context. */
  maxTokensCapped?: GenerationResult["maxTokensCapped"];
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
    const model =
      args.model ??
      (await pickModel(
        this.services,
        node,
        recentModels(this.memento),
        [settings.model],
        "rbee: Infer — which model?",
      ));
    if (!model) return undefined;

    const editor = vscode.window.activeTextEditor;
    const selection = editor && !editor.selection.isEmpty ? editor.document.getText(editor.selection) : "";
    const prompt =
      args.prompt ??
      (selection ||
        (await vscode.window.showInputBox({
          title: "rbee: Infer",
          prompt: `Prompt for ${modelShortName(model)} on ${node}`,
          ignoreFocusOut: true,
        })));
    if (!prompt) return undefined;

    const output = args.output ?? settings.output;
    const target = await this.openTarget(output, editor);
    const maxTokens = args.maxTokens ?? settings.maxTokens;
    this.log.info(
      `[infer] ${modelShortName(model)} on ${node}: ${prompt.length} characters of prompt, up to ${maxTokens} tokens`,
    );

    return vscode.window.withProgress(
      {
        location: vscode.ProgressLocation.Notification,
        title: `rbee: ${modelShortName(model)} on ${node}`,
        cancellable: true,
      },
      async (progress, token) => {
        const abort = new AbortController();
        let started = false;
        let cancelling: vscode.Disposable | undefined;
        token.onCancellationRequested(() => {
          abort.abort();
          // The notification is gone at once; say what happens until the worker's start has stopped.
          if (!started)
            cancelling = vscode.window.setStatusBarMessage(
              "$(loading~spin) rbee: cancelling — stopping the worker's start…",
            );
        });
        let closed = false;
        const sink = new DocumentAppender(target.document, target.start, () => {
          closed = true;
          abort.abort();
        });
        let tokens = 0;
        let lastReport = 0;
        const onEvent = (e: KeeperEvent) => {
          this.log.event(e, "[infer]");
          if (e.kind === "download") this.nodes.downloadEvent?.(node, model, e.event);
          if (e.kind === "phase" && e.phase === "stream" && e.status === "started") started = true;
          const step = progressStep(e);
          if (step) progress.report({ message: step.message });
        };
        try {
          const keeper = await this.services.keeper();
          const result = await keeper.generate(
            { node, model },
            { kind: "inference", prompt, max_tokens: maxTokens, temperature: settings.temperature },
            {
              onEvent,
              fitContext: true,
              onToken: (t) => {
                sink.push(t);
                tokens++;
                const now = Date.now();
                if (now - lastReport > 250) {
                  lastReport = now;
                  progress.report({ message: generatingText(tokens) });
                }
              },
            },
            abort.signal,
          );
          await sink.flush().catch(() => undefined);
          // Remembered only once it answered: a ref that fails to load must not become the default.
          await rememberModel(this.memento, model);
          this.log.info(
            `[infer] ${result.tokensOut} tokens, ${result.stopReason}, ${result.decodeMs} ms decoding${result.spawned ? " (cold start)" : ""}`,
          );
          if (closed)
            void vscode.window.showInformationMessage(
              `rbee: the output editor was closed, so the answer stopped after ${plural(result.tokensOut, "token")}.`,
            );
          else {
            if (!result.text) await closeIfEmpty(target);
            void vscode.window.showInformationMessage(inferSummary(result, modelShortName(model)));
          }
          return {
            text: result.text,
            tokensOut: result.tokensOut,
            stopReason: result.stopReason,
            document: target.document.uri.toString(),
            maxTokensCapped: result.maxTokensCapped,
          };
        } catch (e) {
          await sink.flush().catch(() => undefined);
          await closeIfEmpty(target);
          if (abort.signal.aborted) {
            this.log.info(`[infer] cancelled before the answer started: ${describeError(e)}`);
            void vscode.window.showInformationMessage(
              `rbee: cancelled — ${describeError(e).replace(/ \[REQUEST_CANCELLED\]$/, "")}.`,
            );
            return {
              text: "",
              tokensOut: 0,
              stopReason: "cancelled" as const,
              document: target.document.uri.toString(),
            };
          }
          void showError(this.log, "Infer failed", e);
          return undefined;
        } finally {
          cancelling?.dispose();
          sink.dispose();
        }
      },
    );
  }

  private async openTarget(output: InferOutput, editor: vscode.TextEditor | undefined): Promise<InferTarget> {
    if (output === "atCursor" && editor)
      return { document: editor.document, start: editor.selection.end, created: false };
    const document = await vscode.workspace.openTextDocument({ language: "markdown", content: "" });
    await vscode.window.showTextDocument(document, {
      preview: false,
      viewColumn: editor ? vscode.ViewColumn.Beside : vscode.ViewColumn.Active,
    });
    return { document, start: new vscode.Position(0, 0), created: true };
  }
}

interface InferTarget {
  document: vscode.TextDocument;
  start: vscode.Position;
  /** A new untitled editor opened for the answer (closed again when the answer never came). */
  created: boolean;
}

/** A failed or cancelled Infer leaves no empty editor behind (they would pile up). */
async function closeIfEmpty(target: InferTarget) {
  if (!target.created || target.document.isClosed || target.document.getText() !== "") return;
  const uri = target.document.uri.toString();
  const tabs = vscode.window.tabGroups.all
    .flatMap((g) => g.tabs)
    .filter((t) => t.input instanceof vscode.TabInputText && t.input.uri.toString() === uri);
  if (tabs.length) await vscode.window.tabGroups.close(tabs, true);
}
