// The welcome view's two buttons, for someone who has never run a model: "Try a model" (pick or
// accept the suggested one, then Infer with a first prompt: the cold start is narrated) and "Set the
// completion model" (pick one; rbee starts its worker the next time you type).

import * as vscode from "vscode";
import type { RbeeServices } from "../../ui-core/services";
import { setSetting } from "../settings";
import { modelShortName } from "../../ui-core/nodes/node-format";
import type { InferCommand, InferOutcome } from "./infer-command";
import { pickModel, pickNode, recentModels, type NodePickerSource } from "./pickers";

export const FIRST_PROMPT = "Write a Python function that checks whether a string is a palindrome.";

export class FirstRunCommands {
  constructor(
    private readonly services: RbeeServices,
    private readonly infer: InferCommand,
    private readonly memento: vscode.Memento,
    private readonly nodes: NodePickerSource,
  ) {}

  async tryModel(args: { node?: string; model?: string; prompt?: string } = {}): Promise<InferOutcome | undefined> {
    const node = args.node ?? (await pickNode(this.nodes, "rbee: Try a model — on which node?"));
    if (!node) return undefined;
    const model =
      args.model ??
      (await pickModel(this.services, node, recentModels(this.memento), [], "rbee: Try a model — which one?"));
    if (!model) return undefined;
    const prompt =
      args.prompt ??
      (await vscode.window.showInputBox({
        title: `rbee: Try ${modelShortName(model)}`,
        prompt: "A first prompt (the answer streams into a new editor)",
        value: FIRST_PROMPT,
        ignoreFocusOut: true,
      }));
    if (!prompt) return undefined;
    return this.infer.run({ node, model, prompt, output: "newEditor" });
  }

  async setCompletionModel(args: { node?: string; model?: string } = {}): Promise<string | undefined> {
    const node = args.node ?? (await pickNode(this.nodes, "rbee: Completion model — on which node?"));
    if (!node) return undefined;
    const model =
      args.model ??
      (await pickModel(this.services, node, recentModels(this.memento), [], "rbee: Which model completes your code?"));
    if (!model) return undefined;
    await setSetting("completion.model", model);
    await setSetting("completion.node", node === "localhost" ? "" : node);
    await setSetting("completion.enabled", true);
    void vscode.window.showInformationMessage(
      `rbee: ghost text now comes from ${modelShortName(model)} on ${node}; its worker starts the next time you type.`,
    );
    return model;
  }
}
