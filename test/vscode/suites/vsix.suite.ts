// rbee installed from its .vsix (loaded as extensionTestsPath with the unpacked package as the
// extension: no repository, no node_modules). code-server is a remote: the extension runs in the
// server's extension host as a workspace extension, where `localhost` is the server machine. From
// there "rbee: Infer" on a bare SSH node (no node, no npm) deploys the pinned runtime — fetched
// through the extension's own fetcher into its global storage — and streams the answer.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import * as vscode from "vscode";
import { runCases } from "../host-runner";
import type { InferOutcome } from "../../../extension/src/ui/infer/infer-command";

const EXTENSION_ID = "rbee.rbee";

export async function run(): Promise<void> {
  const extension = vscode.extensions.getExtension(EXTENSION_ID);
  assert.ok(extension, `${EXTENSION_ID} is not loaded`);
  process.env.RBEE_HOME = mkdtempSync(path.join(os.tmpdir(), "rbee-vsix-home-"));
  const config = () => vscode.workspace.getConfiguration("rbee");
  await config().update("nodes.sshConfigPath", process.env.RBEE_TEST_SSH_CONFIG, vscode.ConfigurationTarget.Global);

  await runCases("vsix", [
    {
      name: "the extension runs from the unpacked .vsix, as a workspace extension in code-server's host",
      fn: async () => {
        assert.equal(extension.extensionPath, process.env.RBEE_VSIX_EXTENSION);
        assert.equal(existsSync(path.join(extension.extensionPath, "node_modules")), false);
        assert.equal(extension.extensionKind, vscode.ExtensionKind.Workspace);
        await extension.activate();
      },
    },
    {
      name: "rbee: Infer on a bare node deploys the pinned runtime over SSH and streams the answer",
      fn: async () => {
        const model = process.env.RBEE_TEST_MODEL_URL!;
        const result = await vscode.commands.executeCommand<InferOutcome>("rbee.infer", {
          node: "node1",
          model,
          prompt: "def add(a, b):",
          maxTokens: 8,
        });
        assert.ok(result, "rbee.infer returned nothing (see the rbee log)");
        assert.equal(result.tokensOut, 8);
        assert.equal(vscode.window.activeTextEditor?.document.getText(), result.text);
      },
    },
  ]);
  await config().update("nodes.sshConfigPath", undefined, vscode.ConfigurationTarget.Global);
}
