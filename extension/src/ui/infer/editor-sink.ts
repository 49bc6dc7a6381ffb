// Streams text into a document as it arrives. Edits are applied one at a time; tokens that arrive
// while an edit is in flight are batched into the next one, so a fast worker never queues up
// thousands of edits and the text always lands in order.

import * as vscode from "vscode";

export class DocumentAppender {
  private pending = "";
  private inFlight: Promise<void> | undefined;
  private position: vscode.Position;
  private failed: Error | undefined;

  constructor(
    private readonly document: vscode.TextDocument,
    start: vscode.Position,
  ) {
    this.position = start;
  }

  /** Where the next text goes (just after what was written so far). */
  get end(): vscode.Position {
    return this.position;
  }

  push(text: string): void {
    if (!text) return;
    this.pending += text;
    this.inFlight ??= this.drain();
  }

  /** Resolves once everything pushed so far is in the document. */
  async flush(): Promise<void> {
    while (this.inFlight) await this.inFlight;
    if (this.failed) throw this.failed;
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending && !this.failed) {
        const text = this.pending;
        this.pending = "";
        const edit = new vscode.WorkspaceEdit();
        edit.insert(this.document.uri, this.position, text);
        if (!(await vscode.workspace.applyEdit(edit))) {
          this.failed = new Error(`could not write into ${this.document.uri.toString()} (was it closed?)`);
          break;
        }
        this.position = advance(this.position, text);
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
