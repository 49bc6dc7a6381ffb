// Runs inside the extension host (loaded as extensionTestsPath) with test/vscode/fixture as the
// extension under development. It proves the harness end to end: the extension activates, its
// command edits a real editor, keys pressed by playwright reach that editor, the harness reads the
// DOM and clicks inside a webview, and screenshots are taken on request.
import assert from "node:assert/strict";
import * as vscode from "vscode";
import { workbench } from "../bridge-client";
import { runCases, waitUntil } from "../host-runner";

const EXTENSION_ID = "rbee-test.rbee-fixture";
const GREETING = "Hello from the rbee fixture";

export async function run(): Promise<void> {
  let editor: vscode.TextEditor | undefined;
  const doc = () => {
    assert.ok(editor, "an earlier case failed to open the editor");
    return editor.document;
  };

  await runCases("fixture", [
    {
      name: "the fixture extension is loaded from extensionDevelopmentPath and activates",
      fn: async () => {
        const extension = vscode.extensions.getExtension(EXTENSION_ID);
        assert.ok(extension, `${EXTENSION_ID} is not among the extensions VS Code loaded`);
        await extension.activate();
        assert.equal(extension.isActive, true);
      },
    },
    {
      name: "rbeeFixture.hello inserts its greeting into the active editor",
      fn: async () => {
        const untitled = await vscode.workspace.openTextDocument({ language: "plaintext", content: "" });
        editor = await vscode.window.showTextDocument(untitled);
        const returned = await vscode.commands.executeCommand<string>("rbeeFixture.hello");
        assert.equal(returned, GREETING);
        assert.equal(doc().getText(), GREETING);
        assert.equal(editor.selection.active.character, GREETING.length, "the cursor should follow the greeting");
      },
    },
    {
      name: "keys pressed by the harness through playwright reach the editor",
      fn: async () => {
        // The harness turns insertSpaces off, so Tab inserts exactly one tab character.
        await workbench.press("Tab");
        await workbench.type("typed");
        const expected = `${GREETING}\ttyped`;
        await waitUntil(
          () => doc().getText() === expected && editor!.selection.active.character === expected.length,
          () =>
            `${JSON.stringify(expected)} with the cursor at its end; document holds ${JSON.stringify(doc().getText())}, cursor at ${editor!.selection.active.character}`,
        );
      },
    },
    {
      name: "the harness reads the workbench DOM and saves a screenshot",
      fn: async () => {
        // The editor's rendered lines must show what the document holds (spaces render as U+00A0).
        const lines = await workbench.text(".monaco-editor .view-lines .view-line");
        assert.ok(
          lines.some((line) => line.replace(/\u00a0/g, " ").includes("typed")),
          `no rendered line shows the typed text: ${JSON.stringify(lines)}`,
        );
        const file = await workbench.screenshot("fixture-hello");
        assert.match(file, /fixture-hello\.png$/);
      },
    },
    {
      name: "the harness reads and clicks inside the extension's webview",
      fn: async () => {
        await vscode.commands.executeCommand("rbeeFixture.showWebview");
        const inWebview = { webview: EXTENSION_ID };
        await workbench.waitFor("#greeting", inWebview);
        assert.deepEqual(await workbench.text("#greeting", inWebview), [`${GREETING} webview`]);
        await workbench.click("#ping", inWebview);
        let pings = 0;
        await waitUntil(
          async () => (pings = await vscode.commands.executeCommand<number>("rbeeFixture.pingCount")) === 1,
          () => `the webview's click to reach the extension (pings: ${pings})`,
        );
        await workbench.screenshot("fixture-webview");
      },
    },
  ]);
}
