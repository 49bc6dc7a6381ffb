// HTTP plumbing shared by the hive and its workers: bearer auth, bounded JSON bodies,
// error envelopes and SSE writing. Everything here speaks protocol.ts's types.

import { timingSafeEqual, createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { RbeeError, SSE_DONE } from "../protocol";

/** Request bodies above this are refused (413): no request of the protocol needs more. */
export const MAX_BODY_BYTES = 4 << 20;

/** Constant-time comparison of the presented bearer token with the expected one(s). */
export function checkBearer(req: IncomingMessage, expected: string[]): void {
  const header = req.headers.authorization ?? "";
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  // Compare digests so the comparison takes the same time whatever the lengths.
  const presented = createHash("sha256").update(m ? m[1] : "").digest();
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
  return m ? m.slice(1).map(decodeURIComponent) : null;
}
