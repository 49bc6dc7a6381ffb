// Model downloads with progress, resume, retries and a stall limit (docs/protocol.md; docs/edge-cases.md, EC2).
// Each download runs once per ref at a time; any number of listeners follow its progress events.

import {
  closeSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { randomUUID } from "node:crypto";
import path from "node:path";
import { once } from "node:events";
import { RbeeError, type DownloadProgressEvent } from "../protocol";
import type { Logger } from "../util/log";
import { retry } from "../util/retry";
import { errorCode, isRetriable } from "../util/coded-error";
import { Catalog, sha256File } from "./catalog";
import { catalogPathOf, isLoopback, parseModelRef, pickQuantization, type ModelRef } from "./model-ref";

export interface DownloadOptions {
  maxAttempts: number;
  /** First retry delay; doubles each attempt, with ±20% jitter. */
  backoffBaseMs: number;
  /** A connection that delivers no byte for this long is dropped and retried. */
  stallTimeoutMs: number;
  /** A server that has not answered a request's headers within this long is dropped and retried. */
  headerTimeoutMs: number;
  hfEndpoint: string;
  hfToken?: string;
  /** A model larger than this is refused (the node's disk is not the internet's). */
  maxBytes: number;
  /** How long a finished download's events stay available to followers. */
  retainFinishedMs: number;
}

/** Redirects followed per request, each checked like the first URL. */
const MAX_REDIRECTS = 5;
/** Every GGUF file starts with these four bytes. */
const GGUF_MAGIC = Buffer.from("GGUF");

export const DEFAULT_DOWNLOAD_OPTIONS: DownloadOptions = {
  maxAttempts: 6,
  backoffBaseMs: 1000,
  stallTimeoutMs: 60_000,
  headerTimeoutMs: 30_000,
  hfEndpoint: "https://huggingface.co",
  maxBytes: 256 * 2 ** 30,
  retainFinishedMs: 10 * 60_000,
};

type Listener = (e: DownloadProgressEvent) => void;

interface Download {
  id: string;
  modelRef: string;
  events: DownloadProgressEvent[];
  listeners: Set<Listener>;
  done: boolean;
  /** Aborted by cancel(): stops the request in flight and the wait before a retry. */
  abort: AbortController;
}

/** A download failure that retrying cannot fix, whatever its code says in general (a DOWNLOAD_FAILED for a refused
 * token or a file that is not GGUF): the one exception to the protocol's retriable table. */
class PermanentError extends RbeeError {
  override get retriable(): boolean {
    return false;
  }
}

export class Downloads {
  private byId = new Map<string, Download>();
  private active = new Map<string, Download>(); // by model ref

  constructor(
    private readonly catalog: Catalog,
    private readonly opts: DownloadOptions,
    private readonly log: Logger,
  ) {}

  start(modelRef: string, sha256?: string): string {
    const ref = parseModelRef(modelRef);
    if (ref.kind === "file" || ref.kind === "catalog")
      throw new RbeeError(
        "INVALID_REQUEST",
        `model_ref "${modelRef}" names a local file; only hf: and https: refs can be downloaded`,
        { field: "model_ref" },
      );
    const running = this.active.get(modelRef);
    if (running) return running.id;
    const d: Download = {
      id: randomUUID(),
      modelRef,
      events: [],
      listeners: new Set(),
      done: false,
      abort: new AbortController(),
    };
    this.byId.set(d.id, d);
    this.active.set(modelRef, d);
    void this.run(d, ref, sha256).finally(() => {
      d.done = true;
      this.active.delete(modelRef);
      d.listeners.clear();
      // Late followers get the outcome for a while; then the record goes (a long-lived hive would
      // otherwise keep every download it ever made).
      setTimeout(() => this.byId.delete(d.id), this.opts.retainFinishedMs).unref();
    });
    return d.id;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** Stops a download (its followers get an error event REQUEST_CANCELLED); false when it had ended. */
  cancel(id: string): boolean {
    const d = this.byId.get(id);
    if (!d) throw new RbeeError("NOT_FOUND", `no download with id ${id}`);
    if (d.done || d.abort.signal.aborted) return false;
    d.abort.abort();
    return true;
  }

  /** Replays what happened so far, then follows. Returns an unsubscribe function. */
  follow(id: string, listener: Listener): () => void {
    const d = this.byId.get(id);
    if (!d) throw new RbeeError("NOT_FOUND", `no download with id ${id}`);
    for (const e of d.events) listener(e);
    if (!d.done) d.listeners.add(listener);
    return () => d.listeners.delete(listener);
  }

  private emit(d: Download, e: DownloadProgressEvent) {
    // Keep the replay short: only the latest "downloading" event matters to a late follower.
    const last = d.events[d.events.length - 1];
    if (e.stage === "downloading" && last?.stage === "downloading") d.events[d.events.length - 1] = e;
    else d.events.push(e);
    for (const l of d.listeners) l(e);
  }

  private async run(d: Download, ref: Exclude<ModelRef, { kind: "file" | "catalog" }>, expectedSha?: string) {
    const cancel = d.abort.signal;
    const attempt = async (n: number) => {
      const { url, file, sha256 } = await this.resolve(ref, cancel);
      const want = expectedSha ?? sha256;
      const dest = this.catalog.pathInside(file);
      await this.fetchTo(d, url, dest, n, cancel);
      this.emit(d, { stage: "verifying" });
      const got = await sha256File(dest + ".part");
      if (want && got !== want) {
        rmSync(dest + ".part", { force: true });
        rmSync(dest + ".part.json", { force: true });
        throw new RbeeError("DOWNLOAD_FAILED", `checksum mismatch: expected sha256 ${want}, got ${got}`);
      }
      if (!startsWithMagic(dest + ".part")) {
        rmSync(dest + ".part", { force: true });
        rmSync(dest + ".part.json", { force: true });
        throw new PermanentError(
          "DOWNLOAD_FAILED",
          `${d.modelRef} is not a GGUF model (the file does not start with "GGUF"); nothing was stored`,
        );
      }
      rmSync(dest + ".part.json", { force: true });
      renameSync(dest + ".part", dest);
      this.catalog.record(d.modelRef, dest, got);
      this.emit(d, { stage: "complete", local_path: dest, size_bytes: statSync(dest).size, sha256: got });
      this.log.info(`downloaded ${d.modelRef} to ${dest}`);
    };
    try {
      await retry(
        attempt,
        { attempts: this.opts.maxAttempts, baseMs: this.opts.backoffBaseMs, jitter: 0.2 },
        {
          // Cancel (DELETE on the download) ends the attempt in flight and the wait before the next.
          signal: cancel,
          retryIf: (e) => isRetriable(e) && !cancel.aborted,
          onRetry: (e, n, delay) => {
            const message = (e as Error).message;
            this.log.warn(
              `download of ${d.modelRef}, attempt ${n}/${this.opts.maxAttempts} failed: ${message}; retrying in ${delay} ms`,
            );
            this.emit(d, {
              stage: "retrying",
              attempt: n,
              max_attempts: this.opts.maxAttempts,
              delay_ms: delay,
              message,
            });
          },
        },
      );
    } catch (e) {
      if (cancel.aborted) {
        this.log.info(`download of ${d.modelRef} cancelled`);
        this.emit(d, {
          stage: "error",
          code: "REQUEST_CANCELLED",
          message: `the download of ${d.modelRef} was cancelled`,
        });
      } else if (e instanceof RbeeError && !e.retriable)
        this.emit(d, { stage: "error", code: e.code, message: e.message });
      else
        this.emit(d, {
          stage: "error",
          code: "DOWNLOAD_FAILED",
          message: `download of ${d.modelRef} failed after ${this.opts.maxAttempts} attempts: ${(e as Error).message}`,
        });
    }
  }

  private headers(url: string): Record<string, string> {
    // The Hugging Face token goes only to the Hugging Face endpoint's own origin (scheme, host and
    // port): never to a look-alike host or another port, and never along a redirect elsewhere.
    if (this.opts.hfToken && sameOrigin(url, this.opts.hfEndpoint))
      return { authorization: `Bearer ${this.opts.hfToken}` };
    return {};
  }

  /**
   * fetch() with redirects followed by hand: each hop is checked (https, or loopback only when the
   * download started on loopback; no private or link-local address unless it started on one), and
   * headers (the token) are recomputed per hop.
   */
  private async fetchChecked(
    url: string,
    init: { headers?: Record<string, string>; signal?: AbortSignal },
  ): Promise<Response> {
    const first = new URL(url);
    let current = first;
    for (let hop = 0; ; hop++) {
      await checkDestination(current, first);
      const res = await fetch(current, {
        ...init,
        headers: { ...init.headers, ...this.headers(current.toString()) },
        redirect: "manual",
      });
      if (res.status < 300 || res.status >= 400 || !res.headers.get("location")) return res;
      await res.body?.cancel();
      if (hop >= MAX_REDIRECTS)
        throw new PermanentError("DOWNLOAD_FAILED", `${first}: more than ${MAX_REDIRECTS} redirects`);
      current = new URL(res.headers.get("location")!, current);
    }
  }

  /** Turns a ref into the URL to fetch, the catalog path to store it at, and a known checksum. */
  private async resolve(
    ref: Exclude<ModelRef, { kind: "file" | "catalog" }>,
    cancel: AbortSignal,
  ): Promise<{ url: string; file: string; sha256?: string }> {
    if (ref.kind === "url") return { url: ref.url.toString(), file: catalogPathOf(ref) };
    const base = this.opts.hfEndpoint.replace(/\/$/, "");
    const api = `${base}/api/models/${ref.owner}/${ref.repo}/revision/${ref.revision}?blobs=true`;
    // The whole metadata request (connect, headers, body) is bounded: a server that accepts and never answers must not hang the download.
    const signal = AbortSignal.any([cancel, AbortSignal.timeout(this.opts.headerTimeoutMs)]);
    const res = await this.fetchChecked(api, { signal }).catch((e) => {
      if (cancel.aborted || e instanceof RbeeError) throw e;
      throw networkError(base, e, this.opts.headerTimeoutMs);
    });
    if (res.status === 404)
      throw new PermanentError(
        "MODEL_NOT_FOUND",
        `no repository ${ref.owner}/${ref.repo} (revision ${ref.revision}) at ${base}`,
      );
    if (res.status === 401 || res.status === 403)
      throw new PermanentError(
        "DOWNLOAD_FAILED",
        `${base} refused access to ${ref.owner}/${ref.repo} (HTTP ${res.status}); set HF_TOKEN on the node for gated or private repositories`,
      );
    if (!res.ok) throw new RbeeError("DOWNLOAD_FAILED", `${api.split("?")[0]}: HTTP ${res.status}`);
    const info = (await res.json().catch((e) => {
      throw cancel.aborted ? e : networkError(base, e, this.opts.headerTimeoutMs);
    })) as { siblings?: { rfilename: string; lfs?: { sha256?: string } }[] };
    const siblings = info.siblings ?? [];
    const file = ref.file ?? pickQuantization(siblings.map((s) => s.rfilename));
    if (!file) throw new PermanentError("MODEL_NOT_FOUND", `repository ${ref.owner}/${ref.repo} has no .gguf file`);
    const sibling = siblings.find((s) => s.rfilename === file);
    if (!sibling)
      throw new PermanentError("MODEL_NOT_FOUND", `repository ${ref.owner}/${ref.repo} has no file ${file}`);
    return {
      url: `${base}/${ref.owner}/${ref.repo}/resolve/${ref.revision}/${file}`,
      file: catalogPathOf(ref, file),
      sha256: sibling.lfs?.sha256,
    };
  }

  /** One attempt: resumes from dest.part when the server supports ranges. */
  private async fetchTo(d: Download, url: string, dest: string, attempt: number, cancel: AbortSignal) {
    mkdirSync(path.dirname(dest), { recursive: true });
    const part = dest + ".part";
    // A part file is resumed only for the same URL and only if the server confirms the same content
    // (If-Range with the validator it gave): never spliced onto another file or another version.
    const meta = readPartMeta(part + ".json");
    const canResume = existsSync(part) && meta?.url === url && meta.validator !== undefined;
    const have = canResume ? statSync(part).size : 0;
    const abort = new AbortController();
    const onCancel = () => abort.abort(new Error("cancelled"));
    cancel.addEventListener("abort", onCancel, { once: true });
    // Until the headers arrive the header limit applies, then the stall limit between chunks.
    let stallTimer = setTimeout(
      () => abort.abort(new Error(`no answer within ${this.opts.headerTimeoutMs / 1000} s`)),
      Math.min(this.opts.headerTimeoutMs, this.opts.stallTimeoutMs),
    );
    const resetStall = () => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(
        () => abort.abort(new Error(`no data for ${this.opts.stallTimeoutMs / 1000} s`)),
        this.opts.stallTimeoutMs,
      );
    };
    try {
      const res = await this.fetchChecked(url, {
        headers: have ? { range: `bytes=${have}-`, "if-range": meta!.validator! } : {},
        signal: abort.signal,
      });
      resetStall();
      if (res.status === 404) throw new PermanentError("MODEL_NOT_FOUND", `${url}: not found (HTTP 404)`);
      if (res.status === 401 || res.status === 403)
        throw new PermanentError(
          "DOWNLOAD_FAILED",
          `${url}: access refused (HTTP ${res.status}); set HF_TOKEN on the node if this is a gated repository`,
        );
      if (res.status === 416 && have) {
        // The part file is already complete (or the server disagrees): start over next attempt.
        rmSync(part, { force: true });
        throw new RbeeError("DOWNLOAD_FAILED", `${url}: range not satisfiable, restarting`);
      }
      if (!res.ok || !res.body) throw new RbeeError("DOWNLOAD_FAILED", `${url}: HTTP ${res.status}`);
      const resumed =
        res.status === 206 && have > 0 && new RegExp(`^bytes ${have}-`).test(res.headers.get("content-range") ?? "");
      if (res.status === 206 && !resumed)
        throw new RbeeError(
          "DOWNLOAD_FAILED",
          `${url}: the server answered a range that does not continue the partial file; restarting`,
          undefined,
        );
      let downloaded = resumed ? have : 0;
      const length = Number(res.headers.get("content-length") ?? NaN);
      const total = Number.isFinite(length) ? length + downloaded : null;
      const tooBig = () =>
        new PermanentError(
          "DOWNLOAD_FAILED",
          `${url} is larger than the limit of ${this.opts.maxBytes} bytes; nothing was stored`,
        );
      if (total !== null && total > this.opts.maxBytes) throw tooBig();
      const validator = res.headers.get("etag") ?? res.headers.get("last-modified") ?? undefined;
      writeFileSync(part + ".json", JSON.stringify({ url, validator }));
      const out = createWriteStream(part, { flags: resumed ? "a" : "w" });
      const started = Date.now();
      let lastEmit = 0;
      const progress = () =>
        this.emit(d, {
          stage: "downloading",
          bytes_downloaded: downloaded,
          bytes_total: total,
          speed_bps: Math.round(((downloaded - (resumed ? have : 0)) / Math.max(1, Date.now() - started)) * 1000),
          attempt,
        });
      progress();
      try {
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          resetStall();
          downloaded += chunk.length;
          if (downloaded > this.opts.maxBytes) throw tooBig();
          if (!out.write(chunk)) await once(out, "drain");
          if (Date.now() - lastEmit > 200) {
            lastEmit = Date.now();
            progress();
          }
        }
      } catch (e) {
        if (abort.signal.aborted || e instanceof PermanentError) throw e;
        const cause = ((e as Error).cause as Error | undefined)?.message ?? (e as Error).message;
        throw new RbeeError(
          "DOWNLOAD_FAILED",
          `connection closed after ${downloaded} of ${total ?? "unknown"} bytes (${cause})`,
        );
      } finally {
        out.end();
        await once(out, "close");
      }
      progress();
      if (downloaded > this.opts.maxBytes) {
        rmSync(part, { force: true });
        throw tooBig();
      }
      if (total !== null && downloaded < total)
        throw new RbeeError("DOWNLOAD_FAILED", `connection closed after ${downloaded} of ${total} bytes`);
    } catch (e) {
      if (e instanceof PermanentError) {
        rmSync(part, { force: true });
        rmSync(part + ".json", { force: true });
        throw e;
      }
      if (cancel.aborted) throw e;
      if (abort.signal.aborted)
        throw new RbeeError("DOWNLOAD_FAILED", `download stalled: ${(abort.signal.reason as Error).message}`);
      if (e instanceof RbeeError) throw e;
      throw networkError(new URL(url).origin, e, this.opts.headerTimeoutMs);
    } finally {
      clearTimeout(stallTimer);
      cancel.removeEventListener("abort", onCancel);
    }
  }
}

function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

function readPartMeta(file: string): { url: string; validator?: string } | undefined {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return undefined;
  }
}

function startsWithMagic(file: string): boolean {
  const fd = openSync(file, "r");
  try {
    const head = Buffer.alloc(4);
    return readSync(fd, head, 0, 4, 0) === 4 && head.equals(GGUF_MAGIC);
  } finally {
    closeSync(fd);
  }
}

/** Loopback, private (RFC 1918, CGNAT, ULA) and link-local (cloud metadata) addresses. */
export function isInternalAddress(ip: string): boolean {
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/i.exec(ip);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    return (
      a === 0 ||
      a === 10 ||
      a === 127 ||
      (a === 100 && b >= 64 && b < 128) ||
      (a === 169 && b === 254) ||
      (a === 172 && b >= 16 && b < 32) ||
      (a === 192 && b === 168)
    );
  }
  const h = ip.toLowerCase();
  return h === "::" || h === "::1" || /^f[cd]/.test(h) || /^fe[89ab]/.test(h);
}

/**
 * Where a download (or a redirect) may go: https anywhere public; plain http and internal
 * addresses only when the download started on loopback (test servers, a mirror on the node).
 * A redirect from a public host to an internal address is how SSRF reaches a metadata service.
 */
export async function checkDestination(url: URL, first: URL): Promise<void> {
  const startedInternal = isLoopback(first.hostname);
  const refuse = (why: string): never => {
    throw new PermanentError("DOWNLOAD_FAILED", `refusing to download from ${url.origin}: ${why}`);
  };
  if (url.protocol !== "https:" && !(url.protocol === "http:" && startedInternal && isLoopback(url.hostname)))
    refuse("only https (plain http to loopback for a loopback download)");
  if (startedInternal) return;
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const addresses = isIP(host) ? [host] : (await lookup(host, { all: true }).catch(() => [])).map((a) => a.address);
  if (addresses.some(isInternalAddress)) refuse("it is a loopback, private or link-local address");
}

/** A failed request in words: a host name that does not resolve is said to be one (and not retried). */
export function networkError(base: string, e: unknown, headerTimeoutMs: number): RbeeError {
  const cause = (e as { cause?: { message?: string } }).cause;
  const code = errorCode(e);
  const host = (() => {
    try {
      return new URL(base).hostname;
    } catch {
      return base;
    }
  })();
  if (code === "ENOTFOUND")
    return new PermanentError(
      "DOWNLOAD_FAILED",
      `cannot resolve ${host} (DNS lookup failed): check the node's network and DNS, or HF_ENDPOINT on the node`,
    );
  if (code === "EAI_AGAIN")
    return new RbeeError("DOWNLOAD_FAILED", `cannot resolve ${host} right now (temporary DNS failure)`);
  if ((e as Error).name === "TimeoutError")
    return new RbeeError("DOWNLOAD_FAILED", `${base} did not answer within ${headerTimeoutMs / 1000} s`);
  return new RbeeError("DOWNLOAD_FAILED", `cannot reach ${base}: ${cause?.message ?? (e as Error).message}`);
}
