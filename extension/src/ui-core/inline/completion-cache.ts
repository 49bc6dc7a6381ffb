// An LRU cache of inline completions that also serves a completion the user is typing into:
// after a suggestion S was shown for prefix P, the user who types the first characters of S gets
// the rest of S at once, with no request to the worker (and no flicker of the ghost text).
//
// Lookups compare only the last `tailChars` characters of the prefix and the first `tailChars` of
// the suffix. That keeps a hit under a millisecond for any document size, and it survives the
// context window sliding forward by the characters just typed (the window's start moves, the tail
// does not).

export interface CacheContext {
  /** What else decides the answer: the model (and node) asked, the language. */
  scope: string;
  prefix: string;
  suffix: string;
}

interface Entry {
  scope: string;
  /** The last tailChars characters of the prefix the completion was made for. */
  prefixTail: string;
  /** The prefix was shorter than tailChars: it is the whole document start. */
  prefixIsWhole: boolean;
  suffixHead: string;
  completion: string;
}

export class CompletionCache {
  /** Map order is recency order: the first key is the least recently used. */
  private readonly entries = new Map<string, Entry>();

  constructor(
    readonly capacity = 64,
    readonly tailChars = 256,
  ) {
    if (capacity < 1) throw new RangeError("the completion cache needs a capacity of at least 1");
    if (tailChars < 1) throw new RangeError("tailChars must be at least 1");
  }

  get size(): number {
    return this.entries.size;
  }

  set(ctx: CacheContext, completion: string): void {
    if (!completion) return;
    const entry: Entry = {
      scope: ctx.scope,
      prefixTail: ctx.prefix.slice(-this.tailChars),
      prefixIsWhole: ctx.prefix.length <= this.tailChars,
      suffixHead: ctx.suffix.slice(0, this.tailChars),
      completion,
    };
    const key = `${entry.scope}\u0000${entry.prefixTail}\u0000${entry.suffixHead}`;
    this.entries.delete(key);
    this.entries.set(key, entry);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
  }

  /**
   * The text still to suggest at this context, or undefined. An exact context match returns the
   * whole completion; a context that is a cached one plus typed characters that begin the cached
   * completion returns what remains after them. A completion typed out in full is no hit.
   */
  get(ctx: CacheContext): string | undefined {
    const suffixHead = ctx.suffix.slice(0, this.tailChars);
    // Most recent first: the entry the user is most likely typing into.
    const list = [...this.entries.entries()];
    for (let i = list.length - 1; i >= 0; i--) {
      const [key, e] = list[i];
      if (e.scope !== ctx.scope || e.suffixHead !== suffixHead) continue;
      const rest = this.remainder(e, ctx.prefix);
      if (rest === undefined) continue;
      this.entries.delete(key);
      this.entries.set(key, e);
      return rest;
    }
    return undefined;
  }

  clear(): void {
    this.entries.clear();
  }

  private remainder(e: Entry, prefix: string): string | undefined {
    // The typed characters, if any, are at the very end of the prefix, right after prefixTail.
    const maxTyped = e.completion.length - 1;
    const regionStart = Math.max(0, prefix.length - e.prefixTail.length - maxTyped);
    const region = prefix.slice(regionStart);
    let at = region.lastIndexOf(e.prefixTail);
    while (at >= 0) {
      const typed = region.slice(at + e.prefixTail.length);
      const startsDocument = regionStart + at === 0;
      if ((!e.prefixIsWhole || startsDocument) && e.completion.startsWith(typed))
        return e.completion.slice(typed.length);
      if (at === 0) break;
      at = region.lastIndexOf(e.prefixTail, at - 1);
    }
    return undefined;
  }
}
