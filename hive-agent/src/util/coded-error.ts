// One shape for every error rbee raises on purpose, on both sides (hive-agent and keeper): a stable
// code that tests, docs and the UI key on, a message that says what to do next, optional details,
// the cause, and whether trying again may help. Each family (RbeeError: the hive protocol,
// NodeError: SSH and deploy, RegistryError: the keeper's registry) decides `retriable` in one table
// next to its codes; the helpers below also read errors rbee did not make (Node's system errors,
// undici's, and those wrapped as a `cause`), so no caller matches codes by hand.

export interface CodedErrorOptions {
  cause?: unknown;
}

export abstract class CodedError<C extends string = string> extends Error {
  constructor(
    readonly code: C,
    message: string,
    readonly details?: Record<string, unknown>,
    options?: CodedErrorOptions,
  ) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
  }

  /** Whether the same operation, tried again, may succeed (a dropped connection) or cannot (a refused key). A getter,
   * so it is not one more own property on errors that are compared or serialised. */
  abstract get retriable(): boolean;
}

/**
 * Failures of the operating system or of undici that are transient: the peer was not there yet, the
 * connection broke or timed out. Anything else from outside rbee (EACCES, ENOSPC, a TypeError) is not
 * retried: trying again would fail the same way.
 */
const TRANSIENT_SYSTEM_CODES: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
]);

/** How deep a chain of causes is followed (fetch's TypeError → undici's error → the socket's errno). */
const MAX_CAUSE_DEPTH = 4;

function* causeChain(e: unknown): Generator<object> {
  let x = e;
  for (let depth = 0; depth < MAX_CAUSE_DEPTH && typeof x === "object" && x !== null; depth++) {
    yield x;
    x = (x as { cause?: unknown }).cause;
  }
}

/**
 * The code of an error: a CodedError's own, else a system or undici error's (`ECONNREFUSED`,
 * `UND_ERR_SOCKET`), else the first one found among its causes; undefined for an error with none.
 */
export function errorCode(e: unknown): string | undefined {
  for (const x of causeChain(e)) {
    const code = (x as { code?: unknown }).code;
    if (typeof code === "string") return code;
  }
  return undefined;
}

/**
 * Whether trying again may help: a CodedError says so itself (its family's table); a system or
 * undici error when its code is a transient one; an error without a code when its cause is one of
 * those (fetch's "fetch failed" around a refused connection, an HTTP client's error around a dropped SSH channel).
 */
export function isRetriable(e: unknown): boolean {
  for (const x of causeChain(e)) {
    if (x instanceof CodedError) return x.retriable;
    const code = (x as { code?: unknown }).code;
    if (typeof code === "string") return TRANSIENT_SYSTEM_CODES.has(code);
  }
  return false;
}
