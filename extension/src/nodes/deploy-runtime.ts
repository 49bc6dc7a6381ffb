// The runtime set on a node (node-llama-cpp, its closure and prebuilts, and the pinned Node.js):
// uploaded from the keeper's verified tarball cache, or, in development, copied from this checkout.

import { existsSync } from "node:fs";
import path from "node:path";
import type { DeployLock } from "./deploy-lock";
import { assertLockHeld } from "./deploy-lock";
import type { DeployContext, LocalAgent } from "./deploy-types";
import { copyTree, sha256, uploadFiles } from "./deploy-upload";
import { NodeError } from "./errors";
import { runScript } from "./remote-scripts";
import { RuntimeCache, defaultRuntimeCacheDir, integrityDigest, tarballFileName } from "./runtime-cache";
import {
  closureSize,
  nodeJsPlatform,
  prebuiltPackagesFor,
  runtimeClosure,
  type NodePlatform,
  type PinnedTarball,
  type runtimeSetFor,
} from "./runtime-packages";

/** The runtime "set" of the development copy path: this checkout's node_modules and the node's own Node.js. */
export function copySet(
  local: LocalAgent,
  platform: NodePlatform,
): { id: string; prebuilts: string[]; backends: string[]; node?: PinnedTarball; packages: PinnedTarball[] } {
  const target = nodeJsPlatform(platform);
  if (target.platform !== process.platform || target.arch !== process.arch) {
    throw new NodeError(
      "RUNTIME_INSTALL_FAILED",
      `${platform.os} ${platform.machine} differs from this machine (${process.platform} ${process.arch}), so its node_modules cannot be copied there; deploy with the pinned runtime (the default)`,
      {},
    );
  }
  if (!local.nodeModules)
    throw new NodeError(
      "DEPLOY_BUNDLE_MISSING",
      `node-llama-cpp is not installed next to ${local.script}, so it cannot be copied; run npm install, or deploy the pinned runtime`,
      {},
    );
  const choice = prebuiltPackagesFor(platform);
  const available = choice.packages.filter((p) => existsSync(path.join(local.nodeModules!, p, "package.json")));
  if (!available.length)
    throw new NodeError(
      "DEPLOY_BUNDLE_MISSING",
      `none of ${choice.packages.join(", ")} is installed under ${local.nodeModules}; run npm install`,
      {},
    );
  const backends = choice.backends.filter((b) =>
    b === "cpu" ? true : available.some((p) => p.endsWith(b === "metal" ? "-metal" : `-${b}`)),
  );
  const id =
    "copy-" +
    sha256(JSON.stringify({ nlc: local.nodeLlamaCppVersion, available, from: local.nodeModules })).slice(0, 12);
  return { id, prebuilts: available, backends, packages: [] };
}

/**
 * Uploads the set's tarballs (fetched into the cache first when missing) to the node, which checks
 * each against its pinned sha512, unpacks it where package-lock.json puts it, records the sha256 of
 * every file, and moves the finished folder into place (runtime-unpack.sh).
 */
export async function uploadRuntime(
  ctx: DeployContext,
  set: ReturnType<typeof runtimeSetFor>,
  root: string,
  lock: DeployLock,
): Promise<number> {
  const { conn, opts, emit } = ctx;
  const cache = opts.cache ?? new RuntimeCache(opts.cacheDir ?? defaultRuntimeCacheDir());
  const tarballs: PinnedTarball[] = [...(set.node ? [set.node] : []), ...set.packages];
  emit({
    step: "fetch",
    status: "started",
    message: `checking the runtime cache (${tarballs.length} packages) in ${cache.dir}`,
  });
  let lastEmit = 0;
  const got = await cache.ensure(tarballs, {
    signal: opts.signal,
    onProgress: (p) => {
      if (Date.now() - lastEmit < 250 && p.done < p.total) return;
      lastEmit = Date.now();
      emit({
        step: "fetch",
        status: "progress",
        bytes: p.done,
        totalBytes: p.total,
        message: `${p.done} / ${p.total} packages, ${(p.fetchedBytes / 1e6).toFixed(1)} MB fetched`,
      });
    },
  });
  emit({
    step: "fetch",
    status: "done",
    message: got.fetched
      ? `fetched ${got.fetched} packages (${(got.fetchedBytes / 1e6).toFixed(1)} MB) from the npm registry, verified`
      : "every package was in the cache, verified",
  });

  const tmp = `${root}/runtime/.tmp-${lock.owner}`;
  emit({
    step: "runtime",
    status: "started",
    message: `uploading the runtime (${tarballs.length} packages) to ${conn.alias}`,
  });
  const mk = await runScript(conn, "runtime-tmp", [tmp]);
  if (mk.code !== 0)
    throw new NodeError("RUNTIME_INSTALL_FAILED", `creating ${tmp} on ${conn.alias} failed: ${mk.stderr.trim()}`, {
      alias: conn.alias,
    });
  // A package version installed at two paths of the tree travels once.
  const unique = [...new Map(tarballs.map((t, i) => [tarballFileName(t), { pin: t, file: got.files[i] }])).values()];
  const sums = unique.map((u) => `${integrityDigest(u.pin.integrity).hex}  ${tarballFileName(u.pin)}\n`).join("");
  const bytes = await uploadFiles(
    ctx,
    [
      ...unique.map((u) => ({ local: u.file, remote: `${tmp}/.tarballs/${tarballFileName(u.pin)}` })),
      { content: Buffer.from(sums), remote: `${tmp}/.tarballs/SHA512SUMS` },
    ],
    "runtime",
  );
  // Where each tarball goes, one "destination<TAB>tarball" line each, on the script's stdin.
  const list = tarballs.map((t) => `${t.path === "node" ? "node" : t.path}\t${tarballFileName(t)}\n`).join("");
  opts.signal?.throwIfAborted();
  assertLockHeld(conn, lock);
  const r = await runScript(conn, "runtime-unpack", [tmp, set.id], { stdin: list, timeoutMs: 20 * 60_000 });
  if (r.code !== 0)
    throw new NodeError(
      "RUNTIME_INSTALL_FAILED",
      `unpacking the runtime on ${conn.alias} failed (exit ${r.code}): ${r.stderr.trim().split("\n").slice(-6).join("\n")}`,
      { alias: conn.alias },
    );
  emit({
    step: "runtime",
    status: "done",
    message: `runtime ${set.id} installed (${(bytes / 1e6).toFixed(0)} MB uploaded)`,
  });
  return bytes;
}

/** The development path: this checkout's node_modules over tar | gzip, then the same manifest. */
export async function copyRuntime(
  ctx: DeployContext,
  set: ReturnType<typeof copySet>,
  root: string,
  lock: DeployLock,
): Promise<number> {
  const { conn, local, emit } = ctx;
  const rels = runtimeClosure(local.nodeModules!, set.prebuilts);
  const total = closureSize(local.nodeModules!, rels);
  const tmp = `${root}/runtime/.tmp-${lock.owner}`;
  emit({
    step: "runtime",
    status: "started",
    message: `copying node-llama-cpp ${local.nodeLlamaCppVersion} (${set.prebuilts.join(", ")}, ${(total / 1e6).toFixed(0)} MB) to ${conn.alias}`,
  });
  await runScript(conn, "runtime-clear", [tmp]);
  const sent = await copyTree(ctx, { root: local.nodeModules!, rels, remoteDir: `${tmp}/node_modules`, total });
  const fin = await runScript(conn, "runtime-copy-finish", [tmp, set.id]);
  if (fin.code !== 0)
    throw new NodeError(
      "RUNTIME_INSTALL_FAILED",
      `finishing the runtime copy on ${conn.alias} failed: ${fin.stderr.trim()}`,
      { alias: conn.alias },
    );
  emit({ step: "runtime", status: "done", message: `node-llama-cpp copied (${(total / 1e6).toFixed(0)} MB)` });
  return sent;
}
