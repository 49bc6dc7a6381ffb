// The hive-agent's life on a remote node, over its SSH connection: deploy (idempotent), status,
// logs and uninstall. Layout on the node (RBEE_HOME moves ~/.rbee, as on this machine):
//
//   ~/.rbee/agent/<version>/   hive-agent.js, package.json, node_modules/ (node-llama-cpp + the
//                              prebuilts for the node's hardware), .complete once fully installed
//   ~/.rbee/hive/              the hive's home: token (0600), hive.json, hive.log, models/
//
// The model catalog lives in the hive's home, outside the versioned folder, so an upgrade keeps it.
// Every remote command runs under `sh -c`, whatever the user's login shell is.

import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { createGzip } from "node:zlib";
import { RbeeError } from "../../../hive-agent/src/protocol";
import { HiveClient } from "../keeper/hive-client";
import type { SshConnection } from "./connection";
import { NodeError } from "./errors";
import {
  closureSize,
  findNodeModulesWith,
  nodeJsPlatform,
  packageVersion,
  prebuiltPackagesFor,
  runtimeClosure,
  RUNTIME_COPY_EXCLUDES,
  type GpuKind,
  type NodePlatform,
} from "./runtime-packages";
import { shQuote } from "./shell";
import { sshTransport } from "./ssh-transport";

export const MIN_NODE_MAJOR = 20;

export type DeployStep = "connect" | "probe" | "upload" | "runtime" | "stop" | "activate" | "token" | "start" | "health" | "cleanup";

export type DeployEvent =
  | { step: DeployStep; status: "started" | "done" | "skipped"; message: string }
  | { step: "runtime"; status: "progress"; bytes: number; totalBytes: number; message: string }
  | { step: DeployStep; status: "warning"; message: string };

export type RuntimeInstall = "auto" | "registry" | "copy";

export interface DeployOptions {
  /** The hive-agent bundle to deploy; default hive-agent.js next to this bundle (or $RBEE_AGENT_SCRIPT). */
  agentScript?: string;
  /**
   * How node-llama-cpp reaches the node: `registry` runs npm install there, `copy` sends this
   * machine's installed packages (same OS/CPU only), `auto` uses the registry when the node can
   * reach it and copies otherwise.
   */
  runtimeInstall?: RuntimeInstall;
  /** node_modules to copy from; default the one holding node-llama-cpp above the agent script. */
  localNodeModules?: string;
  /** The `node` to run on the node; default the one on PATH of a non-interactive SSH session. */
  nodeCommand?: string;
  /** Extra `hive-agent daemon` flags (tests shorten timeouts with them). */
  daemonArgs?: string[];
  /** Limit for the hive to write hive.json after it starts. */
  startTimeoutMs?: number;
  onProgress?: (e: DeployEvent) => void;
}

export interface DeployResult {
  alias: string;
  version: string;
  /** False when the same version was already installed and healthy (nothing was done). */
  changed: boolean;
  /** How node-llama-cpp got there this time. */
  runtime: "present" | "copied" | "registry" | "reused";
  /** The backends the installed prebuilts give (cpu, cuda, vulkan, metal). */
  backends: string[];
  pid: number;
  /** The hive's port on the node's 127.0.0.1. */
  port: number;
  /** The hive's bearer token (a secret: never log it). */
  token: string;
  /** Absolute paths on the node. */
  agentDir: string;
  hiveHome: string;
  durationMs: number;
}

export interface RemoteHiveStatus {
  alias: string;
  /** Versions installed (complete) under ~/.rbee/agent. */
  installedVersions: string[];
  running: boolean;
  pid?: number;
  port?: number;
  version?: string;
  /** /v1/health answered through the SSH connection. */
  healthy: boolean;
  hiveHome: string;
}

interface HiveInfo {
  pid: number;
  port: number;
  version: string;
}

/** What one quick remote probe tells about a node's hive (no hardware probing). */
interface NodeState {
  root: string;
  hiveHome: string;
  nodePath?: string;
  nodeVersion?: string;
  installed: boolean;
  /** Backends of the installed version (from its .complete marker). */
  backends: string[];
  agentDirs: string[];
  hive?: HiveInfo;
  hiveAlive: boolean;
  token?: string;
}

/** Shell lines that set R (the rbee root), H (hive home) and A (agent folder) on the node. */
const REMOTE_PATHS = [
  'R="${RBEE_HOME:-$HOME/.rbee}"',
  'case "$R" in /*) ;; *) R="$HOME/$R" ;; esac',
  'H="$R/hive"',
  'A="$R/agent"',
].join("\n");

/** Runs a POSIX sh script on the node (the login shell may be fish or csh). */
function sh(conn: SshConnection, script: string, opts: { stdin?: string; timeoutMs?: number } = {}) {
  return conn.exec(`sh -c ${shQuote(script)}`, opts);
}

function parseKv(out: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const line of out.split("\n")) {
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    const k = line.slice(0, eq);
    m.set(k, [...(m.get(k) ?? []), line.slice(eq + 1)]);
  }
  return m;
}

async function probeState(conn: SshConnection, version: string, nodeCommand: string): Promise<NodeState> {
  const script = `${REMOTE_PATHS}
V=${shQuote(version)}
echo "root=$R"
N=$(command -v ${shQuote(nodeCommand)} 2>/dev/null)
echo "node=$N"
if [ -n "$N" ]; then echo "node_version=$("$N" --version 2>/dev/null)"; fi
if [ -f "$A/$V/.complete" ]; then echo "installed=yes"; echo "backends=$(cat "$A/$V/.complete")"; fi
for d in "$A"/*; do if [ -f "$d/.complete" ]; then echo "agent_dir=\${d##*/}"; fi; done
if [ -f "$H/hive.json" ]; then
  echo "hive_json=$(tr -d '\\n' < "$H/hive.json")"
  P=$(sed -n 's/.*"pid": *\\([0-9][0-9]*\\).*/\\1/p' "$H/hive.json")
  if [ -n "$P" ] && ps -p "$P" -o args= 2>/dev/null | grep -q hive-agent; then echo "hive_alive=yes"; fi
fi
if [ -f "$H/token" ]; then echo "token=$(cat "$H/token")"; fi
`;
  const r = await sh(conn, script, { timeoutMs: 30_000 });
  if (r.code !== 0) throw new NodeError("REMOTE_COMMAND_FAILED", `probing ${conn.alias} failed (exit ${r.code}): ${r.stderr.trim()}`, { alias: conn.alias });
  const kv = parseKv(r.stdout);
  const one = (k: string) => kv.get(k)?.[0] || undefined;
  let hive: HiveInfo | undefined;
  const hiveJson = one("hive_json");
  if (hiveJson) {
    try {
      const j = JSON.parse(hiveJson);
      if (Number.isInteger(j.pid) && Number.isInteger(j.port)) hive = { pid: j.pid, port: j.port, version: String(j.version) };
    } catch {
      // a torn or foreign file: treated as no hive
    }
  }
  const root = one("root") ?? "";
  return {
    root,
    hiveHome: `${root}/hive`,
    nodePath: one("node"),
    nodeVersion: one("node_version"),
    installed: one("installed") === "yes",
    backends: (one("backends") ?? "").split(/\s+/).filter(Boolean),
    agentDirs: kv.get("agent_dir") ?? [],
    hive,
    hiveAlive: one("hive_alive") === "yes" && hive !== undefined,
    token: one("token"),
  };
}

/** A clear error unless the node has a usable Node.js; returns the path of `node` there. */
function requireNodeJs(conn: SshConnection, state: NodeState, nodeCommand: string): string {
  const fix =
    `install Node.js ${MIN_NODE_MAJOR} or newer on ${conn.alias} (e.g. from https://nodejs.org or your package manager) so that ` +
    `\`${nodeCommand}\` is on the PATH of non-interactive SSH sessions (check with: ssh ${conn.alias} 'command -v node; node --version'); ` +
    `a node installed with nvm is often only on interactive shells' PATH — link it into /usr/local/bin, or set the node command for this node`;
  if (!state.nodePath) {
    throw new NodeError("NODE_JS_MISSING", `${conn.alias} has no \`${nodeCommand}\` on its PATH: ${fix}`, { alias: conn.alias });
  }
  const m = /^v(\d+)\./.exec(state.nodeVersion ?? "");
  if (!m || Number(m[1]) < MIN_NODE_MAJOR) {
    throw new NodeError("NODE_JS_MISSING", `${conn.alias} has Node.js ${state.nodeVersion || "of unknown version"} at ${state.nodePath}, but rbee needs ${MIN_NODE_MAJOR} or newer: ${fix}`, {
      alias: conn.alias,
      node_version: state.nodeVersion,
    });
  }
  return state.nodePath;
}

async function probePlatform(conn: SshConnection): Promise<NodePlatform> {
  // vulkaninfo can hang on broken drivers: bounded where `timeout` exists. Only a real GPU counts for
  // Vulkan: Mesa's CPU devices (lavapipe/llvmpipe) are skipped by ggml, so the prebuilt would be useless.
  const script = `T=; command -v timeout >/dev/null 2>&1 && T="timeout 20"
echo "os=$(uname -s)"
echo "machine=$(uname -m)"
if command -v nvidia-smi >/dev/null 2>&1 && $T nvidia-smi -L >/dev/null 2>&1; then echo "gpu=cuda"; fi
if command -v vulkaninfo >/dev/null 2>&1 && $T vulkaninfo --summary 2>/dev/null | grep -Eq 'PHYSICAL_DEVICE_TYPE_(DISCRETE|INTEGRATED|VIRTUAL)_GPU'; then echo "gpu=vulkan"; fi
if ldd --version 2>&1 | grep -qi musl; then echo "musl=yes"; fi
`;
  const r = await sh(conn, script, { timeoutMs: 60_000 });
  const kv = parseKv(r.stdout);
  const os = (kv.get("os")?.[0] ?? "").toLowerCase();
  const gpus = (kv.get("gpu") ?? []) as GpuKind[];
  if (os === "darwin" && (kv.get("machine")?.[0] ?? "") === "arm64") gpus.push("metal");
  return { os, machine: kv.get("machine")?.[0] ?? "", musl: kv.get("musl")?.[0] === "yes", gpus };
}

interface LocalAgent {
  script: string;
  sourceMap?: string;
  version: string;
  nodeModules?: string;
  nodeLlamaCppVersion: string;
}

const versionCache = new Map<string, string>();

/** The bundle to deploy and its version (asked from the bundle itself, so a test build of another version works). */
async function localAgent(opts: DeployOptions): Promise<LocalAgent> {
  const script = path.resolve(opts.agentScript ?? process.env.RBEE_AGENT_SCRIPT ?? path.join(__dirname, "hive-agent.js"));
  if (!existsSync(script)) {
    throw new NodeError("DEPLOY_BUNDLE_MISSING", `the hive-agent bundle is missing at ${script}; build it with npm run build (or reinstall rbee)`, { path: script });
  }
  const nodeModules = opts.localNodeModules ?? findNodeModulesWith("node-llama-cpp", path.dirname(script));
  const nlc = nodeModules ? packageVersion(nodeModules, "node-llama-cpp") : undefined;
  const key = `${script}:${readFileSync(script).length}`;
  let version = versionCache.get(key);
  if (!version) {
    version = await new Promise<string>((resolve, reject) => {
      const p = spawn(process.execPath, [script, "version"], { env: { ...process.env, ELECTRON_RUN_AS_NODE: "1" }, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      p.stdout.on("data", (d) => (out += d));
      p.on("error", reject);
      p.on("exit", (code) =>
        code === 0 && /^\d+\.\d+\.\d+/.test(out.trim())
          ? resolve(out.trim())
          : reject(new NodeError("DEPLOY_BUNDLE_MISSING", `${script} does not print a version (exit ${code}); rebuild it with npm run build`)),
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

function agentPackageJson(version: string, nlcVersion: string, prebuilts: string[]): string {
  const dependencies: Record<string, string> = { "node-llama-cpp": nlcVersion };
  for (const p of prebuilts) dependencies[p] = nlcVersion;
  return JSON.stringify({ name: "rbee-hive-agent", version, private: true, description: "rbee hive-agent (deployed by rbee)", dependencies }, null, 2) + "\n";
}

/** Marker of what a node_modules holds, so an upgrade can reuse it instead of copying again. */
function runtimeMarker(nlcVersion: string, prebuilts: string[]): string {
  return JSON.stringify({ "node-llama-cpp": nlcVersion, prebuilts: [...prebuilts].sort() });
}

/**
 * Deploys the hive-agent and starts its hive, or does nothing when the same version already runs
 * and answers. A new version replaces the old one (the model catalog stays).
 */
export async function deployHive(conn: SshConnection, opts: DeployOptions = {}): Promise<DeployResult> {
  const started = Date.now();
  const emit = opts.onProgress ?? (() => {});
  const nodeCommand = opts.nodeCommand ?? "node";
  const local = await localAgent(opts);

  emit({ step: "connect", status: "started", message: `connecting to ${conn.alias}` });
  await conn.connect();
  emit({ step: "connect", status: "done", message: `connected to ${conn.alias}` });

  emit({ step: "probe", status: "started", message: `checking ${conn.alias}` });
  const state = await probeState(conn, local.version, nodeCommand);
  const nodePath = requireNodeJs(conn, state, nodeCommand);
  emit({ step: "probe", status: "done", message: `${conn.alias}: Node.js ${state.nodeVersion}; agent ${local.version} ${state.installed ? "installed" : "not installed"}` });

  const upToDate = await upToDateResult(conn, state, local.version, started, emit);
  if (upToDate) return upToDate;
  return withDeployLock(conn, emit, async () => {
    // Another deploy (another window, another CLI run) may have finished while we waited.
    const fresh = await probeState(conn, local.version, nodeCommand);
    return (await upToDateResult(conn, fresh, local.version, started, emit)) ?? installAndStart(conn, fresh, local, nodePath, opts, emit, started);
  });
}

/** The result of a no-op deploy when the same version is installed, running and answering. */
async function upToDateResult(conn: SshConnection, state: NodeState, version: string, started: number, emit: (e: DeployEvent) => void): Promise<DeployResult | undefined> {
  if (!(state.installed && state.hiveAlive && state.hive!.version === version && state.token)) return undefined;
  if (!(await hiveAnswers(conn, state.hive!.port, state.token, version))) return undefined;
  emit({ step: "health", status: "done", message: `hive ${version} on ${conn.alias} is up to date` });
  return {
    alias: conn.alias,
    version,
    changed: false,
    runtime: "present",
    backends: state.backends,
    pid: state.hive!.pid,
    port: state.hive!.port,
    token: state.token,
    agentDir: `${state.root}/agent/${version}`,
    hiveHome: state.hiveHome,
    durationMs: Date.now() - started,
  };
}

/**
 * One deploy at a time per node, across processes: a lock folder under ~/.rbee (mkdir is atomic
 * everywhere; flock is not on macOS). A lock older than 15 minutes is a crashed deploy's and is broken.
 */
async function withDeployLock<T>(conn: SshConnection, emit: (e: DeployEvent) => void, fn: () => Promise<T>): Promise<T> {
  const acquire = `${REMOTE_PATHS}
mkdir -p "$R"
i=0
while ! mkdir "$R/deploy.lock" 2>/dev/null; do
  if [ -n "$(find "$R/deploy.lock" -maxdepth 0 -mmin +15 2>/dev/null)" ]; then rm -rf "$R/deploy.lock"; continue; fi
  [ $i -eq 0 ] && echo waiting
  i=$((i+1)); [ $i -gt 3000 ] && exit 5
  sleep 0.2
done`;
  const r = await sh(conn, acquire, { timeoutMs: 11 * 60_000 });
  if (r.code !== 0) {
    throw new NodeError("REMOTE_COMMAND_FAILED", `another deploy to ${conn.alias} has held ~/.rbee/deploy.lock for 10 minutes; if none runs, remove that folder on the node`, { alias: conn.alias });
  }
  if (r.stdout.includes("waiting")) emit({ step: "probe", status: "warning", message: `waited for another deploy to ${conn.alias} to finish` });
  try {
    return await fn();
  } finally {
    await sh(conn, `${REMOTE_PATHS}\nrmdir "$R/deploy.lock" 2>/dev/null || rm -rf "$R/deploy.lock"`).catch(() => {});
  }
}

async function installAndStart(
  conn: SshConnection,
  state: NodeState,
  local: LocalAgent,
  nodePath: string,
  opts: DeployOptions,
  emit: (e: DeployEvent) => void,
  started: number,
): Promise<DeployResult> {
  const agentDir = `${state.root}/agent/${local.version}`;
  let runtime: DeployResult["runtime"] = "present";
  let backends: string[];
  if (!state.installed) {
    const platform = await probePlatform(conn);
    const choice = prebuiltPackagesFor(platform);
    const tmp = `${state.root}/agent/.tmp-${local.version}-${randomBytes(4).toString("hex")}`;
    emit({ step: "upload", status: "started", message: `uploading hive-agent ${local.version} to ${conn.alias}` });
    await sh(conn, `${REMOTE_PATHS}\nrm -rf "$A"/.tmp-*\nmkdir -p ${shQuote(tmp)}`);
    await uploadFiles(conn, [
      { local: local.script, remote: `${tmp}/hive-agent.js` },
      ...(local.sourceMap ? [{ local: local.sourceMap, remote: `${tmp}/hive-agent.js.map` }] : []),
      { content: agentPackageJson(local.version, local.nodeLlamaCppVersion, choice.packages), remote: `${tmp}/package.json` },
    ]);
    emit({ step: "upload", status: "done", message: `uploaded hive-agent ${local.version}` });

    const marker = runtimeMarker(local.nodeLlamaCppVersion, choice.packages);
    const reusable = await findReusableRuntime(conn, state, marker);
    const installed = reusable ? undefined : await installRuntime(conn, tmp, local, platform, choice.packages, marker, opts.runtimeInstall ?? "auto", emit);
    backends = installed?.backends ?? choice.backends;

    if (state.hiveAlive) await stopHive(conn, state.hive!.pid, emit);
    emit({ step: "activate", status: "started", message: `activating ${local.version}` });
    const moveRuntime = reusable ? `mv ${shQuote(`${state.root}/agent/${reusable}/node_modules`)} ${shQuote(tmp)}/node_modules\n` : "";
    const act = await sh(conn, `set -e\n${moveRuntime}rm -rf ${shQuote(agentDir)}\nmv ${shQuote(tmp)} ${shQuote(agentDir)}\nprintf '%s\\n' ${shQuote(backends.join(" "))} > ${shQuote(agentDir)}/.complete`);
    if (act.code !== 0) throw new NodeError("RUNTIME_INSTALL_FAILED", `activating ${local.version} on ${conn.alias} failed: ${act.stderr.trim()}`, { alias: conn.alias });
    runtime = reusable ? "reused" : installed!.how;
    emit({ step: "activate", status: "done", message: reusable ? `reused node-llama-cpp from ${reusable}` : `installed ${local.version}` });
  } else {
    emit({ step: "upload", status: "skipped", message: `hive-agent ${local.version} is already installed` });
    backends = state.backends;
    if (state.hiveAlive) await stopHive(conn, state.hive!.pid, emit);
  }

  emit({ step: "token", status: "started", message: "preparing the hive token" });
  const token = state.token ?? (await writeToken(conn));
  emit({ step: "token", status: "done", message: state.token ? "kept the node's token" : "generated a new token (mode 0600)" });

  emit({ step: "start", status: "started", message: `starting the hive on ${conn.alias}` });
  const info = await startHive(conn, nodePath, agentDir, opts);
  emit({ step: "start", status: "done", message: `hive started (pid ${info.pid}, port ${info.port} on the node's 127.0.0.1)` });

  emit({ step: "health", status: "started", message: "checking /v1/health through SSH" });
  if (!(await hiveAnswers(conn, info.port, token, local.version, 5))) {
    throw new NodeError("HIVE_START_FAILED", `the hive on ${conn.alias} started (pid ${info.pid}) but /v1/health did not answer through SSH; see rbee logs --node ${conn.alias}`, { alias: conn.alias });
  }
  emit({ step: "health", status: "done", message: `hive ${local.version} on ${conn.alias} answers` });

  // Older versions go only now, once the new one answers.
  emit({ step: "cleanup", status: "started", message: "removing older versions" });
  await sh(conn, `${REMOTE_PATHS}\nfor d in "$A"/*; do [ "$d" = ${shQuote(agentDir)} ] || rm -rf "$d"; done`);
  emit({ step: "cleanup", status: "done", message: "older versions removed" });

  return {
    alias: conn.alias,
    version: local.version,
    changed: true,
    runtime,
    backends,
    pid: info.pid,
    port: info.port,
    token,
    agentDir,
    hiveHome: state.hiveHome,
    durationMs: Date.now() - started,
  };
}

/** /v1/health through the SSH connection, with the expected version. */
async function hiveAnswers(conn: SshConnection, port: number, token: string, version: string, attempts = 1): Promise<boolean> {
  const transport = sshTransport(conn);
  try {
    const client = new HiveClient({ transport, baseUrl: `http://127.0.0.1:${port}`, token, nodeName: conn.alias, requestTimeoutMs: 10_000, retry: { attempts, baseMs: 100 } });
    const h = await client.health();
    return h.status === "alive" && h.version === version;
  } catch (err) {
    if (err instanceof RbeeError && err.code === "INVALID_API_KEY") {
      throw new NodeError("HIVE_START_FAILED", `the hive on ${conn.alias} refuses the token in its own token file; uninstall and deploy again (rbee nodes uninstall ${conn.alias})`, { alias: conn.alias });
    }
    return false;
  } finally {
    await transport.close();
  }
}

type Upload = { local: string; remote: string } | { content: string; remote: string };

async function uploadFiles(conn: SshConnection, files: Upload[]): Promise<void> {
  const sftp = await conn.sftp();
  try {
    for (const f of files) {
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error | null) =>
          err ? reject(new NodeError("RUNTIME_INSTALL_FAILED", `uploading ${f.remote} to ${conn.alias} failed: ${err.message}`, { alias: conn.alias })) : resolve();
        if ("local" in f) sftp.fastPut(f.local, f.remote, done);
        else sftp.writeFile(f.remote, f.content, done);
      });
    }
  } finally {
    sftp.end();
  }
}

/** An older version folder whose node_modules is exactly what this version needs. */
async function findReusableRuntime(conn: SshConnection, state: NodeState, marker: string): Promise<string | undefined> {
  for (const dir of state.agentDirs) {
    const r = await conn.exec(`cat ${shQuote(`${state.root}/agent/${dir}/node_modules/.rbee-runtime.json`)} 2>/dev/null`);
    if (r.code === 0 && r.stdout.trim() === marker) return dir;
  }
  return undefined;
}

async function installRuntime(
  conn: SshConnection,
  dir: string,
  local: LocalAgent,
  platform: NodePlatform,
  prebuilts: string[],
  marker: string,
  how: RuntimeInstall,
  emit: (e: DeployEvent) => void,
): Promise<{ how: "copied" | "registry"; backends: string[] }> {
  const target = nodeJsPlatform(platform);
  const samePlatform = target.platform === process.platform && target.arch === process.arch;
  let method: "copied" | "registry";
  if (how === "registry") method = "registry";
  else if (how === "copy") method = "copied";
  else method = (await registryReachable(conn, local.nodeLlamaCppVersion)) ? "registry" : "copied";

  if (method === "registry") {
    emit({ step: "runtime", status: "started", message: `npm install node-llama-cpp ${local.nodeLlamaCppVersion} (${prebuilts.join(", ")}) on ${conn.alias}` });
    const r = await sh(conn, `cd ${shQuote(dir)} && npm install --omit=dev --omit=optional --no-audit --no-fund --no-package-lock --loglevel=error && printf '%s' ${shQuote(marker)} > node_modules/.rbee-runtime.json`, {
      timeoutMs: 30 * 60_000,
    });
    if (r.code !== 0) {
      throw new NodeError("RUNTIME_INSTALL_FAILED", `npm install on ${conn.alias} failed: ${(r.stderr.trim() || r.stdout.trim()).split("\n").slice(-8).join("\n")}`, { alias: conn.alias });
    }
    emit({ step: "runtime", status: "done", message: "node-llama-cpp installed from the registry" });
    return { how: "registry", backends: prebuiltPackagesFor(platform).backends };
  }

  if (!samePlatform) {
    throw new NodeError(
      "RUNTIME_INSTALL_FAILED",
      `${conn.alias} (${platform.os} ${platform.machine}) cannot reach the npm registry, and this machine (${process.platform} ${process.arch}) has no node-llama-cpp for its platform to copy; ` +
        `give the node access to registry.npmjs.org (or an npm mirror via npm config set registry), then deploy again`,
      { alias: conn.alias },
    );
  }
  if (!local.nodeModules) {
    throw new NodeError("DEPLOY_BUNDLE_MISSING", `node-llama-cpp is not installed next to ${local.script}, so it cannot be copied to ${conn.alias}; run npm install`, {});
  }
  // Copy what this machine has: a GPU prebuilt that is not installed here is left out (with a warning).
  const available = prebuilts.filter((p) => existsSync(path.join(local.nodeModules!, p, "package.json")));
  const missing = prebuilts.filter((p) => !available.includes(p));
  if (!available.length) throw new NodeError("DEPLOY_BUNDLE_MISSING", `none of ${prebuilts.join(", ")} is installed under ${local.nodeModules}; run npm install`, {});
  if (missing.length) emit({ step: "runtime", status: "warning", message: `${missing.join(", ")} not installed on this machine: ${conn.alias} gets ${available.join(", ")} only` });
  const backends = prebuiltPackagesFor(platform).backends.filter((b) =>
    b === "cpu" ? true : available.some((p) => p.endsWith(b === "metal" ? "-metal" : `-${b}`)),
  );
  const rels = runtimeClosure(local.nodeModules, available);
  const total = closureSize(local.nodeModules, rels);
  emit({ step: "runtime", status: "started", message: `copying node-llama-cpp ${local.nodeLlamaCppVersion} (${available.join(", ")}, ${(total / 1e6).toFixed(0)} MB) to ${conn.alias}` });
  await copyTree(conn, local.nodeModules, rels, `${dir}/node_modules`, total, emit);
  const m = await conn.exec(`printf '%s' ${shQuote(runtimeMarker(local.nodeLlamaCppVersion, available))} > ${shQuote(`${dir}/node_modules/.rbee-runtime.json`)}`);
  if (m.code !== 0) throw new NodeError("RUNTIME_INSTALL_FAILED", `writing the runtime marker on ${conn.alias} failed: ${m.stderr.trim()}`, { alias: conn.alias });
  emit({ step: "runtime", status: "done", message: `node-llama-cpp copied (${(total / 1e6).toFixed(0)} MB)` });
  return { how: "copied", backends };
}

async function registryReachable(conn: SshConnection, nlcVersion: string): Promise<boolean> {
  const r = await sh(conn, `command -v npm >/dev/null 2>&1 || exit 9\nT=; command -v timeout >/dev/null 2>&1 && T="timeout 20"\n$T npm view ${shQuote(`node-llama-cpp@${nlcVersion}`)} version 2>/dev/null`, {
    timeoutMs: 40_000,
  });
  return r.code === 0 && r.stdout.trim() === nlcVersion;
}

/** tar | gzip over an exec channel into `remoteDir` (created). */
async function copyTree(conn: SshConnection, root: string, rels: string[], remoteDir: string, total: number, emit: (e: DeployEvent) => void): Promise<void> {
  const channel = await conn.execStream(`sh -c ${shQuote(`mkdir -p ${shQuote(remoteDir)} && exec tar -C ${shQuote(remoteDir)} -xzf -`)}`);
  const tar = spawn("tar", ["-C", root, "-cf", "-", ...RUNTIME_COPY_EXCLUDES.map((e) => `--exclude=${e}`), "--", ...rels], { stdio: ["ignore", "pipe", "pipe"] });
  let tarErr = "";
  tar.stderr.on("data", (d) => (tarErr += d));
  let sent = 0;
  let lastEmit = 0;
  tar.stdout.on("data", (d: Buffer) => {
    sent += d.length;
    if (Date.now() - lastEmit > 250) {
      lastEmit = Date.now();
      emit({ step: "runtime", status: "progress", bytes: Math.min(sent, total), totalBytes: total, message: `${(sent / 1e6).toFixed(0)} / ${(total / 1e6).toFixed(0)} MB` });
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
  if (localCode !== 0) throw new NodeError("RUNTIME_INSTALL_FAILED", `packing node-llama-cpp here failed (tar exit ${localCode}): ${tarErr.trim()}`, {});
  if (remote !== 0) throw new NodeError("RUNTIME_INSTALL_FAILED", `unpacking node-llama-cpp on ${conn.alias} failed (exit ${remote}): ${remoteErr.trim() || "no message"}`, { alias: conn.alias });
}

/** SIGTERM (the hive stops its workers first), then SIGKILL after the grace time. */
async function stopHive(conn: SshConnection, pid: number, emit: (e: DeployEvent) => void, graceMs = 35_000): Promise<void> {
  emit({ step: "stop", status: "started", message: `stopping the running hive (pid ${pid})` });
  const tenths = Math.ceil(graceMs / 100);
  const r = await sh(
    conn,
    `P=${pid}\nps -p "$P" -o args= 2>/dev/null | grep -q hive-agent || exit 0\nkill -TERM "$P" 2>/dev/null\ni=0\nwhile [ $i -lt ${tenths} ]; do kill -0 "$P" 2>/dev/null || exit 0; sleep 0.1; i=$((i+1)); done\nkill -KILL "$P" 2>/dev/null\necho killed`,
    { timeoutMs: graceMs + 15_000 },
  );
  emit({ step: "stop", status: "done", message: r.stdout.includes("killed") ? `hive ${pid} did not stop in time and was killed` : `hive ${pid} stopped` });
}

async function writeToken(conn: SshConnection): Promise<string> {
  const token = randomBytes(32).toString("base64url");
  // The token travels on stdin: a command line would show it in the node's process list.
  const r = await sh(conn, `${REMOTE_PATHS}\numask 077\nmkdir -p "$H"\ncat > "$H/token.tmp" && chmod 600 "$H/token.tmp" && mv "$H/token.tmp" "$H/token"`, { stdin: token });
  if (r.code !== 0) throw new NodeError("HIVE_START_FAILED", `writing the hive token on ${conn.alias} failed: ${r.stderr.trim()}`, { alias: conn.alias });
  return token;
}

/** Starts the hive detached from the SSH session and waits for its hive.json. */
async function startHive(conn: SshConnection, nodePath: string, agentDir: string, opts: DeployOptions): Promise<HiveInfo> {
  const limitMs = opts.startTimeoutMs ?? 30_000;
  // RBEE_NATIVE_BUILD set where the keeper runs applies to the hives it starts on SSH nodes too.
  const nativeBuild = process.env.RBEE_NATIVE_BUILD ? ["--native-build", process.env.RBEE_NATIVE_BUILD] : [];
  const extra = [...nativeBuild, ...(opts.daemonArgs ?? [])].map(shQuote).join(" ");
  // setsid where it exists (not on macOS): the hive must outlive this session; nohup covers SIGHUP.
  const script = `${REMOTE_PATHS}
mkdir -p "$H"
cd ${shQuote(agentDir)} || exit 1
rm -f "$H/hive.json"
S=; command -v setsid >/dev/null 2>&1 && S=setsid
( exec $S nohup ${shQuote(nodePath)} hive-agent.js daemon --bind 127.0.0.1 --port 0 --token-file "$H/token" --home "$H" ${extra} ) >> "$H/hive.log" 2>&1 < /dev/null &
PID=$!
echo "pid=$PID"
i=0
while [ $i -lt ${Math.ceil(limitMs / 100)} ]; do
  if [ -f "$H/hive.json" ] && grep -Eq "\\"pid\\": *$PID[^0-9]" "$H/hive.json"; then echo "hive_json=$(tr -d '\\n' < "$H/hive.json")"; exit 0; fi
  if ! kill -0 $PID 2>/dev/null; then echo "state=exited"; tail -n 30 "$H/hive.log"; exit 3; fi
  sleep 0.1
  i=$((i+1))
done
echo "state=timeout"; tail -n 30 "$H/hive.log"; exit 4
`;
  const r = await sh(conn, script, { timeoutMs: limitMs + 15_000 });
  const kv = parseKv(r.stdout);
  if (r.code === 0) {
    const j = JSON.parse(kv.get("hive_json")![0]);
    return { pid: j.pid, port: j.port, version: j.version };
  }
  const logTail = r.stdout
    .split("\n")
    .filter((l) => !/^(pid|state)=/.test(l))
    .join("\n")
    .trim();
  const why = kv.get("state")?.[0] === "timeout" ? `did not write hive.json within ${limitMs / 1000} s` : "exited at start";
  throw new NodeError("HIVE_START_FAILED", `the hive on ${conn.alias} ${why}; the end of its log:\n${logTail || r.stderr.trim() || "(empty)"}`, { alias: conn.alias });
}

/** Installed versions, whether the hive runs, and whether it answers through SSH. */
export async function hiveStatus(conn: SshConnection, opts: { nodeCommand?: string } = {}): Promise<RemoteHiveStatus> {
  const state = await probeState(conn, "-", opts.nodeCommand ?? "node");
  const running = state.hiveAlive;
  const healthy = running && state.token !== undefined ? await hiveAnswers(conn, state.hive!.port, state.token, state.hive!.version) : false;
  return {
    alias: conn.alias,
    installedVersions: state.agentDirs,
    running,
    pid: running ? state.hive!.pid : undefined,
    port: running ? state.hive!.port : undefined,
    version: running ? state.hive!.version : undefined,
    healthy,
    hiveHome: state.hiveHome,
  };
}

/** The hive's token from the node (a secret: never log it); undefined when there is none. */
export async function readHiveToken(conn: SshConnection): Promise<string | undefined> {
  const r = await sh(conn, `${REMOTE_PATHS}\ncat "$H/token" 2>/dev/null`);
  return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : undefined;
}

/**
 * Stops the hive and removes the agent, its token, hive.json and log. The model catalog stays
 * unless `purgeModels` (models are often large downloads).
 */
export async function uninstallHive(conn: SshConnection, opts: { purgeModels?: boolean; onProgress?: (e: DeployEvent) => void } = {}): Promise<{ removed: boolean }> {
  const emit = opts.onProgress ?? (() => {});
  const state = await probeState(conn, "-", "node");
  if (state.hiveAlive) await stopHive(conn, state.hive!.pid, emit);
  const removeModels = opts.purgeModels ? `rm -rf "$H/models" "$H/catalog.json"\n` : "";
  const r = await sh(
    conn,
    `${REMOTE_PATHS}\nfound=0\n[ -d "$A" ] && found=1\n[ -f "$H/token" ] && found=1\nrm -rf "$A"\nrm -f "$H/token" "$H/hive.json" "$H/hive.log"\n${removeModels}rmdir "$H" 2>/dev/null\nrmdir "$R" 2>/dev/null\necho "found=$found"`,
  );
  if (r.code !== 0 && !/found=/.test(r.stdout)) throw new NodeError("REMOTE_COMMAND_FAILED", `uninstall on ${conn.alias} failed: ${r.stderr.trim()}`, { alias: conn.alias });
  emit({ step: "cleanup", status: "done", message: `removed rbee from ${conn.alias}${opts.purgeModels ? " (models too)" : "; models kept"}` });
  return { removed: r.stdout.includes("found=1") };
}

/**
 * The hive's log on the node: its last `lines` lines, then (with `follow`) what it appends until
 * the signal aborts. Yields text chunks as they arrive.
 */
export async function* hiveLogs(conn: SshConnection, opts: { follow?: boolean; lines?: number; signal?: AbortSignal } = {}): AsyncGenerator<string> {
  const lines = Math.max(0, Math.floor(opts.lines ?? 200));
  const script = `${REMOTE_PATHS}\n[ -f "$H/hive.log" ] || { echo "no hive log at $H/hive.log" >&2; exit 3; }\nexec tail -n ${lines} ${opts.follow ? "-f " : ""}"$H/hive.log"`;
  const channel = await conn.execStream(`sh -c ${shQuote(script)}`);
  let stderr = "";
  channel.stderr.on("data", (d: Buffer) => (stderr += d));
  const closed = new Promise<number | null | undefined>((resolve) => channel.once("close", (c?: number | null) => resolve(c)));
  const stop = () => {
    // Ask the remote tail to end (sshd forwards the signal), then close our side.
    channel.signal("TERM");
    channel.close();
  };
  opts.signal?.addEventListener("abort", stop, { once: true });
  try {
    channel.setEncoding("utf8");
    for await (const chunk of channel as AsyncIterable<string>) yield chunk;
  } catch (err) {
    if (!opts.signal?.aborted) throw err;
  } finally {
    opts.signal?.removeEventListener("abort", stop);
    if (!channel.destroyed) stop();
  }
  const exitCode = opts.signal?.aborted ? undefined : await closed;
  if (exitCode === 3) throw new NodeError("HIVE_NOT_DEPLOYED", `${conn.alias} has no hive log (${stderr.trim()}); deploy first: rbee nodes deploy ${conn.alias}`, { alias: conn.alias });
}
