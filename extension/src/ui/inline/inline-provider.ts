// VS Code's side of inline completions: converts the document around the cursor and the
// CancellationToken into a CompletionRequest, and the engine's answer into an InlineCompletionItem.
// Everything else (debounce, cache, one request per editor, repeat filter) is the engine's.

import * as vscode from "vscode";
import type { CompletionEngine, CompletionOutcome } from "../../ui-core/inline/completion-engine";
import type { EngineSettings } from "../../ui-core/inline/completion-engine";

/** Extra characters read past the window's limit, so the window can cut at a line boundary. */
const READ_SLACK = 512;

export class RbeeInlineProvider implements vscode.InlineCompletionItemProvider {
  /** The last answer, for the status bar tooltip and the tests. */
  lastOutcome: CompletionOutcome | undefined;
  /** Set by "rbee: Next Inline Candidate": the next request skips the cache for another candidate. */
  private alternativeRequested = false;
  private readonly outcomeListeners = new Set<(o: CompletionOutcome) => void>();
  /** Where a request found no worker yet because one was starting: asked again when it is ready. */
  private waiting: { uri: string; version: number } | undefined;

  constructor(
    private readonly engine: CompletionEngine,
    private readonly settings: () => EngineSettings,
  ) {}

  /** Asks VS Code for a completion again, this time a fresh candidate. */
  async nextCandidate(): Promise<void> {
    this.alternativeRequested = true;
    await vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
  }

  /**
   * Feeds the extra context: chunks of documents opened, edited or saved, and copied text. They
   * wait in a queue; the engine moves them into the prompt on a pause (see extra-context.ts).
   */
  watchDocuments(): vscode.Disposable {
    const scheme = (d: vscode.TextDocument) => d.uri.scheme === "file" || d.uri.scheme === "untitled";
    const name = (d: vscode.TextDocument) => vscode.workspace.asRelativePath(d.uri);
    const around = (d: vscode.TextDocument, line: number) => {
      if (scheme(d) && d.lineCount > 1) this.engine.extra.pickAround(name(d), d.getText(), line);
    };
    return vscode.Disposable.from(
      vscode.workspace.onDidOpenTextDocument((d) => around(d, 0)),
      vscode.workspace.onDidSaveTextDocument((d) => {
        const editor = vscode.window.activeTextEditor;
        around(d, editor?.document === d ? editor.selection.active.line : 0);
      }),
      vscode.workspace.onDidChangeTextDocument((e) => {
        // Only when the edit lands far from the last pick in that file: a chunk per burst of edits.
        const change = e.contentChanges[0];
        if (!change) return;
        const key = e.document.uri.toString();
        const last = this.lastEditLine.get(key);
        const line = change.range.start.line;
        if (last === undefined || Math.abs(last - line) > 32) {
          this.lastEditLine.set(key, line);
          around(e.document, line);
        }
      }),
    );
  }
  private readonly lastEditLine = new Map<string, number>();

  /** "Copy" with the copied text also queued as extra context. */
  async copy(): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (editor) {
      const text = editor.selections.map((s) => editor.document.getText(s)).join("\n");
      if (text.trim()) this.engine.extra.pickText(vscode.workspace.asRelativePath(editor.document.uri), text);
    }
    await vscode.commands.executeCommand("editor.action.clipboardCopyAction");
  }

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
    if (!w || !editor || editor.document.uri.toString() !== w.uri || editor.document.version !== w.version)
      return false;
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
    const beforeOffset = Math.max(0, offset - s.window.maxPrefixChars - READ_SLACK);
    const before = document.getText(new vscode.Range(document.positionAt(beforeOffset), position));
    const after = document.getText(
      new vscode.Range(position, document.positionAt(offset + s.window.maxSuffixChars + READ_SLACK)),
    );

    const alternative = this.alternativeRequested;
    this.alternativeRequested = false;
    const abort = new AbortController();
    const subscription = token.onCancellationRequested(() => abort.abort());
    if (token.isCancellationRequested) abort.abort();
    try {
      const outcome = await this.engine.complete({
        editor: document.uri.toString(),
        filename: vscode.workspace.asRelativePath(document.uri),
        beforeOffset,
        alternative,
        languageId: document.languageId,
        before,
        after,
        signal: abort.signal,
      });
      this.lastOutcome = outcome;
      this.waiting =
        this.engine.currentState.kind === "warming"
          ? { uri: document.uri.toString(), version: document.version }
          : undefined;
      for (const l of this.outcomeListeners) l(outcome);
      if (!outcome.text || token.isCancellationRequested) return undefined;
      return new vscode.InlineCompletionList([
        new vscode.InlineCompletionItem(outcome.text, new vscode.Range(position, position)),
      ]);
    } finally {
      subscription.dispose();
    }
  }
}
