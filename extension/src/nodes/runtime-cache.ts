// The keeper's cache of runtime tarballs (one file per pinned package version): filled from the npm
// registry configured on this machine, or imported from a folder carried to an air-gapped keeper.
// Nothing enters the cache unless its bytes match the integrity hash pinned at build time, and a
// cached file is checked again when it is used, so a damaged cache is re-fetched, never shipped.
//
// Where it lives: the extension's global storage in VS Code, ~/.rbee/cache/runtime for the CLI.

import { createHash, randomBytes } from "node:crypto";
import {
  createReadStream,
  createWriteStream,
  existsSync,
  mkdirSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  copyFileSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { Transform } from "node:stream";
import { rbeeHome } from "../keeper/registry";
import { NodeError } from "./errors";
import { loadNpmConfig, type NpmConfig } from "./npm-config";
import type { PinnedTarball, RuntimePins } from "./runtime-packages";

/** The ~/.rbee/cache/runtime cache of the CLI (RBEE_HOME moves it). */
export function defaultRuntimeCacheDir(): string {
  return path.join(rbeeHome(), "cache", "runtime");
}

export interface CacheProgress {
  /** Packages present (cached or fetched) out of all asked for. */
  done: number;
  total: number;
  /** Bytes fetched from the registry so far in this call. */
  fetchedBytes: number;
  name?: string;
}

export interface EnsureResult {
  /** Local file of each tarball, in the order asked. */
  files: string[];
  /** How many had to be fetched, and their bytes (0 when everything was cached). */
  fetched: number;
  fetchedBytes: number;
  totalBytes: number;
}

/** The hash named by an integrity string (sha512 preferred) as hex, for `sha512sum -c` on a node. */
export function integrityDigest(integrity: string): { algorithm: "sha512" | "sha256" | "sha1"; hex: string } {
  const parts = integrity.trim().split(/\s+/);
  for (const algorithm of ["sha512", "sha256", "sha1"] as const) {
    const part = parts.find((x) => x.startsWith(algorithm + "-"));
    if (part) return { algorithm, hex: Buffer.from(part.slice(algorithm.length + 1), "base64").toString("hex") };
  }
  throw new NodeError("DEPLOY_BUNDLE_MISSING", `unsupported integrity string "${integrity}"`, {});
}

/** The cache file name of a tarball: @scope/name → @scope+name-<version>.tgz. */
export function tarballFileName(pin: Pick<PinnedTarball, "name" | "version">): string {
  return `${pin.name.replace("/", "+")}-${pin.version}.tgz`;
}

async function hashFile(file: string, algorithm: string): Promise<string> {
  const h = createHash(algorithm);
  await pipeline(createReadStream(file), h);
  return h.digest("hex");
}

/** True when the file's bytes match the integrity string. */
export async function fileMatches(file: string, integrity: string): Promise<boolean> {
  const want = integrityDigest(integrity);
  try {
    return (await hashFile(file, want.algorithm)) === want.hex;
  } catch {
    return false;
  }
}

/** Every tarball a pins file can name (for import: anything else is refused). */
export function allPinnedTarballs(pins: RuntimePins): PinnedTarball[] {
  return [...pins.closure, ...Object.values(pins.prebuilts), ...Object.values(pins.node.packages)];
}

export interface RuntimeCacheOptions {
  /** npm settings (registry, auth, proxy); default this machine's. */
  npm?: NpmConfig;
  /** Downloads at once. */
  concurrency?: number;
  /**
   * Other caches to take a verified tarball from before fetching it (VS Code looks in the CLI's
   * ~/.rbee/cache/runtime, where `rbee runtime import` puts an air-gapped keeper's files).
   */
  fallbackDirs?: string[];
}

export class RuntimeCache {
  private readonly npm: NpmConfig;
  /** Files verified in this process: a deploy to a second node need not hash them again. */
  private readonly verified = new Set<string>();

  constructor(
    readonly dir: string,
    private readonly opts: RuntimeCacheOptions = {},
  ) {
    this.npm = opts.npm ?? loadNpmConfig();
  }

  file(pin: PinnedTarball): string {
    return path.join(this.dir, tarballFileName(pin));
  }

  /** The cached file when present and matching its pin. */
  async cached(pin: PinnedTarball): Promise<string | undefined> {
    const f = this.file(pin);
    const key = `${f}:${pin.integrity}`;
    if (this.verified.has(key) && existsSync(f)) return f;
    if (!existsSync(f)) return this.fromFallback(pin);
    if (await fileMatches(f, pin.integrity)) {
      this.verified.add(key);
      return f;
    }
    rmSync(f, { force: true }); // damaged: fetched again
    return undefined;
  }

  private async fromFallback(pin: PinnedTarball): Promise<string | undefined> {
    for (const dir of this.opts.fallbackDirs ?? []) {
      const src = path.join(dir, tarballFileName(pin));
      if (path.resolve(dir) === path.resolve(this.dir) || !existsSync(src) || !(await fileMatches(src, pin.integrity)))
        continue;
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      const tmp = `${this.file(pin)}.tmp-${randomBytes(4).toString("hex")}`;
      copyFileSync(src, tmp);
      renameSync(tmp, this.file(pin));
      this.verified.add(`${this.file(pin)}:${pin.integrity}`);
      return this.file(pin);
    }
    return undefined;
  }

  /** Makes every tarball available, fetching the missing ones from the registry. */
  async ensure(
    pins: PinnedTarball[],
    opts: { onProgress?: (p: CacheProgress) => void; signal?: AbortSignal } = {},
  ): Promise<EnsureResult> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const files: string[] = new Array(pins.length);
    const missing: number[] = [];
    const firstOfFile = new Map<string, number>();
    for (const [i, pin] of pins.entries()) {
      // The same package version at two places of the tree is one file, fetched once.
      if (firstOfFile.has(tarballFileName(pin))) continue;
      firstOfFile.set(tarballFileName(pin), i);
      const f = await this.cached(pin);
      if (f) files[i] = f;
      else missing.push(i);
    }
    const progress: CacheProgress = {
      done: firstOfFile.size - missing.length,
      total: firstOfFile.size,
      fetchedBytes: 0,
    };
    opts.onProgress?.({ ...progress });
    let next = 0;
    const worker = async () => {
      while (next < missing.length) {
        const i = missing[next++];
        opts.signal?.throwIfAborted();
        files[i] = await this.fetch(
          pins[i],
          (n) => {
            progress.fetchedBytes += n;
            opts.onProgress?.({ ...progress, name: pins[i].name });
          },
          opts.signal,
        );
        progress.done++;
        opts.onProgress?.({ ...progress, name: pins[i].name });
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.opts.concurrency ?? 6, missing.length) }, worker));
    for (const [i, pin] of pins.entries()) files[i] ??= files[firstOfFile.get(tarballFileName(pin))!];
    const totalBytes = [...new Set(files)].reduce((sum, f) => sum + statSync(f).size, 0);
    return { files, fetched: missing.length, fetchedBytes: progress.fetchedBytes, totalBytes };
  }

  /** GET one tarball from its registry into the cache, verifying it on the way. */
  private async fetch(pin: PinnedTarball, onBytes: (n: number) => void, signal?: AbortSignal): Promise<string> {
    const { request: undiciRequest, Agent, ProxyAgent } = require("undici") as typeof import("undici");
    const req = this.npm.request(pin.name, pin.version);
    const tls = { rejectUnauthorized: req.strictSsl, ...(req.ca ? { ca: req.ca } : {}) };
    const dispatcher = req.proxy ? new ProxyAgent({ uri: req.proxy, requestTls: tls }) : new Agent({ connect: tls });
    const want = integrityDigest(pin.integrity);
    const target = this.file(pin);
    const tmp = `${target}.tmp-${randomBytes(4).toString("hex")}`;
    const registryHost = new URL(req.url).host;
    try {
      let url = req.url;
      for (let hop = 0; ; hop++) {
        // Credentials go only to the registry's own host, never along a redirect elsewhere.
        const headers = new URL(url).host === registryHost ? req.headers : { ...req.headers, authorization: "" };
        if (!headers.authorization) delete (headers as Record<string, string>).authorization;
        let res;
        try {
          res = await undiciRequest(url, { dispatcher, headers, signal });
        } catch (err) {
          if (signal?.aborted) throw err;
          throw new NodeError(
            "RUNTIME_INSTALL_FAILED",
            `fetching ${pin.name}@${pin.version} from ${new URL(url).origin} failed (${(err as Error).message}); check the npm registry and proxy settings of this machine (npm config get registry), or bring the runtime with rbee runtime fetch/import`,
            { package: pin.name },
          );
        }
        if (res.statusCode >= 300 && res.statusCode < 400 && res.headers.location && hop < 5) {
          res.body.resume();
          url = new URL(String(res.headers.location), url).toString();
          continue;
        }
        if (res.statusCode !== 200) {
          res.body.resume();
          const hint =
            res.statusCode === 401 || res.statusCode === 403
              ? "; the registry refused the credentials of this machine's .npmrc"
              : "";
          throw new NodeError(
            "RUNTIME_INSTALL_FAILED",
            `the registry answered ${res.statusCode} for ${pin.name}@${pin.version} (${url})${hint}`,
            { package: pin.name, status: res.statusCode },
          );
        }
        const hash = createHash(want.algorithm);
        const count = new Transform({
          transform(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            onBytes(chunk.length);
            cb(null, chunk);
          },
        });
        await pipeline(res.body, count, createWriteStream(tmp, { mode: 0o600 }));
        if (hash.digest("hex") !== want.hex) {
          throw new NodeError(
            "RUNTIME_INSTALL_FAILED",
            `${pin.name}@${pin.version} from ${new URL(url).origin} does not match the integrity hash pinned in this rbee build; the registry or a proxy served other bytes, so it was not used`,
            { package: pin.name },
          );
        }
        renameSync(tmp, target);
        this.verified.add(`${target}:${pin.integrity}`);
        return target;
      }
    } finally {
      rmSync(tmp, { force: true });
      await dispatcher.close();
    }
  }

  /**
   * Copies tarballs into `dir` for an air-gapped keeper, with a list of what they are. Fetches
   * what is not cached yet.
   */
  async exportTo(
    pins: PinnedTarball[],
    dir: string,
    opts: { onProgress?: (p: CacheProgress) => void } = {},
  ): Promise<{ files: string[]; bytes: number }> {
    const got = await this.ensure(pins, opts);
    mkdirSync(dir, { recursive: true });
    const names: string[] = [];
    for (const f of got.files) {
      const name = path.basename(f);
      copyFileSync(f, path.join(dir, name));
      names.push(name);
    }
    writeFileSync(
      path.join(dir, "rbee-runtime.json"),
      JSON.stringify(
        {
          tarballs: pins.map((p) => ({
            file: tarballFileName(p),
            name: p.name,
            version: p.version,
            integrity: p.integrity,
          })),
        },
        null,
        2,
      ) + "\n",
    );
    return { files: names, bytes: got.totalBytes };
  }

  /**
   * Takes the tarballs of `dir` that this build pins (by name, version and hash) into the cache.
   * A file that is pinned but whose bytes differ is refused; files this build does not pin are skipped.
   */
  async importFrom(
    dir: string,
    pins: RuntimePins,
  ): Promise<{ imported: string[]; skipped: string[]; refused: string[] }> {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const byFile = new Map(allPinnedTarballs(pins).map((p) => [tarballFileName(p), p]));
    const out = { imported: [] as string[], skipped: [] as string[], refused: [] as string[] };
    let entries: string[];
    try {
      entries = readdirSync(dir)
        .filter((n) => n.endsWith(".tgz"))
        .sort();
    } catch (err) {
      throw new NodeError("RUNTIME_INSTALL_FAILED", `cannot read ${dir}: ${(err as Error).message}`, {});
    }
    for (const name of entries) {
      const pin = byFile.get(name);
      if (!pin) {
        out.skipped.push(name);
        continue;
      }
      const src = path.join(dir, name);
      if (!(await fileMatches(src, pin.integrity))) {
        out.refused.push(name);
        continue;
      }
      const tmp = `${this.file(pin)}.tmp-${randomBytes(4).toString("hex")}`;
      copyFileSync(src, tmp);
      renameSync(tmp, this.file(pin));
      this.verified.add(`${this.file(pin)}:${pin.integrity}`);
      out.imported.push(name);
    }
    return out;
  }
}
