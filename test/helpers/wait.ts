// The one way tests wait for something to happen: poll a condition until it holds or a deadline
// passes. A fixed sleep would make a test either flaky (too short on a loaded machine) or slow (too
// long everywhere); a poll without a deadline would hang the suite when the feature is broken.

import { setTimeout as sleep } from "node:timers/promises";

export interface WaitOptions {
  /** Give up after this many milliseconds (required: every wait has a deadline). */
  timeout: number;
  /** What is awaited, for the error thrown at the deadline. */
  what: string;
  /** Pause between checks; default 20 ms. */
  intervalMs?: number;
}

/** What a poll returns once it holds: `cond && value` polls resolve with the value. */
export type Truthy<T> = Exclude<T, false | null | undefined | 0 | "" | 0n>;

/**
 * Resolves with the first truthy value `fn` returns (sync or async); rejects when `timeout` passes
 * first. An exception from `fn` is not retried: it fails the wait at once.
 */
export async function waitUntil<T>(fn: () => T | Promise<T>, opts: WaitOptions): Promise<Truthy<T>> {
  const deadline = Date.now() + opts.timeout;
  for (;;) {
    const value = await fn();
    if (value) return value as Truthy<T>;
    if (Date.now() >= deadline) throw new Error(`timed out after ${opts.timeout} ms waiting for ${opts.what}`);
    await sleep(opts.intervalMs ?? 20);
  }
}
