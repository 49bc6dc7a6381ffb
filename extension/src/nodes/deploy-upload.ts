// Getting files onto a node: the hive-agent bundle to ship (and its version, asked from the bundle
// itself), SFTP uploads with progress, and a local folder tree streamed as tar | gzip.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { createGzip } from "node:zlib";
import type { DeployContext, DeployOptions, DeployStep, LocalAgent } from "./deploy-types";
import { NodeError } from "./errors";
import { scriptCommand } from "./remote-scripts";
import { RUNTIME_COPY_EXCLUDES, findNodeModulesWith, packageVersion } from "./runtime-packages";

const versionCache = new Map<string, string>();

/** The bundle to deploy and its version (asked from the bundle itself, so a test build of another version works). */
export async function localAgent(opts: DeployOptions): Promise<LocalAgent> {
  const script = path.resolve(
    opts.agentScript ?? process.env.RBEE_AGENT_SCRIPT ?? path.join(__dirname, "hive-agent.js"),
  );
  if (!existsSync(script)) {
    throw new NodeError(
      "DEPLOY_BUNDLE_MISSING",
      `the hive-agent bundle is missing at ${script}; build it with npm run build (or reinstall rbee)`,
      { path: script },
    );
  }
  const nodeModules =
    opts.runtimeInstall === "copy"
      ? (opts.localNodeModules ?? findNodeModulesWith("node-llama-cpp", path.dirname(script)))
      : undefined;
  const nlc = nodeModules ? packageVersion(nodeModules, "node-llama-cpp") : undefined;
  const key = `${script}:${statSync(script).size}:${statSync(script).mtimeMs}`;
  let version = versionCache.get(key);
  if (!version) {
    version = await new Promise<string>((resolve, reject) => {
      const p = spawn(process.execPath, [script, "version"], {
        env: { ...process.env, ELECTRON_RUN_AS_NODE: "1" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      p.stdout.on("data", (d) => (out += d));
      p.on("error", reject);
      p.on("exit", (code) =>
        code === 0 && /^\d+\.\d+\.\d+/.test(out.trim())
          ? resolve(out.trim())
          : reject(
              new NodeError(
                "DEPLOY_BUNDLE_MISSING",
                `${script} does not print a version (exit ${code}); rebuild it with npm run build`,
              ),
            ),
      );
    });
    versionCache.set(key, version);
  }
  return {
    script,
    sourceMap: existsSync(script + ".map") ? script + ".map" : undefined,
    version,
    nodeModules,
    nodeLlamaCppVersion: nlc ?? "3.21.1",
  };
}

export function agentPackageJson(version: string, nlcVersion: string, prebuilts: string[]): string {
  const dependencies: Record<string, string> = { "node-llama-cpp": nlcVersion };
  for (const p of prebuilts) dependencies[p] = nlcVersion;
  return (
    JSON.stringify(
      {
        name: "rbee-hive-agent",
        version,
        private: true,
        description: "rbee hive-agent (deployed by rbee)",
        dependencies,
      },
      null,
      2,
    ) + "\n"
  );
}

export function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export type Upload = { local: string; remote: string } | { content: Buffer; remote: string };

/**
 * Uploads files over one SFTP session (4 at a time, each 0600), reporting bytes sent / total for
 * the step. An abort ends the session, which fails the transfers in flight.
 */
export async function uploadFiles(ctx: DeployContext, files: Upload[], step: DeployStep): Promise<number> {
  const { conn, emit } = ctx;
  const signal = ctx.opts.signal;
  signal?.throwIfAborted();
  const sizes = files.map((f) => ("local" in f ? statSync(f.local).size : f.content.length));
  const total = sizes.reduce((a, b) => a + b, 0);
  const sent = new Array<number>(files.length).fill(0);
  let lastEmit = 0;
  const report = (force = false) => {
    if (!force && Date.now() - lastEmit < 250) return;
    lastEmit = Date.now();
    const bytes = sent.reduce((a, b) => a + b, 0);
    emit({
      step,
      status: "progress",
      bytes,
      totalBytes: total,
      message: `${(bytes / 1e6).toFixed(1)} / ${(total / 1e6).toFixed(1)} MB`,
    });
  };
  const sftp = await conn.sftp();
  const onAbort = () => sftp.end();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    let next = 0;
    const worker = async () => {
      while (next < files.length) {
        const i = next++;
        const f = files[i];
        await new Promise<void>((resolve, reject) => {
          const done = (err?: Error | null) => {
            if (!err) return resolve();
            if (signal?.aborted) return reject(signal.reason ?? new Error("aborted"));
            reject(
              new NodeError("RUNTIME_INSTALL_FAILED", `uploading ${f.remote} to ${conn.alias} failed: ${err.message}`, {
                alias: conn.alias,
              }),
            );
          };
          if ("local" in f) {
            sftp.fastPut(
              f.local,
              f.remote,
              { mode: 0o600, step: (transferred) => ((sent[i] = transferred), report()) },
              done,
            );
          } else {
            sftp.writeFile(f.remote, f.content, { mode: 0o600 }, (err) => {
              if (!err) sent[i] = f.content.length;
              done(err);
            });
          }
        });
        signal?.throwIfAborted();
      }
    };
    await Promise.all(Array.from({ length: Math.min(4, files.length) }, worker));
    report(true);
    return total;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    sftp.end();
  }
}

/** tar | gzip over an exec channel into `remoteDir` (created). */
export async function copyTree(
  ctx: DeployContext,
  tree: { root: string; rels: string[]; remoteDir: string; total: number },
): Promise<number> {
  const { conn, emit } = ctx;
  const { root, rels, total } = tree;
  const channel = await conn.execStream(scriptCommand("untar", [tree.remoteDir]));
  const tar = spawn(
    "tar",
    ["-C", root, "-cf", "-", ...RUNTIME_COPY_EXCLUDES.map((e) => `--exclude=${e}`), "--", ...rels],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let tarErr = "";
  tar.stderr.on("data", (d) => (tarErr += d));
  let sent = 0;
  let lastEmit = 0;
  tar.stdout.on("data", (d: Buffer) => {
    sent += d.length;
    if (Date.now() - lastEmit > 250) {
      lastEmit = Date.now();
      emit({
        step: "runtime",
        status: "progress",
        bytes: Math.min(sent, total),
        totalBytes: total,
        message: `${(sent / 1e6).toFixed(0)} / ${(total / 1e6).toFixed(0)} MB`,
      });
    }
  });
  const gzip = createGzip({ level: 1 });
  tar.stdout.pipe(gzip).pipe(channel);
  let remoteErr = "";
  channel.stderr.on("data", (d: Buffer) => (remoteErr += d));
  channel.resume(); // tar prints nothing on stdout; drain it anyway
  const [localCode, remote] = await Promise.all([
    new Promise<number | null>((resolve, reject) => {
      tar.on("error", reject);
      tar.on("exit", (c) => resolve(c));
    }),
    new Promise<number | null | undefined>((resolve, reject) => {
      channel.on("error", reject);
      channel.on("close", (c?: number | null) => resolve(c));
    }),
  ]).catch((err) => {
    tar.kill();
    throw err;
  });
  if (localCode !== 0)
    throw new NodeError(
      "RUNTIME_INSTALL_FAILED",
      `packing node-llama-cpp here failed (tar exit ${localCode}): ${tarErr.trim()}`,
      {},
    );
  if (remote !== 0)
    throw new NodeError(
      "RUNTIME_INSTALL_FAILED",
      `unpacking node-llama-cpp on ${conn.alias} failed (exit ${remote}): ${remoteErr.trim() || "no message"}`,
      { alias: conn.alias },
    );
  return sent;
}
