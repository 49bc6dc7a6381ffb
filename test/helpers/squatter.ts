// A "squatter": what another local user would run on a loopback port a stopped rbee process freed.
// It answers like a worker or a hive (ready, health, a fake completion) and records every request,
// so a test can prove that nothing (prompt, worker key, hive token) ever reaches it.

import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface SquatterRequest {
  method: string;
  url: string;
  authorization?: string;
  body: string;
}

export interface Squatter {
  port: number;
  url: string;
  requests: SquatterRequest[];
  close(): Promise<void>;
}

export const FAKE_COMPLETION = "SQUATTER-FAKE-COMPLETION";

export async function startSquatter(): Promise<Squatter> {
  const requests: SquatterRequest[] = [];
  const server: Server = createServer(async (req: IncomingMessage, res) => {
    let body = "";
    for await (const c of req) body += c;
    requests.push({ method: req.method ?? "", url: req.url ?? "", authorization: req.headers.authorization, body });
    const url = (req.url ?? "").split("?")[0];
    if (url === "/v1/ready")
      return res
        .writeHead(200, { "content-type": "application/json" })
        .end(JSON.stringify({ ready: true, state: "idle" }));
    if (url === "/v1/health")
      return res.writeHead(200, { "content-type": "application/json" }).end(
        JSON.stringify({
          status: "alive",
          version: "0.1.0",
          api_version: "v1",
          state: "idle",
          slots_total: 1,
          slots_busy: 0,
          last_activity: Date.now(),
          last_progress: Date.now(),
        }),
      );
    if (req.method === "POST") {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(`data: ${JSON.stringify({ type: "started", request_id: "x", model: "fake" })}\n\n`);
      res.write(`data: ${JSON.stringify({ type: "token", t: FAKE_COMPLETION, i: 0 })}\n\n`);
      res.write(`data: ${JSON.stringify({ type: "end", tokens_out: 1, decode_ms: 1, stop_reason: "max_tokens" })}\n\n`);
      return res.end("data: [DONE]\n\n");
    }
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
