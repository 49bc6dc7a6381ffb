// One way to time a token stream, shared by every engine in the bench so the figures compare:
// first-token time runs from the request to the first token; decode speed is the tokens after the
// first divided by the wall time between the first and the last token (the prompt is not in it).

export interface StreamTiming {
  /** Milliseconds from sending the request to receiving the first generated token. */
  firstTokenMs: number;
  /** Generated tokens received. */
  tokens: number;
  /** Milliseconds between the first and the last token. */
  decodeMs: number;
  /** (tokens - 1) / decode seconds: the steady decode rate seen by the client. */
  decodeTokPerS: number;
}

export class TokenClock {
  private readonly start = performance.now();
  private first = 0;
  private last = 0;
  private count = 0;

  /** Call when `n` tokens arrive (a stream event may carry more than one). */
  tokens(n: number): void {
    if (n <= 0) return;
    const now = performance.now();
    if (this.count === 0) this.first = now;
    this.last = now;
    this.count += n;
  }

  /** Tokens received so far. */
  get received(): number {
    return this.count;
  }

  result(): StreamTiming {
    if (this.count === 0) throw new Error("the stream produced no token");
    const decodeMs = this.last - this.first;
    return {
      firstTokenMs: this.first - this.start,
      tokens: this.count,
      decodeMs,
      decodeTokPerS: this.count > 1 && decodeMs > 0 ? ((this.count - 1) * 1000) / decodeMs : 0,
    };
  }
}

export function median(values: number[]): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
