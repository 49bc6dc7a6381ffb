// A loopback npm registry for tests: serves the pinned runtime tarballs at the standard tarball
// paths (/<name>/-/<base>-<version>.tgz) on 127.0.0.1, so deploy tests exercise the keeper's real
// fetcher, .npmrc handling and integrity checks while sending traffic only to loopback.
//
// The tarballs come from npm's own cache via `npm pack name@version` (npm verifies them; on a fresh
// CI machine npm fetches them once through its configured registry), kept in .cache/test-registry/.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileMatches, tarballFileName } from "../../extension/src/nodes/runtime-cache";
import type { PinnedTarball } from "../../extension/src/nodes/runtime-packages";
import { REPO_ROOT } from "./hive";

export const TEST_REGISTRY_STORE = path.join(REPO_ROOT, ".cache", "test-registry");

/** npm pack's file name for a package: @scope/name → scope-name-<version>.tgz. */
function packName(p: PinnedTarball): string {
  return `${p.name.replace(/^@/, "").replace("/", "-")}-${p.version}.tgz`;
}

/** Puts every tarball into the store (npm pack for the missing ones), each checked against its pin. */
export async function ensureTestTarballs(pins: PinnedTarball[]): Promise<void> {
  mkdirSync(TEST_REGISTRY_STORE, { recursive: true });
  const missing = pins.filter((p) => !existsSync(path.join(TEST_REGISTRY_STORE, tarballFileName(p))));
  const unique = [...new Map(missing.map((p) => [`${p.name}@${p.version}`, p])).values()];
  for (let i = 0; i < unique.length; i += 40) {
    const batch = unique.slice(i, i + 40);
    execFileSync(
      "npm",
      [
        "pack",
        "--silent",
        "--prefer-offline",
        "--pack-destination",
        TEST_REGISTRY_STORE,
        ...batch.map((p) => `${p.name}@${p.version}`),
      ],
      {
        cwd: TEST_REGISTRY_STORE,
        stdio: ["ignore", "ignore", "inherit"],
        env: { ...process.env, npm_config_update_notifier: "false" },
      },
    );
    for (const p of batch)
      renameSync(path.join(TEST_REGISTRY_STORE, packName(p)), path.join(TEST_REGISTRY_STORE, tarballFileName(p)));
  }
  for (const p of pins) {
    if (!(await fileMatches(path.join(TEST_REGISTRY_STORE, tarballFileName(p)), p.integrity)))
      throw new Error(`${p.name}@${p.version} in ${TEST_REGISTRY_STORE} does not match its pin`);
  }
}

export interface TestRegistry {
  url: string;
  /** Paths of every tarball request served (the test counts downloads with it). */
  requests: string[];
  /** An .npmrc pointing npm (and rbee) at this registry with its token. */
  npmrc: string;
  /** Serve these bytes instead of the real tarball for a package name (a tampered registry). */
  tamper(name: string, bytes: Buffer | undefined): void;
  close(): Promise<void>;
}

/** Serves the store on 127.0.0.1, requiring `token` as a bearer token (what .npmrc auth sends). */
export async function startTestRegistry(dir: string, token = "test-registry-token"): Promise<TestRegistry> {
  const byPath = new Map<string, string>();
  for (const f of readdirSync(TEST_REGISTRY_STORE)) {
    const m = /^(.+)-(\d+\.\d+\.\d+(?:-[\w.]+)?)\.tgz$/.exec(f);
    if (!m) continue;
    const name = m[1].replace("+", "/");
    const base = name.startsWith("@") ? name.slice(name.indexOf("/") + 1) : name;
    byPath.set(`/${name}/-/${base}-${m[2]}.tgz`, path.join(TEST_REGISTRY_STORE, f));
  }
  const tampered = new Map<string, Buffer>();
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    const p = decodeURIComponent((req.url ?? "").split("?")[0]);
    if (req.headers.authorization !== `Bearer ${token}`) {
      res.writeHead(401).end("auth required");
      return;
    }
    requests.push(p);
    const file = byPath.get(p);
    if (!file) {
      res.writeHead(404).end("not found");
      return;
    }
    const name = p.slice(1, p.indexOf("/-/"));
    const body = tampered.get(name) ?? readFileSync(file);
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": body.length }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}/`;
  mkdirSync(dir, { recursive: true });
  const npmrc = path.join(dir, "npmrc");
  writeFileSync(npmrc, `registry=${url}\n//127.0.0.1:${port}/:_authToken=\${RBEE_TEST_REGISTRY_TOKEN}\n`);
  return {
    url,
    requests,
    npmrc,
    tamper(name, bytes) {
      if (bytes) tampered.set(name, bytes);
      else tampered.delete(name);
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
