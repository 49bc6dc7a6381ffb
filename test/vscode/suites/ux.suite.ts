// What a newcomer meets in a real VS Code (issue 17), with the localhost node and a generated tiny
// model, starting from nothing: the welcome view and the chat's hint; a refused chat question that
// stays in the box; a failed ref that is neither remembered nor leaves an editor; a ref typed into the
// model picker; the Infer summary; typing into the output while it streams; max tokens over the
// context; Cancel during a cold start; ghost text once the completion worker is ready; the tree's
// models, tooltips, downloads and Stop Local Hive. Screenshots go to the harness's output folder.
import assert from "node:assert/strict";
import path from "node:path";
import * as vscode from "vscode";
import { workbench } from "../bridge-client";
import { runCases, waitUntil } from "../host-runner";
import { EXTENSION_ID, openSuiteHome } from "./suite-home";
import { ensureModel } from "../../fixtures/models";
import type { RbeeApi } from "../../../extension/src/extension";
import type { InferOutcome } from "../../../extension/src/ui/infer/infer-command";
import { modelShortName } from "../../../extension/src/ui-core/nodes/node-format";
import { statusText } from "../../../extension/src/ui/status-bar";
import type { TreeNode } from "../../../extension/src/ui/nodes/nodes-tree";
import { DocumentAppender } from "../../../extension/src/ui/infer/editor-sink";

const WEBVIEW = { webview: EXTENSION_ID };
const QUESTION = "What is a closure?";

function untitledTabs(): number {
  return vscode.window.tabGroups.all
    .flatMap((g) => g.tabs)
    .filter((t) => t.input instanceof vscode.TabInputText && t.input.uri.scheme === "untitled").length;
}

async function closeAllEditors() {
  for (let i = 0; i < 50 && vscode.window.tabGroups.all.some((g) => g.tabs.length); i++)
    await vscode.commands.executeCommand("workbench.action.revertAndCloseActiveEditor");
}

/** Whether a menu entry's `when` (view == rbee.nodes && viewItem =~ /re/ or == x) holds for a tree item. */
function offered(menus: { command: string; when: string }[], command: string, viewItem: string): boolean {
  return menus.some((m) => {
    if (m.command !== command) return false;
    const re = /viewItem =~ \/(.+)\/$/.exec(m.when);
    if (re) return new RegExp(re[1]).test(viewItem);
    return new RegExp(`viewItem == ${viewItem.replace(/\./g, "\\.")}$`).test(m.when);
  });
}

export async function run(): Promise<void> {
  const suite = await openSuiteHome("rbee-vscode-home-");
  const { extension, config } = suite;
  const modelPath =
    process.env.RBEE_TEST_MODEL ?? ensureModel("tiny", 42, path.join(extension.extensionPath, ".cache", "models"));
  const model = `file:${modelPath}`;
  const short = modelShortName(model);
  let api: RbeeApi | undefined;
  const rbee = () => {
    assert.ok(api, "an earlier case failed to activate rbee");
    return api;
  };
  const hive = async () => (await rbee().services.controller("localhost")).hive(false);
  const stopAllWorkers = async () => {
    const h = await hive();
    for (const w of await h.workers()) await h.shutdown(w.id).catch(() => undefined);
    const { registry } = await rbee().services.get();
    for (const w of await registry.listWorkers()) await registry.removeWorker(w.id);
    await waitUntil(
      async () => (await h.workers()).every((w) => w.state === "stopping"),
      () => "the workers to stop",
      30_000,
    );
  };

  try {
    await runCases("ux", [
      {
        name: "first run: the welcome view offers Try a model and Set the completion model, chat shows a hint, the status bar promises nothing",
        fn: async () => {
          api = await extension.activate();
          await vscode.commands.executeCommand("rbee.nodes.focus");
          await workbench.waitFor('.welcome-view-content .monaco-button:has-text("Try a model")', {
            timeoutMs: 30_000,
          });
          await workbench.waitFor('.welcome-view-content .monaco-button:has-text("Set the completion model")');
          assert.match(statusText(rbee().engine.currentState).tooltip, /no worker has served one yet/);
          // Start Worker is offered on a node whose hive does not run yet (it starts the hive); Deploy only where it does something.
          const menus = extension.packageJSON.contributes.menus["view/item/context"];
          assert.ok(
            offered(menus, "rbee.startWorker", "rbee.node.not-deployed.loopback"),
            "Start Worker before the hive runs",
          );
          assert.ok(!offered(menus, "rbee.deployNode", "rbee.node.running.loopback"), "no Deploy on a running hive");
          assert.ok(
            offered(menus, "rbee.stopHive", "rbee.node.running.loopback"),
            "Stop Local Hive on the running local hive",
          );
          await vscode.commands.executeCommand("rbee.chat.focus");
          await workbench.waitFor("#empty", { ...WEBVIEW, timeoutMs: 30_000 });
          // No model anywhere yet: the send is refused, and the question must stay in the box.
          await workbench.click("#input", WEBVIEW);
          await workbench.type(QUESTION);
          await workbench.press("Enter");
          await workbench.waitFor('#notice:has-text("No chat model yet")', WEBVIEW);
          assert.equal(rbee().chat.controller.turns.length, 0);
          await workbench.screenshot("rbee-first-run");
        },
      },
      {
        name: "a ref that fails is not remembered and leaves no editor; the picker takes a typed ref; Infer ends with a summary",
        fn: async () => {
          const tabs = untitledTabs();
          const bad = "file:/nonexistent/missing-model.gguf";
          const failed = await vscode.commands.executeCommand<InferOutcome | undefined>("rbee.infer", {
            node: "localhost",
            model: bad,
            prompt: "hi",
          });
          assert.equal(failed, undefined);
          assert.ok(!rbee().recentModels().includes(bad), "a failed ref must not become recent");
          assert.equal(untitledTabs(), tabs, "the failed Infer closed its empty editor");
          await vscode.commands.executeCommand("notifications.clearAll");

          const pending = Promise.resolve(
            vscode.commands.executeCommand<InferOutcome | undefined>("rbee.tryModel", {
              node: "localhost",
              prompt: "def add(a, b):",
            }),
          );
          await workbench.waitFor('.quick-input-list .monaco-list-row:has-text("suggested")', { timeoutMs: 30_000 });
          await workbench.type(model);
          await workbench.waitFor(`.quick-input-list .monaco-list-row:has-text("Use ${short}")`);
          await workbench.press("Enter");
          const result = await pending;
          assert.ok(result && result.tokensOut > 0, "Try a model with the typed ref answered (see the rbee log)");
          assert.equal(rbee().recentModels()[0], model, "the ref that loaded is remembered");
          await workbench.waitFor(`.notification-toast:has-text("tokens from ${short}")`, { timeoutMs: 10_000 });
          // The tree and the chat's model list catch up with the new worker before the picture is taken.
          await rbee().nodes.refresh({ all: true });
          await waitUntil(
            async () => (await workbench.text("#model option", WEBVIEW)).includes(short),
            () => `the chat's model list to offer ${short} without a Clear`,
            30_000,
          );
          await workbench.waitFor(
            `.notification-toast .notification-list-item-message:has-text("tokens from ${short}")`,
          );
          await workbench.screenshot("rbee-infer-finished");
          await vscode.commands.executeCommand("notifications.clearAll");
        },
      },
      {
        name: "the chat's model list follows the workers, the refused question is still there to send, and Clear can be undone",
        fn: async () => {
          await vscode.commands.executeCommand("rbee.chat.focus");
          await waitUntil(
            async () => (await workbench.text("#model option", WEBVIEW)).includes(short),
            () => `the chat's model list to offer ${short} without a Clear`,
            30_000,
          );
          const controller = rbee().chat.controller;
          await workbench.click("#input", WEBVIEW);
          await workbench.press("Enter"); // sends what the refused send left in the box
          await workbench.waitFor(".turn.assistant.done", { ...WEBVIEW, timeoutMs: 60_000 });
          assert.equal(controller.turns[0]?.content, QUESTION);
          assert.equal(await vscode.commands.executeCommand("rbee.chat.clear"), true);
          assert.equal(controller.turns.length, 0);
          await workbench.click('.notification-toast .monaco-button:has-text("Undo")');
          await waitUntil(
            () => controller.turns.length === 2,
            () => `the conversation back after Undo (${controller.turns.length} turns)`,
          );
          await workbench.waitFor(".turn.user", WEBVIEW);
        },
      },
      {
        name: "typing into the Infer output while it streams: the answer keeps landing after the typed text",
        fn: async () => {
          await closeAllEditors();
          let length = 0;
          const sub = vscode.workspace.onDidChangeTextDocument((e) => {
            if (e.document.uri.scheme === "untitled") length = e.document.getText().length;
          });
          const pending = Promise.resolve(
            vscode.commands.executeCommand<InferOutcome>("rbee.infer", {
              node: "localhost",
              model,
              prompt: "Once upon a time",
              maxTokens: 3500,
            }),
          );
          try {
            await waitUntil(
              () => length > 0,
              () => "the answer to start streaming",
              30_000,
            );
            await workbench.press("Control+Home");
            await workbench.type("NOTE: ");
            const doc = vscode.window.activeTextEditor!.document;
            await waitUntil(
              () => doc.getText().startsWith("NOTE: "),
              () => `the typed text in the output: ${JSON.stringify(doc.getText().slice(0, 40))}`,
            );
            const afterTyping = doc.getText().length;
            await waitUntil(
              () => doc.getText().length > afterTyping + 20,
              () => "the answer to go on after the user's edit",
              30_000,
            );
            await workbench.click('.notification-toast .monaco-button:has-text("Cancel")');
            const result = await pending;
            assert.ok(result, "Infer returned nothing (see the rbee log)");
            assert.equal(result.stopReason, "cancelled");
            assert.equal(
              doc.getText(),
              "NOTE: " + result.text,
              "the typed text stays in front, the whole answer after it",
            );
          } finally {
            sub.dispose();
          }
          await vscode.commands.executeCommand("notifications.clearAll");
        },
      },
      {
        name: "text arriving in bursts while the user types ahead of it lands in order, behind the typing, every time",
        fn: async () => {
          // The case above, without a worker and many times over: bursts of short chunks (as token frames
          // arrive) while keys are pressed. VS Code applied a WorkspaceEdit made before a keystroke at its
          // stale position, so a chunk now and then landed in the middle (about 1 round in 6 here).
          const chunks = ["s", "ά", " Prote", "积", "\u0000", "Stats", " patron", "\t", "ха", "é"];
          const typed = "NOTE: typed while it streams ";
          for (let round = 0; round < 12; round++) {
            await closeAllEditors();
            const doc = await vscode.workspace.openTextDocument({ content: "" });
            await vscode.window.showTextDocument(doc);
            const sink = new DocumentAppender(doc, new vscode.Position(0, 0));
            let seed = round + 1;
            const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
            let pushed = "";
            let typing = true;
            const producer = (async () => {
              while (typing) {
                for (let i = 1 + Math.floor(random() * 6); i > 0; i--) {
                  const chunk = chunks[Math.floor(random() * chunks.length)];
                  pushed += chunk;
                  sink.push(chunk);
                }
                await new Promise((r) => setTimeout(r, Math.floor(random() * 20)));
              }
            })();
            try {
              await waitUntil(
                () => doc.getText().length > 0,
                () => "the first chunk",
              );
              await workbench.press("Control+Home");
              await workbench.type(typed);
              await waitUntil(
                () => doc.getText().startsWith(typed),
                () => `round ${round}: the typed text at the start: ${JSON.stringify(doc.getText().slice(0, 40))}`,
              );
            } finally {
              typing = false;
              await producer;
              await sink.flush();
              sink.dispose();
            }
            assert.equal(doc.getText(), typed + pushed, `round ${round}: the typed text, then every chunk in order`);
          }
          await closeAllEditors();
        },
      },
      {
        name: "max tokens beyond the worker's context is lowered to fit, with a note that says how to get more",
        fn: async () => {
          const result = await vscode.commands.executeCommand<InferOutcome>("rbee.infer", {
            node: "localhost",
            model,
            prompt: "Hi",
            maxTokens: 30000,
          });
          assert.ok(result, "Infer failed instead of capping (see the rbee log)");
          assert.ok(result.maxTokensCapped, "the outcome says max tokens was capped");
          assert.equal(result.maxTokensCapped.requested, 30000);
          assert.ok(result.tokensOut <= result.maxTokensCapped.used);
          await workbench.waitFor('.notification-toast:has-text("Max tokens was lowered")', { timeoutMs: 10_000 });
          await vscode.commands.executeCommand("notifications.clearAll");
        },
      },
      {
        name: "Cancel during a cold start stops the loading worker, says so, and leaves no empty editor",
        fn: async () => {
          await stopAllWorkers();
          await closeAllEditors();
          const pending = Promise.resolve(
            vscode.commands.executeCommand<InferOutcome>("rbee.infer", {
              node: "localhost",
              model,
              prompt: "Hello",
              maxTokens: 16,
            }),
          );
          await workbench.waitFor('.notification-toast:has-text("starting a worker")', { timeoutMs: 30_000 });
          await workbench.click('.notification-toast .monaco-button:has-text("Cancel")');
          const result = await pending;
          assert.ok(result);
          assert.equal(result.stopReason, "cancelled");
          assert.equal(result.tokensOut, 0);
          await workbench.waitFor('.notification-toast:has-text("cancelled")', { timeoutMs: 10_000 });
          const h = await hive();
          await waitUntil(
            async () => (await h.workers()).every((w) => w.state === "stopping"),
            () => "the half-started worker to be stopped",
            30_000,
          );
          assert.equal(untitledTabs(), 0, "no empty output editor is left");
          await vscode.commands.executeCommand("notifications.clearAll");
        },
      },
      {
        name: "ghost text appears once the completion worker is ready, without another keystroke",
        fn: async () => {
          await stopAllWorkers();
          await config().update("completion.debounceMs", 50, vscode.ConfigurationTarget.Global);
          await config().update("completion.model", model, vscode.ConfigurationTarget.Global);
          const outcomes: string[] = [];
          const sub = rbee().inline.onOutcome((o) => outcomes.push(o.source));
          try {
            const before = "def multiply(a, b):\n    return";
            const doc = await vscode.workspace.openTextDocument({ language: "python", content: before });
            const editor = await vscode.window.showTextDocument(doc);
            const end = doc.positionAt(before.length);
            editor.selection = new vscode.Selection(end, end);
            await workbench.press("Control+End");
            await workbench.type(" "); // as a user types: VS Code asks for a completion by itself
            await waitUntil(
              () => outcomes.includes("skipped"),
              () => `the first request to find no worker yet (outcomes: ${outcomes.join(", ")})`,
              30_000,
            );
            // From here nobody types: the worker's readiness must bring the completion.
            await waitUntil(
              () => rbee().inline.lastOutcome?.workerMs !== undefined,
              () =>
                `a completion from the worker once it is ready (outcomes: ${outcomes.join(", ")}; state ${rbee().engine.currentState.kind})`,
              90_000,
            );
            assert.notEqual(rbee().engine.currentState.kind, "warming", "the status bar no longer spins");
            if (rbee().inline.lastOutcome?.text)
              await workbench.waitFor(".monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text", {
                timeoutMs: 10_000,
              });
          } finally {
            sub.dispose();
            await config().update("completion.model", undefined, vscode.ConfigurationTarget.Global);
            await config().update("completion.debounceMs", undefined, vscode.ConfigurationTarget.Global);
          }
        },
      },
      {
        name: "the tree counts a file: model, explains a worker's jargon, shows a download, and Stop Local Hive stops the hive",
        fn: async () => {
          await closeAllEditors();
          const tree = rbee().nodes;
          await vscode.commands.executeCommand("rbee.nodes.focus");
          await tree.refresh({ all: true });
          const snapshot = tree.snapshot("localhost");
          assert.equal(snapshot?.status, "running", snapshot?.reason);
          assert.ok(snapshot.workers.length >= 1, "the completion worker runs");
          const children = await tree.getChildren({ kind: "node", snapshot });
          const models = children.find((c): c is Extract<TreeNode, { kind: "models" }> => c.kind === "models");
          assert.ok(models);
          assert.equal(tree.getTreeItem(models).label, "Models (1)");
          const cpu = children.find((c) => c.kind === "cpu")!;
          const [worker] = await tree.getChildren(cpu);
          assert.match(String(tree.getTreeItem(worker).tooltip), /a slot is one request served at a time/);
          // A download's progress shows under its node while it runs.
          tree.downloadEvent("localhost", "hf:someone/repo/big-model.gguf", {
            stage: "downloading",
            bytes_downloaded: 1 << 29,
            bytes_total: 1 << 30,
            speed_bps: 1,
            attempt: 1,
          });
          await workbench.waitFor('.monaco-list-row:has-text("big-model.gguf"):has-text("50% of 1.0 GiB")');
          await workbench.screenshot("rbee-nodes-download");
          tree.downloadEvent("localhost", "hf:someone/repo/big-model.gguf", undefined);
          await workbench.waitFor('.monaco-list-row:has-text("big-model.gguf")', { state: "detached" });

          assert.equal(await vscode.commands.executeCommand("rbee.stopHive"), true);
          const { local, registry } = await rbee().services.get();
          assert.equal((await local.status()).running, false);
          assert.deepEqual(await registry.listWorkers({ node: "localhost" }), []);
          await waitUntil(
            () => tree.snapshot("localhost")?.status === "not-deployed",
            () => `the tree to show the hive stopped (${tree.snapshot("localhost")?.status})`,
            30_000,
          );
        },
      },
    ]);
  } finally {
    await suite.close(api);
  }
}
