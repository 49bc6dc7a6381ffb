// Polling with a deadline: tests wait for a condition, never for a fixed time.

export async function waitUntil(fn: () => boolean | Promise<boolean>, opts: { timeout: number; what: string; intervalMs?: number }): Promise<void> {
  const deadline = Date.now() + opts.timeout;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${opts.timeout} ms waiting for ${opts.what}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
  }
}
