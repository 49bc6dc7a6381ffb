// Token frames of a worker's SSE streams, written after the next decode has been handed to llama.cpp
// instead of before it.
//
// Why: a frame written from the token callback goes out (Node corks the socket and writes it on the
// next tick) while the generation is still queueing its next token, so the writev syscall and the
// wake-up of the client sit between two decodes: 0.15–0.2 ms per token on a 2-core VM, ~5% of a
// 3 ms token (test/bench/FINDINGS.md §7). Held until the decode has been dispatched, the write runs
// while the compute threads work. Each stream's frames of one step go out as one write.
//
// And at most one write per stream per FRAME_COALESCE_MS (the first token's frame at once): each write
// wakes the client, and on a 2-core node every wake-up takes a core from llama.cpp's compute threads,
// which wait for each other at every barrier. Coalesced, the worker went from 0.83 to 0.96 of
// node-llama-cpp in-process at 2 threads, and from 0.94 to 0.98 at 1 (FINDINGS §7f); an editor shows
// text no faster than that anyway, and a stream's last frames still go out at once with its end.
//
// The engine calls flush() one turn after each decode dispatch. A frame queued when no decode is on
// its way (none scheduled, no stream held at the step gate for the others) goes out on the next turn
// (the fallback), and a stream's last frames go out before its end or error event (take()). Every
// held stream is let go when the last one arrives or leaves, and then queues a decode: so no frame is
// held for longer than its stream's window and the step after it.

import type { ServerResponse } from "node:http";

const TOKEN_PREFIX = 'data: {"type":"token","t":';

/** The shortest time between two writes of token frames to one stream, in ms. */
export const FRAME_COALESCE_MS = 20;

/**
 * The SSE frame of a token event, byte for byte what writeSse writes for
 * `{ type: "token", t, i }` (JSON.stringify keeps that key order), without stringifying an object.
 */
export function tokenFrame(text: string, index: number): string {
  return `${TOKEN_PREFIX}${JSON.stringify(text)},"i":${index}}\n\n`;
}

export class TokenFrames {
  private readonly pending = new Map<ServerResponse, string>();
  /** When each stream was last written to (performance.now()). */
  private readonly lastWrite = new Map<ServerResponse, number>();
  private fallbackArmed = false;
  private timer?: NodeJS.Timeout;

  /**
   * `decodeComing`: whether a decode is about to be dispatched (Engine.decodeComing).
   * `coalesceMs`: a stream written to less than this long ago keeps its frames for a later write.
   */
  constructor(
    private readonly decodeComing: () => boolean = () => false,
    private readonly coalesceMs = FRAME_COALESCE_MS,
  ) {}

  /** Queues a frame for `res`; it is written by the next flush(). */
  queue(res: ServerResponse, frame: string): void {
    const held = this.pending.get(res);
    this.pending.set(res, held === undefined ? frame : held + frame);
    if (!this.fallbackArmed) {
      this.fallbackArmed = true;
      setImmediate(this.fallback);
    }
  }

  /** Writes every queued frame (one write per stream) of the streams not written to within coalesceMs. */
  flush = (): void => {
    if (this.pending.size === 0) return;
    const now = performance.now();
    let wait = Infinity;
    for (const [res, data] of this.pending) {
      const last = this.lastWrite.get(res);
      if (last !== undefined && now - last < this.coalesceMs) {
        wait = Math.min(wait, this.coalesceMs - (now - last));
        continue;
      }
      this.pending.delete(res);
      this.lastWrite.set(res, now);
      write(res, data);
    }
    // Held frames go out with the first decode's flush once their time is up, or at that time when no
    // decode is on its way (a long prompt being evaluated, the stream's own end coming).
    if (this.pending.size && !this.timer)
      this.timer = setTimeout(() => {
        this.timer = undefined;
        if (this.decodeComing()) return;
        this.flush();
      }, Math.ceil(wait));
  };

  /** Writes `res`'s queued frames now (before its end or error event) and forgets the stream. */
  take(res: ServerResponse): void {
    this.lastWrite.delete(res);
    const data = this.pending.get(res);
    if (data === undefined) return;
    this.pending.delete(res);
    write(res, data);
  }

  // A decode on its way (scheduled behind this callback, or about to be queued by the streams held
  // at the step gate) flushes after its dispatch: leave the frames to it. Waiting here instead would
  // keep an immediate pending and so spin the event loop until then.
  private readonly fallback = () => {
    this.fallbackArmed = false;
    if (!this.decodeComing()) this.flush();
  };
}

/** Writes to a stream the client has not closed. */
function write(res: ServerResponse, data: string): void {
  if (!res.writableEnded && !res.destroyed) res.write(data);
}
