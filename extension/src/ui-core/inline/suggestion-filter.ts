// Turns what the worker generated into ghost text worth showing, or nothing. Models completing the
// middle of a file often re-emit the code that follows the cursor; shown as ghost text, that would
// duplicate it on Tab.

/**
 * The suggestion to show for `completion` at a cursor followed by `suffix`, or undefined when
 * there is nothing new in it:
 *  - blank completions are dropped;
 *  - a completion that repeats the text after the cursor (ignoring leading whitespace) is dropped;
 *  - a completion whose first line is the next line of the document is dropped;
 *  - a completion that ends with the rest of the cursor's line (a closing bracket already there)
 *    loses that ending, so accepting it does not double the bracket.
 * Trailing whitespace is removed: as ghost text it only moves the cursor.
 */
export function cleanSuggestion(completion: string, suffix: string): string | undefined {
  let text = completion.replace(/\s+$/, "");
  if (!text.trim()) return undefined;

  const core = text.trim();
  if (suffix.trimStart().startsWith(core)) return undefined;

  const newline = suffix.indexOf("\n");
  const lineRest = (newline >= 0 ? suffix.slice(0, newline) : suffix).trim();
  if (newline >= 0) {
    const nextLine = suffix
      .slice(newline + 1)
      .split("\n", 1)[0]
      .trim();
    const firstLine = core.split("\n", 1)[0].trim();
    if (nextLine && firstLine === nextLine && !lineRest) return undefined;
  }

  if (lineRest && text.endsWith(lineRest)) {
    text = text.slice(0, text.length - lineRest.length).replace(/\s+$/, "");
    if (!text.trim()) return undefined;
  }
  return text;
}

/**
 * Cuts a multi-line suggestion before its first line (after the first) indented less than the
 * cursor's line: that line belongs to the enclosing block, which the user has already written.
 * (The worker stops there too, with n_indent; this also covers the part it had already sent.)
 */
export function trimToIndent(text: string, indent: number): string | undefined {
  const lines = text.split("\n");
  for (let i = 1; i < lines.length; i++) {
    const l = lines[i];
    if (l.trim() && l.length - l.trimStart().length < indent) {
      const kept = lines.slice(0, i).join("\n").replace(/\s+$/, "");
      return kept.trim() ? kept : undefined;
    }
  }
  return text;
}
