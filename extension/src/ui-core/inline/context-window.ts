// The text the model sees around the cursor for a fill-in-the-middle request. No `vscode` import:
// the provider hands in plain strings, so this is unit-tested under plain node.

export interface WindowLimits {
  /** Most characters of text before the cursor sent as the prefix. */
  maxPrefixChars: number;
  /** Most characters of text after the cursor sent as the suffix. */
  maxSuffixChars: number;
}

export const DEFAULT_WINDOW: WindowLimits = { maxPrefixChars: 3000, maxSuffixChars: 1000 };

export interface ContextWindow {
  prefix: string;
  suffix: string;
}

/**
 * Cuts `before` (everything up to the cursor, or at least its last maxPrefixChars + one line) and
 * `after` (from the cursor on) to the limits. Cuts fall on line boundaries when the window holds
 * more than one line, so the model never sees half a line at either edge — half lines make it
 * complete the wrong thing. The line holding the cursor is always kept whole up to the limit.
 * `beforeOffset` is the document offset where `before` starts (0: the document's start).
 */
export function contextWindow(
  before: string,
  after: string,
  limits: WindowLimits = DEFAULT_WINDOW,
  beforeOffset = 0,
): ContextWindow {
  let prefix = before;
  if (prefix.length > limits.maxPrefixChars) {
    // The front edge sits on a grid of document offsets a quarter of the limit apart, so it moves
    // once per quarter-limit typed, not with every keystroke: the worker keeps the prefix cached.
    const cursor = beforeOffset + before.length;
    const step = Math.max(1, Math.floor(limits.maxPrefixChars / 4));
    const front = Math.ceil((cursor - limits.maxPrefixChars) / step) * step;
    const cut = Math.max(0, front - beforeOffset);
    prefix = before.slice(cut);
    const firstBreak = prefix.indexOf("\n");
    // Drop the partial first line (unless the cut fell on a line start), never the cursor's own line.
    if (before[cut - 1] !== "\n" && firstBreak >= 0 && firstBreak < prefix.length - 1)
      prefix = prefix.slice(firstBreak + 1);
  }
  let suffix = after;
  if (suffix.length > limits.maxSuffixChars) {
    suffix = suffix.slice(0, limits.maxSuffixChars);
    const lastBreak = suffix.lastIndexOf("\n");
    if (lastBreak > 0) suffix = suffix.slice(0, lastBreak + 1);
  }
  return { prefix, suffix };
}

/**
 * Whether a completion makes sense at this cursor: not in the middle of a word or expression.
 * `lineAfter` is the rest of the cursor's line. Closing brackets, quotes, separators and spaces
 * after the cursor are fine (the typical "inside the parentheses" case); an identifier is not.
 */
export function cursorAllowsCompletion(lineAfter: string): boolean {
  return /^[\s)\]}>"'`;:,.]*$/.test(lineAfter);
}

/**
 * Whether to ask for several lines here (Continue's rules, simplified): only at the end of a line,
 * and only where a block starts — an empty line, or a line ending in an opener (`{ ( [ :` or `=>`) —
 * and never in a one-line comment. Elsewhere one line is what the user is writing.
 */
export function wantsMultiline(lineBefore: string, lineAfter: string): boolean {
  if (lineAfter.trim() !== "") return false;
  const line = lineBefore.trim();
  if (/^(\/\/|#|--|;)/.test(line)) return false;
  return line === "" || /([{([:]|=>)$/.test(line);
}

/** The indentation (spaces and tabs) a line starts with. */
export function indentOf(line: string): number {
  return line.length - line.trimStart().length;
}
