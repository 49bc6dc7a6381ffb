// The one retry helper (hive-agent/src/util/retry.ts) that the hive client, the SSH connection, the
// keeper and the downloads share: how many tries, which waits, which failures, and abort. (Which failures by
// default, the errors' own retriable flag, is in coded-error.test.ts.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { maxAttempts, retry, retryDelay, sleep } from "../../hive-agent/src/util/retry";

test("a schedule gives its waits in order and one more try than waits; success ends the retrying", async () => {
  const waits: number[] = [];
  const tries: number[] = [];
  const r = await retry(
    async (attempt) => {
      tries.push(attempt);
      if (attempt < 3) throw new Error(`fail ${attempt}`);
      return "ok";
    },
    { delaysMs: [1, 2, 3] },
    { retryIf: () => true, onRetry: (_e, _n, delayMs) => waits.push(delayMs) },
  );
  assert.equal(r, "ok");
  assert.deepEqual(tries, [1, 2, 3]);
  assert.deepEqual(waits, [1, 2]);
  assert.equal(maxAttempts({ delaysMs: [1, 2, 3] }), 4);
  assert.equal(maxAttempts({ delaysMs: [] }), 1);
});

test("the last failure is thrown after the last try; a failure retryIf refuses is thrown at once", async () => {
  let tries = 0;
  await assert.rejects(
    retry(
      async (n) => {
        tries++;
        throw new Error(`fail ${n}`);
      },
      { attempts: 3, baseMs: 1, jitter: 0 },
      { retryIf: () => true },
    ),
    /fail 3/,
  );
  assert.equal(tries, 3);

  tries = 0;
  await assert.rejects(
    retry(
      async () => {
        tries++;
        throw new Error("permanent");
      },
      { attempts: 5, baseMs: 1, jitter: 0 },
      { retryIf: (e) => (e as Error).message !== "permanent" },
    ),
    /permanent/,
  );
  assert.equal(tries, 1);
});

test("exponential waits: baseMs × 2^(n−1), spread by the jitter and never beyond it", () => {
  assert.deepEqual(
    [1, 2, 3].map((n) => retryDelay({ attempts: 4, baseMs: 200, jitter: 0 }, n)),
    [200, 400, 800],
  );
  for (let i = 0; i < 200; i++) {
    const d = retryDelay({ attempts: 4, baseMs: 400, jitter: 0.25 }, 2);
    assert.ok(d >= 600 && d <= 1000, `${d} outside 800 ± 25 %`);
  }
});

test("an abort ends a wait at once with the signal's reason, and stops the retrying", async () => {
  const ac = new AbortController();
  let tries = 0;
  const pending = retry(
    async () => {
      tries++;
      queueMicrotask(() => ac.abort(new Error("stopped by the caller")));
      throw new Error("busy");
    },
    { delaysMs: [10 * 60_000] },
    { signal: ac.signal, retryIf: () => true },
  );
  // Without the abort this wait would outlast the test runner's limit: the test fails instead of passing slowly.
  await assert.rejects(pending, /stopped by the caller/);
  assert.equal(tries, 1);
  await assert.rejects(sleep(10, ac.signal), /stopped by the caller/, "an aborted signal does not wait at all");
});
