// VS Code's side of inline completions: converts the document around the cursor and the
// CancellationToken into a CompletionRequest, and the engine's answer into an InlineCompletionItem.
// Everything else (debounce, cache, one request per editor, repeat filter) is the engine's.

import * as vscode from "vscode";
import type { CompletionEngine, CompletionOutcome } from "./completion-engine";
import type { EngineSettings } from "./completion-engine";

/** Extra characters read past the window's limit, so the window can cut at a line boundary. */
const READ_SLACK = 512;

export class RbeeInlineProvider implements vscode.InlineCompletionItemProvider {
  /** The last answer, for the status bar tooltip and the tests. */
  lastOutcome: CompletionOutcome | undefined;
  private readonly outcomeListeners = new Set<(o: CompletionOutcome) => void>();
  /** Where a request found no worker yet because one was starting: asked again when it is ready. */
  private waiting: { uri: string; version: number } | undefined;

  constructor(
    private readonly engine: CompletionEngine,
    private readonly settings: () => EngineSettings,
  ) {}

  onOutcome(listener: (o: CompletionOutcome) => void): vscode.Disposable {
    this.outcomeListeners.add(listener);
    return new vscode.Disposable(() => this.outcomeListeners.delete(listener));
  }

  /**
   * The worker started for completions became ready: if the editor is still as the request that found
   * none left it (same document, same text), ask again, so the ghost text appears without a keystroke.
   * Returns whether it asked.
   */
  async workerReady(): Promise<boolean> {
    const w = this.waiting;
    this.waiting = undefined;
    const editor = vscode.window.activeTextEditor;
    if (!w || !editor || editor.document.uri.toString() !== w.uri || editor.document.version !== w.version) return false;
    // Same text: nothing was typed since. The position is not compared: the extension host's copy of the
    // cursor can lag a keystroke behind, and a request at wherever the cursor now is is never stale.
    if (!editor.selection.isEmpty) return false;
    // An explicit trigger is not served from the empty answer VS Code holds for the automatic request
    // (typing) that found no worker: it asks the provider again.
    await vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
    return true;
  }

  async provideInlineCompletionItems(
    document: vscode.TextDocument,
    position: vscode.Position,
    _context: vscode.InlineCompletionContext,
    token: vscode.CancellationToken,
  ): Promise<vscode.InlineCompletionList | undefined> {
    const s = this.settings();
    const offset = document.offsetAt(position);
    const before = document.getText(new vscode.Range(document.positionAt(Math.max(0, offset - s.window.maxPrefixChars - READ_SLACK)), position));
    const after = document.getText(new vscode.Range(position, document.positionAt(offset + s.window.maxSuffixChars + READ_SLACK)));

    const abort = new AbortController();
    const subscription = token.onCancellationRequested(() => abort.abort());
    if (token.isCancellationRequested) abort.abort();
    try {
      const outcome = await this.engine.complete({
        editor: document.uri.toString(),
        languageId: document.languageId,
        before,
        after,
        signal: abort.signal,
      });
      this.lastOutcome = outcome;
      this.waiting = this.engine.currentState.kind === "warming" ? { uri: document.uri.toString(), version: document.version } : undefined;
      for (const l of this.outcomeListeners) l(outcome);
      if (!outcome.text || token.isCancellationRequested) return undefined;
      return new vscode.InlineCompletionList([new vscode.InlineCompletionItem(outcome.text, new vscode.Range(position, position))]);
    } finally {
      subscription.dispose();
    }
  }
}
