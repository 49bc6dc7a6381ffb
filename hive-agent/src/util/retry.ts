// One way to retry and to wait, for the keeper and the hive-agent alike: a policy says how many tries
// and how long to wait between them, and an AbortSignal ends the waiting. Waits are node:timers/promises'.

import { setTimeout as sleepFor } from "node:timers/promises";
import { isRetriable } from "./coded-error";

/** Exponential backoff: `attempts` tries in all; before retry n (n ≥ 1) wait baseMs × 2^(n−1) ± jitter. */
export interface RetryPolicy {
  attempts: number;
  baseMs: number;
  /** Spread of each wait, a fraction (0.25 = ± 25 %), so clients that failed together retry apart. */
  jitter: number;
}

/** Fixed waits: delaysMs[n − 1] before retry n, so delaysMs.length + 1 tries in all. */
export interface RetrySchedule {
  delaysMs: readonly number[];
}

export function maxAttempts(policy: RetryPolicy | RetrySchedule): number {
  return "delaysMs" in policy ? policy.delaysMs.length + 1 : Math.max(1, policy.attempts);
}

/** The wait before retry n (n ≥ 1). */
export function retryDelay(policy: RetryPolicy | RetrySchedule, n: number): number {
  if ("delaysMs" in policy) return policy.delaysMs[n - 1] ?? 0;
  return Math.round(policy.baseMs * 2 ** (n - 1) * (1 - policy.jitter + Math.random() * 2 * policy.jitter));
}

/** Waits ms; an aborted signal ends the wait at once by throwing its reason. */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  if (ms <= 0) return;
  try {
    await sleepFor(ms, undefined, { signal });
  } catch (e) {
    if (signal?.aborted) throw signal.reason;
    throw e;
  }
}

export interface RetryOptions {
  /** Aborting it ends a wait between tries (the signal's reason is thrown). */
  signal?: AbortSignal;
  /** Whether a failure may be retried; default: the failure says so itself (isRetriable: a CodedError's `retriable`,
   * a transient system or undici error). */
  retryIf?: (err: unknown, attempt: number) => boolean;
  /** Told before each wait: the failure, the try that failed (1-based), the wait. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/**
 * Runs fn until it resolves, retrying the failures `retryIf` allows (by default the retriable ones) as the policy says. The last
 * failure, or the first one that may not be retried, is thrown as it is.
 */
export async function retry<T>(
  fn: (attempt: number) => Promise<T>,
  policy: RetryPolicy | RetrySchedule,
  opts: RetryOptions = {},
): Promise<T> {
  const attempts = maxAttempts(policy);
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || !(opts.retryIf ?? isRetriable)(err, attempt)) throw err;
      const delayMs = retryDelay(policy, attempt);
      opts.onRetry?.(err, attempt, delayMs);
      await sleep(delayMs, opts.signal);
    }
  }
}
