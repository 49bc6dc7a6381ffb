// The in-flight policy of inline completions: at most one request per editor. A new request for an
// editor aborts the one before it (the abort travels to the worker as DELETE /v1/inference/{id}),
// and every request waits out a debounce first, so fast typing sends nothing until a pause.

export interface GateTicket {
  /** Aborted when a newer request for the same editor begins, or when the caller's signal aborts. */
  readonly signal: AbortSignal;
  /** Ends this request's claim on its editor; call it in a finally. */
  release(): void;
}

export class RequestGate {
  private readonly current = new Map<string, AbortController>();

  /** Starts a request for `key` (an editor), aborting the one in flight there. */
  begin(key: string, external?: AbortSignal): GateTicket {
    this.current.get(key)?.abort(new SupersededError());
    const controller = new AbortController();
    this.current.set(key, controller);
    const onExternal = () => controller.abort(external?.reason);
    if (external?.aborted) onExternal();
    else external?.addEventListener("abort", onExternal, { once: true });
    return {
      signal: controller.signal,
      release: () => {
        external?.removeEventListener("abort", onExternal);
        if (this.current.get(key) === controller) this.current.delete(key);
      },
    };
  }

  /** Number of editors with a request in flight. */
  get inFlight(): number {
    return this.current.size;
  }

  /** Aborts everything (the provider is disposed, or completions were switched off). */
  abortAll(): void {
    for (const c of this.current.values()) c.abort(new SupersededError());
    this.current.clear();
  }
}

export class SupersededError extends Error {
  constructor() {
    super("a newer completion request for this editor replaced this one");
    this.name = "SupersededError";
  }
}

/** Resolves true after `ms`, or false as soon as `signal` aborts (then no request should be sent). */
export function debounce(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  if (ms <= 0) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
