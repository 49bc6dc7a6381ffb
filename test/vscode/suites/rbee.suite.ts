// rbee inside a real VS Code (loaded as extensionTestsPath, with the repository as the extension
// under development). With the localhost node and a generated tiny model it shows: activation that
// loads nothing heavy; "rbee: Infer" streaming into an editor, and Cancel stopping it; an inline
// completion as ghost text that Tab accepts, and the prefetched next one shown after it without a
// request; the chat view streaming a reply, and Stop; the Remote
// Nodes tree with the worker, and stopping the worker from the tree. Screenshots of each go to the
// harness's output folder; "bench:" lines carry the figures the outer test records.
//
// Everything rbee writes goes to a temporary RBEE_HOME (set before any rbee command runs) and to the
// test window's own global storage; the ssh config read is a missing file in that folder.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import * as vscode from "vscode";
import { workbench } from "../bridge-client";
import { runCases, waitUntil } from "../host-runner";
import { EXTENSION_ID, openSuiteHome } from "./suite-home";
import { ensureModel } from "../../fixtures/models";
import type { RbeeApi } from "../../../extension/src/extension";
import type { InferOutcome } from "../../../extension/src/ui/infer/infer-command";
import { modelShortName } from "../../../extension/src/ui-core/nodes/node-format";

const WEBVIEW = { webview: EXTENSION_ID };

function percentile(samples: number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

/** Closes every editor, discarding the untitled documents the earlier cases wrote (no save prompts). */
async function closeAllEditors() {
  for (let i = 0; i < 50 && vscode.window.tabGroups.all.some((g) => g.tabs.length); i++)
    await vscode.commands.executeCommand("workbench.action.revertAndCloseActiveEditor");
}

function bench(name: string, value: number) {
  console.log(`bench: ${name}=${value.toFixed(3)}`);
}

export async function run(): Promise<void> {
  const suite = await openSuiteHome("rbee-vscode-home-");
  const { extension, home, config } = suite;
  // The outer test generates the model; under run-electron.mjs the file is found in the repository's cache.
  const modelPath =
    process.env.RBEE_TEST_MODEL ?? ensureModel("tiny", 42, path.join(extension.extensionPath, ".cache", "models"));
  const model = `file:${modelPath}`;
  const short = modelShortName(model);
  let api: RbeeApi | undefined;
  const rbee = () => {
    assert.ok(api, "an earlier case failed to activate rbee");
    return api;
  };

  try {
    await runCases("rbee", [
      {
        name: "rbee activates with its commands and views, and loads nothing heavy",
        fn: async () => {
          api = await extension.activate();
          assert.equal(extension.isActive, true);
          const commands = await vscode.commands.getCommands(true);
          for (const c of [
            "rbee.infer",
            "rbee.toggleInline",
            "rbee.inline.nextCandidate",
            "rbee.refreshNodes",
            "rbee.deployNode",
            "rbee.startWorker",
            "rbee.stopWorker",
            "rbee.downloadModel",
            "rbee.showLogs",
            "rbee.chat.focus",
            "rbee.nodes.focus",
          ])
            assert.ok(commands.includes(c), `${c} is not registered`);
          assert.equal(api.services.loaded, false, "activation must not open the registry or load the keeper");
          bench("activation_ms", api.activationMs);
        },
      },
      {
        name: "rbee: Infer streams the answer token by token into a new editor (cold start of hive and worker)",
        fn: async () => {
          const edits: number[] = [];
          const sub = vscode.workspace.onDidChangeTextDocument((e) => {
            if (e.document.uri.scheme === "untitled" && e.contentChanges.length)
              edits.push(e.document.getText().length);
          });
          const t0 = Date.now();
          let result: InferOutcome | undefined;
          try {
            result = await vscode.commands.executeCommand<InferOutcome>("rbee.infer", {
              node: "localhost",
              model,
              prompt: "def fibonacci(n):",
              maxTokens: 400,
            });
          } finally {
            sub.dispose();
          }
          assert.ok(result, "rbee.infer returned nothing (see the rbee log)");
          assert.equal(result.stopReason, "max_tokens");
          assert.equal(result.tokensOut, 400);
          const editor = vscode.window.activeTextEditor;
          assert.ok(editor);
          assert.equal(editor.document.uri.toString(), result.document);
          assert.equal(editor.document.getText(), result.text);
          assert.ok(result.text.length > 0);
          // Streamed, not written at the end: the document grew in several edits.
          assert.ok(edits.length >= 2, `the answer arrived in ${edits.length} edit(s)`);
          assert.ok(
            edits.every((n, i) => i === 0 || n >= edits[i - 1]),
            "the document only grows while streaming",
          );
          bench("infer_cold_start_ms", Date.now() - t0);
          await workbench.screenshot("rbee-infer-result");
        },
      },
      {
        name: "Cancel in the progress notification stops the generation on the worker",
        fn: async () => {
          let grown = 0;
          const sub = vscode.workspace.onDidChangeTextDocument((e) => {
            if (e.document.uri.scheme === "untitled") grown = e.document.getText().length;
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
              () => grown > 0,
              () => "the answer to start streaming",
              30_000,
            );
            await workbench.click('.notification-toast .monaco-button:has-text("Cancel")');
            const result = await pending;
            assert.ok(result);
            assert.equal(result.stopReason, "cancelled");
            assert.ok(result.tokensOut > 0 && result.tokensOut < 3500, `${result.tokensOut} tokens`);
          } finally {
            sub.dispose();
          }
          // The worker is free again: its slot was released by the cancellation.
          const stack = await rbee().services.get();
          const hive = await (await rbee().services.controller("localhost")).hive(false);
          await waitUntil(
            async () => (await hive.workers()).every((w) => w.slots_busy === 0),
            () => "the worker's slots to be free",
            5000,
          );
          assert.ok((await stack.registry.listWorkers({ node: "localhost" })).length === 1);
        },
      },
      {
        name: "Infer at the cursor takes the selection as its prompt and writes after it",
        fn: async () => {
          await config().update("infer.output", "atCursor", vscode.ConfigurationTarget.Global);
          try {
            const prompt = "def square(x):";
            const doc = await vscode.workspace.openTextDocument({ language: "python", content: `${prompt}\n# end` });
            const editor = await vscode.window.showTextDocument(doc);
            editor.selection = new vscode.Selection(0, 0, 0, prompt.length);
            const result = await vscode.commands.executeCommand<InferOutcome>("rbee.infer", {
              node: "localhost",
              model,
              maxTokens: 16,
            });
            assert.ok(result);
            assert.equal(result.tokensOut, 16);
            assert.equal(result.document, doc.uri.toString(), "written into the active editor, not a new one");
            assert.equal(doc.getText(), `${prompt}${result.text}\n# end`);
          } finally {
            await config().update("infer.output", undefined, vscode.ConfigurationTarget.Global);
          }
        },
      },
      {
        name: "the status bar toggle switches inline completions off and on",
        fn: async () => {
          assert.equal(await vscode.commands.executeCommand<boolean>("rbee.toggleInline"), false);
          await waitUntil(
            () => rbee().engine.currentState.kind === "off",
            () => `completions off (state ${rbee().engine.currentState.kind})`,
          );
          const doc = await vscode.workspace.openTextDocument({ language: "python", content: "x = " });
          const token = new vscode.CancellationTokenSource().token;
          const list = await rbee().inline.provideInlineCompletionItems(
            doc,
            doc.positionAt(4),
            { triggerKind: vscode.InlineCompletionTriggerKind.Invoke, selectedCompletionInfo: undefined },
            token,
          );
          assert.equal(list, undefined);
          assert.equal(rbee().inline.lastOutcome?.reason, "disabled");
          assert.equal(await vscode.commands.executeCommand<boolean>("rbee.toggleInline"), true);
          await waitUntil(
            () => rbee().engine.currentState.kind === "idle",
            () => `completions on (state ${rbee().engine.currentState.kind})`,
          );
        },
      },
      {
        name: "an inline completion appears as ghost text and Tab accepts it into the document",
        fn: async () => {
          await config().update("completion.debounceMs", 50, vscode.ConfigurationTarget.Global);
          let accepted = false;
          for (let attempt = 0; attempt < 3 && !accepted; attempt++) {
            const before = `def add_${attempt}(a, b):\n    return `;
            const doc = await vscode.workspace.openTextDocument({ language: "python", content: before });
            const editor = await vscode.window.showTextDocument(doc);
            const end = doc.positionAt(before.length);
            editor.selection = new vscode.Selection(end, end);
            const outcomes: string[] = [];
            const sub = rbee().inline.onOutcome((o) => outcomes.push(o.source));
            try {
              await vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
              await waitUntil(
                () => outcomes.includes("worker") || outcomes.includes("skipped"),
                () => `a completion (outcomes so far: ${outcomes.join(", ")})`,
                30_000,
              );
            } finally {
              sub.dispose();
            }
            const suggestion = rbee().inline.lastOutcome?.text;
            if (!suggestion) continue; // the model repeated the suffix: try another context
            await workbench.waitFor(".monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text", {
              timeoutMs: 10_000,
            });
            await workbench.screenshot("rbee-ghost-text");
            await workbench.press("Tab");
            await waitUntil(
              () => doc.getText() === before + suggestion,
              () =>
                `the suggestion accepted: document is ${JSON.stringify(doc.getText())}, expected ${JSON.stringify(before + suggestion)}`,
            );
            accepted = true;
          }
          assert.ok(accepted, "no suggestion to accept in 3 contexts");
        },
      },
      {
        name: "accepting a suggestion shows the prefetched next one, without a new request",
        fn: async () => {
          await config().update("completion.debounceMs", 50, vscode.ConfigurationTarget.Global);
          const engine = rbee().engine;
          let shown = false;
          for (let attempt = 0; attempt < 3 && !shown; attempt++) {
            const before = `def mul_${attempt}(a, b):\n    return `;
            const doc = await vscode.workspace.openTextDocument({ language: "python", content: before });
            const editor = await vscode.window.showTextDocument(doc);
            const end = doc.positionAt(before.length);
            editor.selection = new vscode.Selection(end, end);
            const outcomes: { source: string; text?: string }[] = [];
            const sub = rbee().inline.onOutcome((o) => outcomes.push({ source: o.source, text: o.text }));
            try {
              const prefetches = engine.counters.prefetches;
              await vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
              await waitUntil(
                () => outcomes.some((o) => o.source === "worker" || o.source === "skipped"),
                () => `a completion (outcomes so far: ${outcomes.map((o) => o.source).join(", ")})`,
                30_000,
              );
              const suggestion = rbee().inline.lastOutcome?.text;
              if (!suggestion) continue;
              // The next suggestion is fetched while this one is shown.
              await waitUntil(
                () => engine.counters.prefetches > prefetches && !engine.prefetching(doc.uri.toString()),
                () => "the prefetch to finish",
                30_000,
              );
              await workbench.waitFor(".monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text", {
                timeoutMs: 10_000,
              });
              const requests = engine.counters.requests;
              outcomes.length = 0;
              await workbench.press("Tab");
              await waitUntil(
                () => doc.getText() === before + suggestion,
                () => `the suggestion accepted: ${JSON.stringify(doc.getText())}`,
              );
              // VS Code asks again after the accept; the answer is the prefetched suggestion.
              const next = () => outcomes.find((o) => o.text);
              await waitUntil(
                async () => {
                  if (!next()) await vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
                  return next() !== undefined;
                },
                () => `a suggestion after the accept (outcomes: ${outcomes.map((o) => o.source).join(", ")})`,
                15_000,
              );
              if (next()!.source !== "cache") continue; // the prefetched text was blank after cleaning: another context
              await workbench.waitFor(".monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text", {
                timeoutMs: 10_000,
              });
              await workbench.screenshot("rbee-prefetched-ghost-text");
              assert.equal(
                engine.counters.requests,
                requests,
                "no request was sent for the suggestion after the accept",
              );
              shown = true;
            } finally {
              sub.dispose();
            }
          }
          assert.ok(shown, "no prefetched suggestion shown in 3 contexts");
          await config().update("completion.debounceMs", undefined, vscode.ConfigurationTarget.Global);
        },
      },
      {
        name: "bench: the inline provider's overhead over the worker's generation, and a cache hit",
        fn: async () => {
          await config().update("completion.debounceMs", 0, vscode.ConfigurationTarget.Global);
          await config().update("completion.maxTokens", 24, vscode.ConfigurationTarget.Global);
          const file =
            "import os\n\n" +
            Array.from({ length: 40 }, (_, i) => `def helper_${i}(x):\n    return x * ${i}\n`).join("\n");
          const context = {
            triggerKind: vscode.InlineCompletionTriggerKind.Automatic,
            selectedCompletionInfo: undefined,
          } as vscode.InlineCompletionContext;
          const overhead: number[] = [];
          for (let i = 0; i < 45; i++) {
            const text = `${file}\ndef f_${i}(a, b):\n    return `;
            const doc = await vscode.workspace.openTextDocument({ language: "python", content: text });
            const source = new vscode.CancellationTokenSource();
            const t0 = performance.now();
            await rbee().inline.provideInlineCompletionItems(doc, doc.positionAt(text.length), context, source.token);
            const elapsed = performance.now() - t0;
            const o = rbee().inline.lastOutcome!;
            assert.ok(o.source === "worker" || o.source === "skipped", `${o.source}: ${o.reason}`);
            if (i >= 5) overhead.push(elapsed - o.debounceMs - (o.workerMs ?? 0));
          }
          const text = `${file}\ndef cached(a, b):\n    return `;
          const doc = await vscode.workspace.openTextDocument({ language: "python", content: text });
          const token = new vscode.CancellationTokenSource().token;
          await rbee().inline.provideInlineCompletionItems(doc, doc.positionAt(text.length), context, token);
          const hits: number[] = [];
          if (rbee().inline.lastOutcome?.text) {
            for (let i = 0; i < 200; i++) {
              const t0 = performance.now();
              const list = await rbee().inline.provideInlineCompletionItems(
                doc,
                doc.positionAt(text.length),
                context,
                token,
              );
              hits.push(performance.now() - t0);
              assert.equal(rbee().inline.lastOutcome?.source, "cache");
              assert.ok(list?.items.length === 1);
            }
            bench("cache_hit_p50_ms", percentile(hits, 50));
          }
          bench("provider_overhead_p50_ms", percentile(overhead, 50));
          bench("provider_overhead_p95_ms", percentile(overhead, 95));
          await config().update("completion.debounceMs", undefined, vscode.ConfigurationTarget.Global);
          await config().update("completion.maxTokens", undefined, vscode.ConfigurationTarget.Global);
        },
      },
      {
        name: "the chat view streams a reply into the webview, and Stop ends a long one",
        fn: async () => {
          await config().update("chat.maxTokens", 64, vscode.ConfigurationTarget.Global);
          await closeAllEditors(); // room for the screenshots
          await vscode.commands.executeCommand("rbee.chat.focus");
          for (let i = 0; i < 8; i++) await vscode.commands.executeCommand("workbench.action.decreaseViewWidth");
          await workbench.waitFor("#input", { ...WEBVIEW, timeoutMs: 30_000 });
          await waitUntil(
            async () => (await workbench.text("#model option", WEBVIEW)).includes(short),
            () => `the model picker to offer ${short}`,
            15_000,
          );
          const controller = rbee().chat.controller;
          const before = controller.turns.length;
          await workbench.click("#input", WEBVIEW);
          await workbench.type("Hello! What can you do?");
          await workbench.press("Enter");
          await workbench.waitFor(".turn.assistant.done", { ...WEBVIEW, timeoutMs: 60_000 });
          const reply = controller.turns.at(-1)!;
          assert.equal(controller.turns.length, before + 2);
          assert.equal(reply.role, "assistant");
          assert.equal(reply.status, "done", reply.error);
          assert.ok(reply.content.length > 0);
          const shown = await workbench.text(".turn.assistant.done", WEBVIEW);
          assert.ok(shown.at(-1)!.trim().length > 0, "the reply is shown in the webview");
          assert.deepEqual(await workbench.text(".turn.user", WEBVIEW), ["Hello! What can you do?"]);
          await workbench.screenshot("rbee-chat");

          // Long enough to take seconds on the tiny model, short enough to fit its 4096-token context with the history.
          await config().update("chat.maxTokens", 2500, vscode.ConfigurationTarget.Global);
          await workbench.click("#input", WEBVIEW);
          await workbench.type("Tell me a very long story.");
          await workbench.press("Enter");
          await workbench.waitFor("#stop", WEBVIEW);
          await waitUntil(
            () => {
              const last = controller.turns.at(-1);
              if (last?.status === "error") throw new Error(`the long reply failed: ${last.error}`);
              return (last?.content.length ?? 0) > 0 && controller.busy;
            },
            () =>
              `the long reply to start streaming (last turn: ${JSON.stringify({ ...controller.turns.at(-1), content: controller.turns.at(-1)?.content.slice(0, 40) })})`,
            30_000,
          );
          await workbench.click("#stop", WEBVIEW);
          await workbench.waitFor(".turn.assistant.stopped", WEBVIEW);
          const stopped = controller.turns.at(-1)!;
          assert.equal(stopped.status, "stopped");
          assert.ok(stopped.content.length > 0);
          await workbench.waitFor("#send", WEBVIEW);
          await workbench.screenshot("rbee-chat-stopped");
          await config().update("chat.maxTokens", undefined, vscode.ConfigurationTarget.Global);
        },
      },
      {
        name: "rbee.gateway.enabled serves the window's workers over the OpenAI API; the command copies a snippet with the token",
        fn: async () => {
          const port = await new Promise<number>((resolve) => {
            const probe = net.createServer().listen(0, "127.0.0.1", () => {
              const p = (probe.address() as net.AddressInfo).port;
              probe.close(() => resolve(p));
            });
          });
          await config().update("gateway.aliases", { tiny: model }, vscode.ConfigurationTarget.Global);
          await config().update("gateway.port", port, vscode.ConfigurationTarget.Global);
          await config().update("gateway.enabled", true, vscode.ConfigurationTarget.Global);
          try {
            await waitUntil(
              () => rbee().gateway.url === `http://127.0.0.1:${port}`,
              () => `the gateway to listen on ${port} (${rbee().gateway.url})`,
              30_000,
            );
            const token = readFileSync(path.join(home, "gateway", "token"), "utf8").trim();
            const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
              method: "POST",
              headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
              body: JSON.stringify({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 6 }),
            });
            assert.equal(res.status, 200, await res.clone().text());
            assert.equal(((await res.json()) as any).usage.completion_tokens, 6);
            assert.equal(await vscode.commands.executeCommand("rbee.gateway.copyConfig", "openai-sdk"), "openai-sdk");
            const snippet = await vscode.env.clipboard.readText();
            assert.ok(
              snippet.includes(`http://127.0.0.1:${port}/v1`) && snippet.includes(token) && snippet.includes('"tiny"'),
              snippet,
            );
          } finally {
            await config().update("gateway.enabled", undefined, vscode.ConfigurationTarget.Global);
            await config().update("gateway.port", undefined, vscode.ConfigurationTarget.Global);
            await config().update("gateway.aliases", undefined, vscode.ConfigurationTarget.Global);
          }
          await waitUntil(
            () => rbee().gateway.url === undefined,
            () => "the gateway to stop when the setting goes off",
            30_000,
          );
        },
      },
      {
        name: "the Remote Nodes tree shows localhost with its worker; Stop Worker on the tree item removes it",
        fn: async () => {
          await vscode.commands.executeCommand("rbee.nodes.focus");
          await rbee().nodes.refresh();
          const snapshot = rbee().nodes.snapshot("localhost");
          assert.equal(snapshot?.status, "running", snapshot?.reason);
          assert.deepEqual(
            snapshot.workers.map((w) => w.model_ref),
            [model],
          );
          const workerRow = `.monaco-list-row[role="treeitem"]:has-text("${short}")`; // not a notification naming the model
          await workbench.waitFor('.monaco-list-row:has-text("localhost")');
          await workbench.waitFor(workerRow);
          const rows = await workbench.text(".monaco-list-row", {});
          assert.ok(
            rows.some((r) => r.includes("localhost") && r.includes("running")),
            JSON.stringify(rows),
          );
          assert.ok(
            rows.some((r) => r.includes(short) && /idle|busy/.test(r) && r.includes("slots")),
            JSON.stringify(rows),
          );
          await workbench.screenshot("rbee-nodes-tree");

          await workbench.click(workerRow);
          await workbench.click(`${workerRow} .action-label[aria-label*="Stop Worker"]`);
          await waitUntil(
            () => (rbee().nodes.snapshot("localhost")?.workers.length ?? -1) === 0,
            () => "the worker to disappear from the tree's snapshot",
            30_000,
          );
          await workbench.waitFor(workerRow, { state: "detached" });
          const { registry } = await rbee().services.get();
          assert.deepEqual(await registry.listWorkers(), []);
          await workbench.screenshot("rbee-nodes-tree-stopped");
        },
      },
    ]);
  } finally {
    await suite.close(api);
  }
}
