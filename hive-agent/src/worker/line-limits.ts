// Code-completion stops that depend on the lines generated so far (llama.cpp's n_indent and
// t_max_predict_ms): a line indented less than the cursor's ends the block being completed, and
// a time budget ends generation at a line boundary (or, at twice the budget, wherever it is).

export class LineLimits {
  private sawNewline = false;
  /** The current line's text so far (after the last newline). */
  private line = "";

  constructor(
    private readonly opts: { n_indent?: number; t_max_predict_ms?: number },
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * Feeds released text; returns the index in `text` where a line indented by fewer than n_indent
   * characters begins (the text from there on is not to be sent), or -1.
   */
  push(text: string): number {
    const minIndent = this.opts.n_indent ?? 0;
    if (minIndent <= 0) {
      // Only the time budget needs anything, whether a line ended; not a string built per character.
      if (!this.sawNewline && text.includes("\n")) this.sawNewline = true;
      return -1;
    }
    for (let i = 0; i < text.length; i++) {
      const ch = text[i];
      if (ch === "\n") {
        this.sawNewline = true;
        this.line = "";
        continue;
      }
      this.line += ch;
      if (
        this.sawNewline &&
        minIndent > 0 &&
        ch !== " " &&
        ch !== "\t" &&
        this.line.trim().length === 1 &&
        this.line.length - 1 < minIndent
      )
        return Math.max(0, i - (this.line.length - 1)); // the line may have begun in earlier text
    }
    return -1;
  }

  /**
   * Whether the time budget is spent (counted from `since`, the first token): at a complete line
   * once it has passed (as llama.cpp), and at twice the budget whatever the line, so one endless
   * line cannot hold the user's suggestion back.
   */
  overBudget(since: number): boolean {
    const budget = this.opts.t_max_predict_ms;
    if (budget === undefined || budget <= 0) return false;
    const elapsed = this.now() - since;
    return elapsed > budget && (this.sawNewline || elapsed > 2 * budget);
  }
}
