// Token frames of a worker's SSE streams, written after the next decode has been handed to llama.cpp
// instead of before it.
//
// Why: a frame written from the token callback goes out (Node corks the socket and writes it on the
// next tick) while the generation is still queueing its next token, so the writev syscall and the
// wake-up of the client sit between two decodes: 0.15–0.2 ms per token on a 2-core VM, ~5% of a
// 3 ms token (test/bench/FINDINGS.md §7). Held until the decode has been dispatched, the write runs
// while the compute threads work. Each stream's frames of one step go out as one write.
//
// The engine calls flush() one turn after each decode dispatch. A frame queued when no decode is on
// its way (none scheduled, no stream held at the step gate for the others) goes out on the next turn
// (the fallback), and a stream's last frames go out before its end or error event (take()). Every
// held stream is let go when the last one arrives or leaves, and then queues a decode: so no frame is
// held for longer than the step it belongs to.

import type { ServerResponse } from "node:http";

const TOKEN_PREFIX = 'data: {"type":"token","t":';

/**
 * The SSE frame of a token event, byte for byte what writeSse writes for
 * `{ type: "token", t, i }` (JSON.stringify keeps that key order), without stringifying an object.
 */
export function tokenFrame(text: string, index: number): string {
  return `${TOKEN_PREFIX}${JSON.stringify(text)},"i":${index}}\n\n`;
}

export class TokenFrames {
  private readonly pending = new Map<ServerResponse, string>();
  private fallbackArmed = false;

  /** `decodeComing`: whether a decode is about to be dispatched (Engine.decodeComing). */
  constructor(private readonly decodeComing: () => boolean = () => false) {}

  /** Queues a frame for `res`; it is written by the next flush(). */
  queue(res: ServerResponse, frame: string): void {
    const held = this.pending.get(res);
    this.pending.set(res, held === undefined ? frame : held + frame);
    if (!this.fallbackArmed) {
      this.fallbackArmed = true;
      setImmediate(this.fallback);
    }
  }

  /** Writes every queued frame (one write per stream). */
  flush = (): void => {
    if (this.pending.size === 0) return;
    for (const [res, data] of this.pending) if (!res.writableEnded && !res.destroyed) res.write(data);
    this.pending.clear();
  };

  /** Writes `res`'s queued frames now (before its end or error event) and forgets the stream. */
  take(res: ServerResponse): void {
    const data = this.pending.get(res);
    if (data === undefined) return;
    this.pending.delete(res);
    if (!res.writableEnded && !res.destroyed) res.write(data);
  }

  // A decode on its way (scheduled behind this callback, or about to be queued by the streams held
  // at the step gate) flushes after its dispatch: leave the frames to it. Waiting here instead would
  // keep an immediate pending and so spin the event loop until then.
  private readonly fallback = () => {
    this.fallbackArmed = false;
    if (!this.decodeComing()) this.flush();
  };
}
