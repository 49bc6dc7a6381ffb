// Stop sequences on streamed text: text is released only once it cannot be the start of a stop
// sequence, so a client never sees any part of the stop string.

export class StopMatcher {
  private held = "";
  constructor(private readonly stops: string[]) {}

  /** Adds new text; returns what may be released now and whether a stop sequence was reached. */
  push(piece: string): { text: string; stopped: boolean } {
    if (!this.stops.length) return { text: piece, stopped: false };
    const buf = this.held + piece;
    let cut = -1;
    for (const s of this.stops) {
      const at = buf.indexOf(s);
      if (at !== -1 && (cut === -1 || at < cut)) cut = at;
    }
    if (cut !== -1) {
      this.held = "";
      return { text: buf.slice(0, cut), stopped: true };
    }
    // Hold back the longest tail that is a prefix of some stop sequence.
    let keep = 0;
    for (const s of this.stops)
      for (let n = Math.min(s.length - 1, buf.length); n > keep; n--)
        if (buf.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** Releases whatever is held (the generation ended without reaching a stop sequence). */
  flush(): string {
    const t = this.held;
    this.held = "";
    return t;
  }
}
