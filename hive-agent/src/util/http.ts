// HTTP plumbing shared by the hive and its workers: bearer auth, bounded JSON bodies,
// error envelopes and SSE writing. Everything here speaks protocol.ts's types.

import { timingSafeEqual, createHash } from "node:crypto";
import { chmodSync, lstatSync, unlinkSync } from "node:fs";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { serverProof, provenSocket } from "./server-proof";
import { request as httpRequest } from "node:http";
import {
  HELLO_PATH,
  RbeeError,
  SERVER_CHALLENGE_HEADER,
  SERVER_PROOF_HEADER,
  SSE_DONE,
  socketPathOf,
  unixAddress,
} from "../protocol";

/** Request bodies above this are refused (413): no request of the protocol needs more. */
export const MAX_BODY_BYTES = 4 << 20;

/** Constant-time comparison of the presented bearer token with the expected one(s). */
export function checkBearer(req: IncomingMessage, expected: string[]): void {
  const header = req.headers.authorization ?? "";
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  // Compare digests so the comparison takes the same time whatever the lengths.
  const presented = createHash("sha256")
    .update(m ? m[1] : "")
    .digest();
  let ok = false;
  for (const e of expected) {
    if (timingSafeEqual(presented, createHash("sha256").update(e).digest()) && m) ok = true;
  }
  if (!ok)
    throw new RbeeError(
      "INVALID_API_KEY",
      m ? "the bearer token is not valid for this node" : "missing 'Authorization: Bearer <token>' header",
    );
}

/** Limits that keep slow or idle clients from holding a server's descriptors (finding 5). */
export const SERVER_LIMITS = {
  /** The whole request (headers and body) must arrive within this; responses (streams) are not limited. */
  requestTimeoutMs: 30_000,
  headersTimeoutMs: 10_000,
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: 65_000,
  maxConnections: 256,
};

/** Options for createServer: check request and header timeouts every second (Node's default is 30 s). */
export const SERVER_OPTIONS = { connectionsCheckingInterval: 1000 };

/** Applies SERVER_LIMITS to a hive or worker server. */
export function limitServer(server: Server, limits: Partial<typeof SERVER_LIMITS> = {}): void {
  const l = { ...SERVER_LIMITS, ...limits };
  server.requestTimeout = l.requestTimeoutMs;
  server.headersTimeout = Math.min(l.headersTimeoutMs, l.requestTimeoutMs);
  server.keepAliveTimeout = l.keepAliveTimeoutMs;
  server.maxConnections = l.maxConnections;
}

/**
 * Listens on an address: `unix:<path>` (the socket is made 0600 inside the 0700 hive home) or,
 * where Unix sockets do not exist, `http://127.0.0.1:<port>`. Returns the address listened on.
 * A socket file left by a process that died is removed first; a live one is an error.
 */
export async function listenOn(server: Server, address: string): Promise<string> {
  const socketPath = socketPathOf(address);
  if (socketPath !== undefined) {
    if (Buffer.byteLength(socketPath) > 100)
      throw new Error(
        `the socket path ${socketPath} is too long for a Unix socket (over 100 bytes); set RBEE_HOME to a shorter folder`,
      );
    await removeStaleSocket(socketPath);
    await listen(server, { path: socketPath });
    chmodSync(socketPath, 0o600);
    return unixAddress(socketPath);
  }
  const u = new URL(address);
  if (u.hostname !== "127.0.0.1") throw new Error(`refusing to listen on ${address}: loopback (127.0.0.1) only`);
  await listen(server, { host: "127.0.0.1", port: Number(u.port || 0) });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function listen(server: Server, opts: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

async function removeStaleSocket(socketPath: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(socketPath).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new Error(`${socketPath} exists and is not a socket; remove it`);
  const alive = await new Promise<boolean>((resolve) => {
    const s = connect({ path: socketPath });
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
  if (alive) throw new Error(`another process already listens on ${socketPath}`);
  unlinkSync(socketPath);
}

/**
 * TCP fallback: answers GET /v1/hello (no bearer needed) with the proof that this server holds
 * `key`, so a client can tell it from a process that took over the port. Returns true if handled.
 */
export function answerHello(
  req: IncomingMessage,
  res: ServerResponse,
  key: string | ((req: IncomingMessage) => string | undefined),
): boolean {
  if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== HELLO_PATH) return false;
  const nonce = req.headers[SERVER_CHALLENGE_HEADER];
  if (typeof nonce !== "string" || !/^[A-Za-z0-9_-]{16,128}$/.test(nonce))
    throw new RbeeError(
      "INVALID_REQUEST",
      `GET ${HELLO_PATH} needs a ${SERVER_CHALLENGE_HEADER} header of 16-128 base64url characters`,
    );
  const k = typeof key === "string" ? key : key(req);
  if (k === undefined) throw new RbeeError("NOT_FOUND", `no key for ${HELLO_PATH} here`);
  res.writeHead(204, { [SERVER_PROOF_HEADER]: serverProof(k, nonce) });
  res.end();
  return true;
}

export async function readJson(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<unknown> {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > limit) {
    req.resume();
    throw new RbeeError("PAYLOAD_TOO_LARGE", `request body is larger than ${limit} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new RbeeError("PAYLOAD_TOO_LARGE", `request body is larger than ${limit} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new RbeeError("INVALID_REQUEST", `request body is not valid JSON: ${(e as Error).message}`);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
  res.end(data);
}

export function sendError(res: ServerResponse, err: unknown): void {
  const e = err instanceof RbeeError ? err : new RbeeError("INTERNAL", (err as Error)?.message ?? String(err));
  if (res.headersSent) {
    // Mid-stream: the envelope travels as an SSE error event instead.
    if (!res.writableEnded) {
      writeSse(res, { type: "error", code: e.code, message: e.message });
      endSse(res);
    }
    return;
  }
  // A refused caller gets no kept-alive socket to try again on (or to sit on).
  if (e.code === "INVALID_API_KEY") res.shouldKeepAlive = false;
  sendJson(res, e.status, e.toEnvelope());
}

export function startSse(res: ServerResponse): void {
  res.writeHead(200, {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    connection: "keep-alive",
    "x-accel-buffering": "no",
  });
  // Send headers now so the client sees the stream open before the first event.
  res.flushHeaders();
  res.socket?.setNoDelay(true);
}

export function writeSse(res: ServerResponse, event: unknown): void {
  res.write(`data: ${JSON.stringify(event)}\n\n`);
}

export function endSse(res: ServerResponse): void {
  res.end(`data: ${SSE_DONE}\n\n`);
}

/** Routes "/v1/workers/abc/shutdown" style paths: returns the captured segments or null. */
export function matchPath(pattern: RegExp, path: string): string[] | null {
  const m = pattern.exec(path);
  if (!m) return null;
  try {
    return m.slice(1).map(decodeURIComponent);
  } catch {
    throw new RbeeError("INVALID_REQUEST", `the path ${path.slice(0, 200)} has a malformed %-escape`);
  }
}

/**
 * One JSON call from the hive to a worker or from a worker to its hive, on the node: over the
 * peer's Unix socket, or (TCP fallback) on a connection whose server proved it holds `key` first.
 */
export async function callJson(
  address: string,
  method: "GET" | "POST",
  path: string,
  key: string,
  body: unknown,
  timeoutMs: number,
  extraHeaders: Record<string, string> = {},
): Promise<{ status: number; json: unknown }> {
  const socketPath = socketPathOf(address);
  // No agent on a socket (one connection per call); none either with createConnection, or Node would
  // hand the request to an agent that opens its own TCP connection instead of the proven one.
  const conn =
    socketPath !== undefined ? { socketPath, agent: false as const } : { createConnection: undefined as any };
  if (socketPath === undefined) {
    const sock = await provenSocket(Number(new URL(address).port), key, timeoutMs, extraHeaders);
    conn.createConnection = () => sock;
  }
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        ...conn,
        method,
        path,
        timeout: timeoutMs,
        headers: {
          ...extraHeaders,
          authorization: `Bearer ${key}`,
          connection: "close",
          ...(data ? { "content-type": "application/json", "content-length": Buffer.byteLength(data) } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > MAX_BODY_BYTES)
            req.destroy(new Error(`the answer to ${method} ${path} is larger than ${MAX_BODY_BYTES} bytes`));
          else chunks.push(c);
        });
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          try {
            resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : undefined });
          } catch {
            reject(new Error(`${method} ${path} answered ${res.statusCode} with a body that is not JSON`));
          }
        });
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out after ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(data);
  });
}
