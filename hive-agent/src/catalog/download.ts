// Model downloads with progress, resume, retries and a stall limit (docs/protocol.md; docs/edge-cases.md, EC2).
// Each download runs once per ref at a time; any number of listeners follow its progress events.

import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from "node:fs";
import { randomUUID } from "node:crypto";
import path from "node:path";
import { once } from "node:events";
import { RbeeError, type DownloadProgressEvent } from "../protocol";
import type { Logger } from "../util/log";
import { retry } from "../util/retry";
import { Catalog, sha256File } from "./catalog";
import { catalogPathOf, parseModelRef, pickQuantization, type ModelRef } from "./model-ref";

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
}

export const DEFAULT_DOWNLOAD_OPTIONS: DownloadOptions = {
  maxAttempts: 6,
  backoffBaseMs: 1000,
  stallTimeoutMs: 60_000,
  headerTimeoutMs: 30_000,
  hfEndpoint: "https://huggingface.co",
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

/** Errors that retrying cannot fix. */
class PermanentError extends RbeeError {}

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
      throw new RbeeError("INVALID_REQUEST", `model_ref "${modelRef}" names a local file; only hf: and https: refs can be downloaded`, { field: "model_ref" });
    const running = this.active.get(modelRef);
    if (running) return running.id;
    const d: Download = { id: randomUUID(), modelRef, events: [], listeners: new Set(), done: false, abort: new AbortController() };
    this.byId.set(d.id, d);
    this.active.set(modelRef, d);
    void this.run(d, ref, sha256).finally(() => {
      d.done = true;
      this.active.delete(modelRef);
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
        throw new RbeeError("DOWNLOAD_FAILED", `checksum mismatch: expected sha256 ${want}, got ${got}`);
      }
      renameSync(dest + ".part", dest);
      this.catalog.record(d.modelRef, dest, got);
      this.emit(d, { stage: "complete", local_path: dest, size_bytes: statSync(dest).size, sha256: got });
      this.log.info(`downloaded ${d.modelRef} to ${dest}`);
    };
    try {
      await retry(attempt, { attempts: this.opts.maxAttempts, baseMs: this.opts.backoffBaseMs, jitter: 0.2 }, {
        // Cancel (DELETE on the download) ends the attempt in flight and the wait before the next.
        signal: cancel,
        retryIf: (e) => !(e instanceof PermanentError) && !cancel.aborted,
        onRetry: (e, n, delay) => {
          const message = (e as Error).message;
          this.log.warn(`download of ${d.modelRef}, attempt ${n}/${this.opts.maxAttempts} failed: ${message}; retrying in ${delay} ms`);
          this.emit(d, { stage: "retrying", attempt: n, max_attempts: this.opts.maxAttempts, delay_ms: delay, message });
        },
      });
    } catch (e) {
      if (cancel.aborted) {
        this.log.info(`download of ${d.modelRef} cancelled`);
        this.emit(d, { stage: "error", code: "REQUEST_CANCELLED", message: `the download of ${d.modelRef} was cancelled` });
      } else if (e instanceof PermanentError) this.emit(d, { stage: "error", code: e.code, message: e.message });
      else this.emit(d, { stage: "error", code: "DOWNLOAD_FAILED", message: `download of ${d.modelRef} failed after ${this.opts.maxAttempts} attempts: ${(e as Error).message}` });
    }
  }

  private headers(url: string): Record<string, string> {
    // The Hugging Face token goes only to the Hugging Face endpoint.
    if (this.opts.hfToken && url.startsWith(this.opts.hfEndpoint)) return { authorization: `Bearer ${this.opts.hfToken}` };
    return {};
  }

  /** Turns a ref into the URL to fetch, the catalog path to store it at, and a known checksum. */
  private async resolve(ref: Exclude<ModelRef, { kind: "file" | "catalog" }>, cancel: AbortSignal): Promise<{ url: string; file: string; sha256?: string }> {
    if (ref.kind === "url") return { url: ref.url.toString(), file: catalogPathOf(ref) };
    const base = this.opts.hfEndpoint.replace(/\/$/, "");
    const api = `${base}/api/models/${ref.owner}/${ref.repo}/revision/${ref.revision}?blobs=true`;
    // The whole metadata request (connect, headers, body) is bounded: a server that accepts and never answers must not hang the download.
    const signal = AbortSignal.any([cancel, AbortSignal.timeout(this.opts.headerTimeoutMs)]);
    const res = await fetch(api, { headers: this.headers(api), signal }).catch((e) => {
      if (cancel.aborted) throw e;
      throw networkError(base, e, this.opts.headerTimeoutMs);
    });
    if (res.status === 404) throw new PermanentError("MODEL_NOT_FOUND", `no repository ${ref.owner}/${ref.repo} (revision ${ref.revision}) at ${base}`);
    if (res.status === 401 || res.status === 403)
      throw new PermanentError("DOWNLOAD_FAILED", `${base} refused access to ${ref.owner}/${ref.repo} (HTTP ${res.status}); set HF_TOKEN on the node for gated or private repositories`);
    if (!res.ok) throw new RbeeError("DOWNLOAD_FAILED", `${api.split("?")[0]}: HTTP ${res.status}`);
    const info = (await res.json().catch((e) => {
      throw cancel.aborted ? e : networkError(base, e, this.opts.headerTimeoutMs);
    })) as { siblings?: { rfilename: string; lfs?: { sha256?: string } }[] };
    const siblings = info.siblings ?? [];
    const file = ref.file ?? pickQuantization(siblings.map((s) => s.rfilename));
    if (!file) throw new PermanentError("MODEL_NOT_FOUND", `repository ${ref.owner}/${ref.repo} has no .gguf file`);
    const sibling = siblings.find((s) => s.rfilename === file);
    if (!sibling) throw new PermanentError("MODEL_NOT_FOUND", `repository ${ref.owner}/${ref.repo} has no file ${file}`);
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
    const have = existsSync(part) ? statSync(part).size : 0;
    const abort = new AbortController();
    const onCancel = () => abort.abort(new Error("cancelled"));
    cancel.addEventListener("abort", onCancel, { once: true });
    // Until the headers arrive the header limit applies, then the stall limit between chunks.
    let stallTimer = setTimeout(() => abort.abort(new Error(`no answer within ${this.opts.headerTimeoutMs / 1000} s`)), Math.min(this.opts.headerTimeoutMs, this.opts.stallTimeoutMs));
    const resetStall = () => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => abort.abort(new Error(`no data for ${this.opts.stallTimeoutMs / 1000} s`)), this.opts.stallTimeoutMs);
    };
    try {
      const res = await fetch(url, {
        headers: { ...this.headers(url), ...(have ? { range: `bytes=${have}-` } : {}) },
        signal: abort.signal,
        redirect: "follow",
      });
      resetStall();
      if (res.status === 404) throw new PermanentError("MODEL_NOT_FOUND", `${url}: not found (HTTP 404)`);
      if (res.status === 401 || res.status === 403) throw new PermanentError("DOWNLOAD_FAILED", `${url}: access refused (HTTP ${res.status}); set HF_TOKEN on the node if this is a gated repository`);
      if (res.status === 416 && have) {
        // The part file is already complete (or the server disagrees): start over next attempt.
        rmSync(part, { force: true });
        throw new RbeeError("DOWNLOAD_FAILED", `${url}: range not satisfiable, restarting`);
      }
      if (!res.ok || !res.body) throw new RbeeError("DOWNLOAD_FAILED", `${url}: HTTP ${res.status}`);
      const resumed = res.status === 206;
      let downloaded = resumed ? have : 0;
      const length = Number(res.headers.get("content-length") ?? NaN);
      const total = Number.isFinite(length) ? length + downloaded : null;
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
          if (!out.write(chunk)) await once(out, "drain");
          if (Date.now() - lastEmit > 200) {
            lastEmit = Date.now();
            progress();
          }
        }
      } catch (e) {
        if (abort.signal.aborted) throw e;
        const cause = (e as any).cause?.message ?? (e as Error).message;
        throw new RbeeError("DOWNLOAD_FAILED", `connection closed after ${downloaded} of ${total ?? "unknown"} bytes (${cause})`);
      } finally {
        out.end();
        await once(out, "close");
      }
      progress();
      if (total !== null && downloaded < total) throw new RbeeError("DOWNLOAD_FAILED", `connection closed after ${downloaded} of ${total} bytes`);
    } catch (e) {
      if (cancel.aborted) throw e;
      if (abort.signal.aborted) throw new RbeeError("DOWNLOAD_FAILED", `download stalled: ${(abort.signal.reason as Error).message}`);
      if (e instanceof RbeeError) throw e;
      throw networkError(new URL(url).origin, e, this.opts.headerTimeoutMs);
    } finally {
      clearTimeout(stallTimer);
      cancel.removeEventListener("abort", onCancel);
    }
  }
}

/** A failed request in words: a host name that does not resolve is said to be one (and not retried). */
export function networkError(base: string, e: unknown, headerTimeoutMs: number): RbeeError {
  const cause = (e as { cause?: { code?: string; message?: string } }).cause;
  const code = cause?.code ?? (e as { code?: string }).code;
  const host = (() => {
    try {
      return new URL(base).hostname;
    } catch {
      return base;
    }
  })();
  if (code === "ENOTFOUND")
    return new PermanentError("DOWNLOAD_FAILED", `cannot resolve ${host} (DNS lookup failed): check the node's network and DNS, or HF_ENDPOINT on the node`);
  if (code === "EAI_AGAIN") return new RbeeError("DOWNLOAD_FAILED", `cannot resolve ${host} right now (temporary DNS failure)`);
  if ((e as Error).name === "TimeoutError") return new RbeeError("DOWNLOAD_FAILED", `${base} did not answer within ${headerTimeoutMs / 1000} s`);
  return new RbeeError("DOWNLOAD_FAILED", `cannot reach ${base}: ${cause?.message ?? (e as Error).message}`);
}
