// POSIX shell quoting for commands run on a node over SSH (the remote side always runs them
// through the user's login shell, so every interpolated value must be quoted).

/** Quotes one word for sh: 'it'\''s' — safe for any byte string without NUL. */
export function shQuote(word: string): string {
  if (word.includes("\0")) throw new Error("a shell word cannot contain NUL");
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}
