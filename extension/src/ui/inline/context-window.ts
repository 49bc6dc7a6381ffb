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
 */
export function contextWindow(before: string, after: string, limits: WindowLimits = DEFAULT_WINDOW): ContextWindow {
  let prefix = before;
  if (prefix.length > limits.maxPrefixChars) {
    prefix = prefix.slice(prefix.length - limits.maxPrefixChars);
    const firstBreak = prefix.indexOf("\n");
    // Drop the partial first line, but never the cursor's own line.
    if (firstBreak >= 0 && firstBreak < prefix.length - 1) prefix = prefix.slice(firstBreak + 1);
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
