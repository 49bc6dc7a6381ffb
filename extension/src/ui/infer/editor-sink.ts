// Streams text into a document as it arrives. Edits are applied one at a time; tokens that arrive
// while an edit is in flight are batched into the next one, so a fast worker never queues up
// thousands of edits and the text always lands in order.
//
// The user may type into the document while it streams: the insertion point is kept as an offset
// and moved by every edit that is not ours (text typed before it pushes it on, typing after it
// leaves it alone), so the answer keeps landing after what it wrote. Only a closed document stops it.

import * as vscode from "vscode";

/** How often one batch of text is offered to a document the user keeps typing into, and the wait between. */
const MAX_ATTEMPTS = 50;
const RETRY_WAIT_MS = 100;
/** How much of the end of the written text anchors the insertion point. */
const TAIL = 64;

export class DocumentAppender implements vscode.Disposable {
  private pending = "";
  private inFlight: Promise<void> | undefined;
  private offset: number;
  private failed: Error | undefined;
  /** Our insert on its way: its change event is ours, not the user's. */
  private expecting: { offset: number; text: string } | undefined;
  /** The end of what we wrote so far (up to TAIL characters): the next insert must follow it. */
  private tail = "";
  private readonly subscription: vscode.Disposable;

  constructor(
    private readonly document: vscode.TextDocument,
    start: vscode.Position,
    /** Called once when the text can no longer be written (the document was closed). */
    private readonly onFailed: (e: Error) => void = () => {},
  ) {
    this.offset = document.offsetAt(start);
    this.subscription = vscode.workspace.onDidChangeTextDocument((e) => {
      if (e.document === this.document) for (const c of e.contentChanges) this.follow(c);
    });
  }

  /** Where the next text goes (just after what was written so far). */
  get end(): vscode.Position {
    return this.document.positionAt(this.offset);
  }

  /** Why writing stopped, if it did. */
  get error(): Error | undefined {
    return this.failed;
  }

  push(text: string): void {
    if (!text || this.failed) return;
    this.pending += text;
    this.inFlight ??= this.drain();
  }

  /** Resolves once everything pushed so far is in the document. */
  async flush(): Promise<void> {
    while (this.inFlight) await this.inFlight;
    if (this.failed) throw this.failed;
  }

  dispose() {
    this.subscription.dispose();
  }

  private follow(c: vscode.TextDocumentContentChangeEvent) {
    const x = this.expecting;
    if (x && c.rangeOffset === x.offset && c.rangeLength === 0 && c.text === x.text) {
      this.offset = x.offset + x.text.length;
      this.expecting = undefined;
      return;
    }
    const end = c.rangeOffset + c.rangeLength;
    if (end <= this.offset)
      this.offset += c.text.length - c.rangeLength; // before the insertion point
    else if (c.rangeOffset < this.offset) this.offset = c.rangeOffset + c.text.length; // replaced across it
    if (x && c.rangeOffset <= x.offset) this.expecting = { ...x, offset: this.offset };
  }

  /**
   * The insertion point, checked against the document: an edit that landed somewhere other than asked
   * (a WorkspaceEdit applied at a stale position, see insert(), or another extension's edit the offset
   * arithmetic misreads) leaves a point that drifted, and a point off by even one character would put
   * later tokens in front of earlier ones. Where the text before the offset is not the end of what we
   * wrote, the point moves to just after the nearest copy of it.
   */
  private anchored(): number {
    const tail = this.tail;
    if (!tail) return this.offset;
    const doc = this.document.getText();
    const at = Math.min(this.offset, doc.length);
    if (doc.slice(Math.max(0, at - tail.length), at) === tail) return (this.offset = at);
    const before = doc.lastIndexOf(tail, at);
    const after = doc.indexOf(tail, at);
    const best = [before, after].filter((i) => i >= 0).sort((a, b) => Math.abs(a - at) - Math.abs(b - at))[0];
    if (best !== undefined) this.offset = best + tail.length;
    return this.offset;
  }

  /**
   * Inserts `text` at `at` unless the document changed since the extension host last saw it. Through an
   * editor that shows the document the check and the edit happen together. A WorkspaceEdit is checked
   * first and applied after an await in the workbench, so keystrokes that land in between make it
   * apply at a stale position, in the middle of the text (seen under load). Without a visible editor
   * nobody can type into the document, and the WorkspaceEdit is safe.
   */
  private async insert(at: vscode.Position, text: string): Promise<boolean> {
    const editor = vscode.window.visibleTextEditors.find((e) => e.document === this.document);
    if (editor) return editor.edit((b) => b.insert(at, text)).then(undefined, () => false); // closed meanwhile
    const edit = new vscode.WorkspaceEdit();
    edit.insert(this.document.uri, at, text);
    return vscode.workspace.applyEdit(edit);
  }

  /** Resolves at the document's next change, or after a short while when none comes. */
  private nextChange(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, RETRY_WAIT_MS);
      const sub = vscode.workspace.onDidChangeTextDocument((e) => e.document === this.document && done());
      function done() {
        clearTimeout(timer);
        sub.dispose();
        resolve();
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending && !this.failed) {
        const text = this.pending;
        this.pending = "";
        let written = false;
        // VS Code refuses an edit made against a version the user has typed past ("has changed in
        // the meantime"): wait until their change has reached us (it moves the offset), then retry.
        for (let attempt = 0; attempt < MAX_ATTEMPTS && !written; attempt++) {
          if (this.document.isClosed) break;
          if (attempt > 0) await this.nextChange();
          const at = this.anchored();
          this.expecting = { offset: at, text };
          written = await this.insert(this.document.positionAt(at), text);
          if (written && this.expecting) this.offset = this.expecting.offset + text.length; // no change event seen
          this.expecting = undefined;
        }
        if (written) this.tail = (this.tail + text).slice(-TAIL);
        if (!written) {
          this.failed = new Error(
            this.document.isClosed
              ? "the output editor was closed"
              : `could not write into ${this.document.uri.toString()}`,
          );
          this.onFailed(this.failed);
        }
      }
    } finally {
      this.inFlight = undefined;
    }
  }
}

/** The position just after `text` inserted at `p`. */
export function advance(p: vscode.Position, text: string): vscode.Position {
  const lines = text.split("\n");
  if (lines.length === 1) return p.translate(0, text.length);
  return new vscode.Position(p.line + lines.length - 1, lines[lines.length - 1].length);
}
