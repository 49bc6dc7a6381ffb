// MOCK of the Hugging Face hub (the real one cannot be reached here): a loopback HTTP server that
// serves the same paths the hub does (/api/models/{owner}/{repo}/revision/{rev}, /{owner}/{repo}/resolve/{rev}/{file})
// plus plain file URLs, with Range support and scripted failures for retry and resume tests.

import { createServer, type Server, type IncomingMessage, type ServerResponse } from "node:http";
import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";

export type Failure =
  /** Send this many bytes of the body, then destroy the connection. */
  | { kind: "cut"; afterBytes: number }
  /** Send headers and this many bytes, then go silent (the client's stall timer must fire). */
  | { kind: "stall"; afterBytes: number }
  | { kind: "status"; status: number };

export interface HostedFile {
  data: Buffer;
  /** Failures for the first requests of this file, in order; later requests succeed. */
  failures?: Failure[];
  /** Every request fails this way. */
  alwaysFail?: Failure;
  /** What the API reports as the LFS sha256 (defaults to the real one). */
  sha256?: string;
  /** Answer 302 to this location instead of serving data. */
  redirectTo?: string;
}

export interface RequestLog {
  path: string;
  range?: string;
  authorization?: string;
}

export class FakeHfHub {
  readonly requests: RequestLog[] = [];
  private server: Server;
  private files = new Map<string, HostedFile>(); // path → file
  private repos = new Map<string, string[]>(); // "owner/repo" → file names
  private openSockets = new Set<import("node:net").Socket>();

  constructor() {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on("connection", (s) => {
      this.openSockets.add(s);
      s.on("close", () => this.openSockets.delete(s));
    });
  }

  async start(port = 0): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, "127.0.0.1", () => resolve());
    });
    return this.url;
  }
  get url() {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
  async stop() {
    for (const s of this.openSockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }

  /** Serves a file at a plain path ("/files/x.gguf"). */
  host(path: string, file: HostedFile) {
    this.files.set(path, file);
  }

  /** Adds a file to a hub repository, reachable through the hub's API and resolve URLs. */
  hostInRepo(owner: string, repo: string, name: string, file: HostedFile) {
    const key = `${owner}/${repo}`;
    this.repos.set(key, [...(this.repos.get(key) ?? []), name]);
    this.files.set(`/${key}/resolve/main/${name}`, file);
  }

  private failureFor(path: string, f: HostedFile): Failure | undefined {
    if (f.alwaysFail) return f.alwaysFail;
    return f.failures?.shift();
  }

  private handle(req: IncomingMessage, res: ServerResponse) {
    const path = (req.url ?? "/").split("?")[0];
    this.requests.push({ path, range: req.headers.range, authorization: req.headers.authorization });
    const api = /^\/api\/models\/([^/]+)\/([^/]+)\/revision\/([^/]+)$/.exec(path);
    if (api) {
      const names = this.repos.get(`${api[1]}/${api[2]}`);
      if (!names) return void res.writeHead(404).end('{"error":"Repository not found"}');
      const siblings = names.map((n) => {
        const f = this.files.get(`/${api[1]}/${api[2]}/resolve/main/${n}`)!;
        return {
          rfilename: n,
          lfs: { sha256: f.sha256 ?? createHash("sha256").update(f.data).digest("hex"), size: f.data.length },
        };
      });
      res.writeHead(200, { "content-type": "application/json" });
      return void res.end(
        JSON.stringify({ id: `${api[1]}/${api[2]}`, siblings: [...siblings, { rfilename: "README.md" }] }),
      );
    }
    const file = this.files.get(path);
    if (!file) return void res.writeHead(404).end("not found");
    if (file.redirectTo) return void res.writeHead(302, { location: file.redirectTo }).end();
    const failure = this.failureFor(path, file);
    if (failure?.kind === "status") return void res.writeHead(failure.status).end("scripted failure");

    let start = 0;
    // ETag and If-Range as the hub has them: a range is served only for the same content.
    const etag = `"${createHash("sha256").update(file.data).digest("hex")}"`;
    const ifRange = req.headers["if-range"];
    const m = ifRange === undefined || ifRange === etag ? /^bytes=(\d+)-$/.exec(req.headers.range ?? "") : null;
    if (m) start = Number(m[1]);
    if (start >= file.data.length) return void res.writeHead(416).end();
    const body = file.data.subarray(start);
    res.writeHead(m ? 206 : 200, {
      "content-length": body.length,
      "accept-ranges": "bytes",
      etag,
      ...(m ? { "content-range": `bytes ${start}-${file.data.length - 1}/${file.data.length}` } : {}),
    });
    if (failure) {
      res.write(body.subarray(0, failure.afterBytes));
      if (failure.kind === "cut") setTimeout(() => res.destroy(), 20);
      return; // "stall": never finish
    }
    // Stream in chunks so progress is observable.
    let off = 0;
    const pump = () => {
      while (off < body.length) {
        const chunk = body.subarray(off, off + 256 * 1024);
        off += chunk.length;
        if (!res.write(chunk)) return void res.once("drain", pump);
      }
      res.end();
    };
    pump();
  }
}
