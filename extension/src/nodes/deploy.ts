// The hive-agent's life on a remote node, over its SSH connection: deploy (idempotent), status,
// logs and uninstall. Layout on the node (RBEE_HOME moves ~/.rbee, as on this machine):
//
//   ~/.rbee/runtime/<id>/      one runtime set: node/bin/node (the pinned Node.js, unless the node
//                              runs its own), node_modules/ (node-llama-cpp, its closure, the
//                              prebuilts for the node's hardware), .manifest (sha256 of every file)
//   ~/.rbee/agent/<version>/   hive-agent.js, package.json, node_modules → ../../runtime/<id>/node_modules,
//                              .manifest (sha256 of each file the keeper shipped), .complete
//   ~/.rbee/hive/              the hive's home (0700): token (0600), hive.json, hive.log, models/,
//                              hive.sock and workers/<id>.sock (the hive listens on Unix sockets only)
//   ~/.rbee/deploy.lock/owner  the deploy in progress (its owner token, refreshed while held)
//
// The node needs only sshd, a POSIX sh, tar and gzip: the keeper brings the runtime as npm tarballs
// verified against hashes pinned in this build (runtime-cache.ts). "Up to date" means every shipped
// file still has its recorded hash and the hive answers with this version; anything else (a
// tampered or half-copied file) is deployed again. A deploy builds the new version in its own temp
// folders and swaps it in only at the end, so a cancelled or failed deploy leaves the previous
// version running. Everything rbee creates on the node is created under umask 077. The model
// catalog lives in the hive's home, outside the versioned folder, so an upgrade keeps it.
// Every remote command runs under `sh -c`, whatever the user's login shell is.

import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { createGzip } from "node:zlib";
import { HIVE_SOCKET_NAME, RbeeError, socketPathOf } from "@rbee/hive-agent/protocol";
import { HiveClient } from "../keeper/hive-client";
import type { SshConnection } from "./connection";
import { NodeError, isNodeError } from "./errors";
import { RuntimeCache, defaultRuntimeCacheDir, integrityDigest, tarballFileName } from "./runtime-cache";
import {
  closureSize,
  findNodeModulesWith,
  loadRuntimePins,
  nodeJsPlatform,
  packageVersion,
  prebuiltPackagesFor,
  runtimeClosure,
  runtimeSetFor,
  RUNTIME_COPY_EXCLUDES,
  type GpuKind,
  type NodePlatform,
  type PinnedTarball,
  type RuntimePins,
} from "./runtime-packages";
import { shQuote } from "./shell";
import { sshTransport } from "./ssh-transport";

export const MIN_NODE_MAJOR = 20;

export type DeployStep = "connect" | "probe" | "fetch" | "upload" | "runtime" | "stop" | "activate" | "token" | "start" | "health" | "cleanup";

export type DeployEvent =
  | { step: DeployStep; status: "started" | "done" | "skipped"; message: string }
  | { step: DeployStep; status: "progress"; bytes: number; totalBytes: number; message: string }
  | { step: DeployStep; status: "warning"; message: string };

/**
 * How node-llama-cpp reaches the node: `pinned` (the default) uploads the pinned npm tarballs from
 * this machine's runtime cache; `copy` sends this checkout's installed node_modules and runs the
 * node's own Node.js (development only: same OS/CPU, no integrity pins).
 */
export type RuntimeInstall = "pinned" | "copy";

/** Which Node.js runs the hive: the pinned build rbee ships (default) or the node's own (≥ 20). */
export type NodeRuntime = "pinned" | "system";

export interface DeployOptions {
  /** The hive-agent bundle to deploy; default hive-agent.js next to this bundle (or $RBEE_AGENT_SCRIPT). */
  agentScript?: string;
  runtimeInstall?: RuntimeInstall;
  nodeRuntime?: NodeRuntime;
  /** The tarball cache; default ~/.rbee/cache/runtime (VS Code passes its global storage). */
  cache?: RuntimeCache;
  cacheDir?: string;
  /** The runtime pins; default the runtime-pins.json shipped with this build. */
  pins?: RuntimePins;
  /** node_modules to copy from (runtimeInstall "copy"); default the one holding node-llama-cpp above the agent script. */
  localNodeModules?: string;
  /** The `node` to run with nodeRuntime "system"; default the one on PATH of a non-interactive SSH session. */
  nodeCommand?: string;
  /** Extra `hive-agent daemon` flags (tests shorten timeouts with them). */
  daemonArgs?: string[];
  /** Limit for the hive to write hive.json after it starts. */
  startTimeoutMs?: number;
  /** Cancels the deploy until the new version is swapped in; the previous version keeps running. */
  signal?: AbortSignal;
  onProgress?: (e: DeployEvent) => void;
}

export interface DeployResult {
  alias: string;
  version: string;
  /** False when the same version was already installed, intact and healthy (nothing was done). */
  changed: boolean;
  /** How the runtime got there this time: already there, uploaded from the cache, or copied (dev). */
  runtime: "present" | "uploaded" | "copied" | "reused";
  /** The backends the installed prebuilts give (cpu, cuda, vulkan, metal). */
  backends: string[];
  /** Bytes sent to the node in this deploy (files and runtime). */
  uploadedBytes: number;
  pid: number;
  /** The hive's address on the node: `unix:<hive home>/hive.sock`. */
  address: string;
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
  /** `unix:<hive home>/hive.sock` while running. */
  address?: string;
  version?: string;
  /** /v1/health answered through the SSH connection. */
  healthy: boolean;
  hiveHome: string;
}

interface HiveInfo {
  pid: number;
  address: string;
  version: string;
}

/**
 * hive.json's content. Only a hive socket in that home is an address we talk to; a file of an older
 * hive-agent (which named a TCP port) gives its pid with no address, so a deploy stops that hive.
 */
function parseHiveInfo(json: string, hiveHome: string): HiveInfo | undefined {
  try {
    const j = JSON.parse(json);
    if (!Number.isInteger(j.pid)) return undefined;
    const ours = typeof j.address === "string" && socketPathOf(j.address) === `${hiveHome}/${HIVE_SOCKET_NAME}`;
    return { pid: j.pid, address: ours ? j.address : "", version: String(j.version) };
  } catch {
    // a torn or foreign file: treated as no hive
  }
  return undefined;
}

/** What one quick remote probe tells about a node's hive (no hardware probing). */
interface NodeState {
  root: string;
  hiveHome: string;
  nodePath?: string;
  nodeVersion?: string;
  /** The version's folder is complete and every file in it and its runtime has its recorded hash. */
  installed: boolean;
  /** sha256 of the installed hive-agent.js as recorded at deploy. */
  agentSha?: string;
  /** Backends, runtime id and node program of the installed version (from its .complete). */
  backends: string[];
  runtimeId?: string;
  node?: string;
  agentDirs: string[];
  hive?: HiveInfo;
  hiveAlive: boolean;
  token?: string;
}

/** Shell lines that set R (the rbee root), H (hive home) and A (agent folder) on the node, umask 077. */
const REMOTE_PATHS = [
  "umask 077",
  'R="${RBEE_HOME:-$HOME/.rbee}"',
  'case "$R" in /*) ;; *) R="$HOME/$R" ;; esac',
  'H="$R/hive"',
  'A="$R/agent"',
].join("\n");

/** S256 / S512: sha256sum and sha512sum (GNU, busybox), or shasum on macOS; same output and -c format. */
const HASH_TOOLS = `if command -v sha256sum >/dev/null 2>&1; then S256=sha256sum; S512=sha512sum; else S256="shasum -a 256"; S512="shasum -a 512"; fi`;

/**
 * verify DIR: every file listed in DIR/.manifest still has its sha256. The list is checked in up to
 * 4 parallel parts (one per core), so the ~200 MB of a runtime stay within the 1 s of a no-op deploy.
 */
const VERIFY_FN = `verify() (
  cd "$1" 2>/dev/null && [ -s .manifest ] || exit 1
  P=1; command -v nproc >/dev/null 2>&1 && P=$(nproc 2>/dev/null); [ "$P" -gt 4 ] 2>/dev/null && P=4
  L=$(wc -l < .manifest); [ "$P" -gt "$L" ] && P=$L; [ "$P" -ge 1 ] 2>/dev/null || P=1
  i=0; pids=
  while [ $i -lt $P ]; do awk -v p=$P -v i=$i 'NR % p == i' .manifest | $S256 -c --status - 2>/dev/null & pids="$pids $!"; i=$((i+1)); done
  ok=0; for p in $pids; do wait $p || ok=1; done; exit $ok
)`;

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

async function probeState(conn: SshConnection, version: string, nodeCommand: string, opts: { nodeVersion?: boolean } = {}): Promise<NodeState> {
  // Asking the node's own `node` for its version costs a process start: only when it is to be used.
  const script = `${REMOTE_PATHS}
${HASH_TOOLS}
${VERIFY_FN}
V=${shQuote(version)}
D="$A/$V"
echo "root=$R"
N=$(command -v ${shQuote(nodeCommand)} 2>/dev/null)
echo "node=$N"
${opts.nodeVersion === false ? "" : `if [ -n "$N" ]; then echo "node_version=$("$N" --version 2>/dev/null)"; fi`}
if [ -f "$D/.complete" ] && [ -f "$D/.manifest" ]; then
  sed 's/^/c_/' "$D/.complete"
  echo "agent_sha=$(sed -n 's/^\\([0-9a-f]*\\)  hive-agent\\.js$/\\1/p' "$D/.manifest")"
  RID=$(sed -n 's/^runtime=//p' "$D/.complete")
  if [ -n "$RID" ] && [ -f "$R/runtime/$RID/.complete" ] && verify "$D" && verify "$R/runtime/$RID"; then echo "installed=yes"; fi
fi
for d in "$A"/*; do if [ -f "$d/.complete" ]; then echo "agent_dir=\${d##*/}"; fi; done
if [ -f "$H/hive.json" ]; then
  echo "hive_json=$(tr -d '\\n' < "$H/hive.json")"
  P=$(sed -n 's/.*"pid": *\\([0-9][0-9]*\\).*/\\1/p' "$H/hive.json")
  if [ -n "$P" ] && ps -p "$P" -o args= 2>/dev/null | grep -q hive-agent; then echo "hive_alive=yes"; fi
fi
if [ -f "$H/token" ]; then echo "token=$(cat "$H/token")"; fi
`;
  const r = await sh(conn, script, { timeoutMs: 60_000 });
  if (r.code !== 0) throw new NodeError("REMOTE_COMMAND_FAILED", `probing ${conn.alias} failed (exit ${r.code}): ${r.stderr.trim()}`, { alias: conn.alias });
  const kv = parseKv(r.stdout);
  const one = (k: string) => kv.get(k)?.[0] || undefined;
  const root = one("root") ?? "";
  const hiveJson = one("hive_json");
  const hive = hiveJson ? parseHiveInfo(hiveJson, `${root}/hive`) : undefined;
  return {
    root,
    hiveHome: `${root}/hive`,
    nodePath: one("node"),
    nodeVersion: one("node_version"),
    installed: one("installed") === "yes",
    agentSha: one("agent_sha"),
    backends: (one("c_backends") ?? "").split(/\s+/).filter(Boolean),
    runtimeId: one("c_runtime"),
    node: one("c_node"),
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
    `a node installed with nvm is often only on interactive shells' PATH — link it into /usr/local/bin, or deploy with the Node.js rbee brings (the default: --node-runtime pinned)`;
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

interface ProbedPlatform extends NodePlatform {
  /** Tools the runtime install needs that the node lacks. */
  missingTools: string[];
}

async function probePlatform(conn: SshConnection): Promise<ProbedPlatform> {
  // vulkaninfo can hang on broken drivers: bounded where `timeout` exists. A software Vulkan device
  // (Mesa's lavapipe, on many GPU-less servers) is not a GPU: only real device types count, unless the
  // node lists its Vulkan devices in GGML_VK_VISIBLE_DEVICES, which makes ggml use even CPU-type ones.
  const script = `T=; command -v timeout >/dev/null 2>&1 && T="timeout 20"
echo "os=$(uname -s)"
echo "machine=$(uname -m)"
if command -v nvidia-smi >/dev/null 2>&1 && $T nvidia-smi -L >/dev/null 2>&1; then echo "gpu=cuda"; fi
VK='DISCRETE_GPU|INTEGRATED_GPU|VIRTUAL_GPU'; [ -n "\${GGML_VK_VISIBLE_DEVICES:-}" ] && VK="$VK|CPU"
if command -v vulkaninfo >/dev/null 2>&1 && $T vulkaninfo --summary 2>/dev/null | grep -Eq "deviceType *= *PHYSICAL_DEVICE_TYPE_($VK)"; then echo "gpu=vulkan"; fi
if ldd --version 2>&1 | grep -qi musl || ls /lib/ld-musl-* >/dev/null 2>&1; then echo "musl=yes"; fi
G=$(getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc \\([0-9][0-9.]*\\).*/\\1/p')
[ -n "$G" ] || G=$(ldd --version 2>&1 | sed -n '1s/.* \\([0-9][0-9]*\\.[0-9][0-9]*\\)$/\\1/p')
echo "glibc=$G"
for t in tar gzip; do command -v $t >/dev/null 2>&1 || echo "missing=$t"; done
`;
  const r = await sh(conn, script, { timeoutMs: 60_000 });
  const kv = parseKv(r.stdout);
  const os = (kv.get("os")?.[0] ?? "").toLowerCase();
  const gpus = (kv.get("gpu") ?? []) as GpuKind[];
  if (os === "darwin" && (kv.get("machine")?.[0] ?? "") === "arm64") gpus.push("metal");
  const musl = kv.get("musl")?.[0] === "yes";
  return { os, machine: kv.get("machine")?.[0] ?? "", musl, glibc: musl ? undefined : kv.get("glibc")?.[0] || undefined, gpus, missingTools: kv.get("missing") ?? [] };
}

/**
 * Refuses a node whose sshd forbids TCP forwarding: the keeper reaches the hive only through
 * forwarded channels, so a deploy there would start a hive nobody can talk to.
 */
async function requireForwarding(conn: SshConnection): Promise<void> {
  try {
    // Port 9 (discard) on the node's loopback: "refused" means forwarding works, "prohibited" that it is off.
    const s = await conn.forwardOut("127.0.0.1", 9);
    s.destroy();
  } catch (err) {
    if (isNodeError(err, "SSH_CHANNEL_FAILED") && err.details?.reason === 1) {
      throw new NodeError(
        "UNSUPPORTED_PLATFORM",
        `${conn.alias}'s sshd does not allow TCP forwarding (AllowTcpForwarding no), and rbee reaches the hive only through forwarded SSH channels (it opens no port); ask the node's admin for "AllowTcpForwarding local" (or a Match block for your user) in sshd_config, or run VS Code on that machine itself (Remote-SSH), where it is localhost`,
        { alias: conn.alias },
      );
    }
    // Anything else (nothing listens on port 9, as expected) means forwarding is allowed.
  }
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
  const nodeModules = opts.runtimeInstall === "copy" ? (opts.localNodeModules ?? findNodeModulesWith("node-llama-cpp", path.dirname(script))) : undefined;
  const nlc = nodeModules ? packageVersion(nodeModules, "node-llama-cpp") : undefined;
  const key = `${script}:${statSync(script).size}:${statSync(script).mtimeMs}`;
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

function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * Deploys the hive-agent and starts its hive, or does nothing when the same version is installed
 * intact and answers. A new version replaces the old one (the model catalog stays).
 */
export async function deployHive(conn: SshConnection, opts: DeployOptions = {}): Promise<DeployResult> {
  const started = Date.now();
  const emit = opts.onProgress ?? (() => {});
  const nodeCommand = opts.nodeCommand ?? "node";
  const local = await localAgent(opts);
  const localSha = sha256(readFileSync(local.script));

  emit({ step: "connect", status: "started", message: `connecting to ${conn.alias}` });
  await conn.connect();
  emit({ step: "connect", status: "done", message: `connected to ${conn.alias}` });

  emit({ step: "probe", status: "started", message: `checking ${conn.alias}` });
  const systemNode = (opts.runtimeInstall ?? "pinned") === "copy" || opts.nodeRuntime === "system";
  const state = await probeState(conn, local.version, nodeCommand, { nodeVersion: systemNode });
  emit({ step: "probe", status: "done", message: `${conn.alias}: agent ${local.version} ${state.installed ? "installed" : "not installed (or not intact)"}` });

  const upToDate = await upToDateResult(conn, state, local.version, localSha, started, emit);
  if (upToDate) return upToDate;
  opts.signal?.throwIfAborted();
  // The node's own Node.js, when it is to run the hive, is checked before anything is written there.
  if (systemNode) requireNodeJs(conn, state, nodeCommand);
  await requireForwarding(conn);
  return withDeployLock(conn, emit, opts.signal, async (lock) => {
    // Another deploy (another window, another CLI run) may have finished while we waited.
    const fresh = await probeState(conn, local.version, nodeCommand, { nodeVersion: systemNode });
    return (await upToDateResult(conn, fresh, local.version, localSha, started, emit)) ?? installAndStart(conn, fresh, local, localSha, opts, emit, started, lock);
  });
}

/** The result of a no-op deploy when the same version is installed intact, running and answering. */
async function upToDateResult(conn: SshConnection, state: NodeState, version: string, localSha: string, started: number, emit: (e: DeployEvent) => void): Promise<DeployResult | undefined> {
  if (!(state.installed && state.agentSha === localSha && state.hiveAlive && state.hive!.address && state.hive!.version === version && state.token)) return undefined;
  if (!(await hiveAnswers(conn, state.hive!.address, state.token, version))) return undefined;
  emit({ step: "health", status: "done", message: `hive ${version} on ${conn.alias} is up to date` });
  return {
    alias: conn.alias,
    version,
    changed: false,
    runtime: "present",
    backends: state.backends,
    uploadedBytes: 0,
    pid: state.hive!.pid,
    address: state.hive!.address,
    token: state.token,
    agentDir: `${state.root}/agent/${version}`,
    hiveHome: state.hiveHome,
    durationMs: Date.now() - started,
  };
}

/** A held deploy lock: its owner token (also names this deployer's temp folders). */
interface DeployLock {
  owner: string;
  /** Set when another deployer broke the lock (we stopped refreshing it): stop before touching anything live. */
  lost: boolean;
}

export const LOCK_REFRESH_MS = 20_000;
/** A lock whose owner file was not refreshed for this long belongs to a crashed deploy. */
export const LOCK_STALE_MINUTES = 2;

/**
 * One deploy at a time per node, across processes and machines: a lock folder under ~/.rbee (mkdir
 * is atomic everywhere; flock is not on macOS) holding the owner's random token. The holder touches
 * it every 20 s; a lock not touched for 2 minutes is a crashed deploy's and is broken. Only the
 * owner removes it.
 */
async function withDeployLock<T>(conn: SshConnection, emit: (e: DeployEvent) => void, signal: AbortSignal | undefined, fn: (lock: DeployLock) => Promise<T>): Promise<T> {
  const lock: DeployLock = { owner: randomBytes(12).toString("hex"), lost: false };
  const L = '"$R/deploy.lock"';
  const acquire = `${REMOTE_PATHS}
O=${lock.owner}
mkdir -p "$R"
i=0
while ! mkdir ${L} 2>/dev/null; do
  S=$(find ${L}/owner -mmin +${LOCK_STALE_MINUTES} 2>/dev/null)
  [ -f ${L}/owner ] || S=$(find ${L} -maxdepth 0 -mmin +${LOCK_STALE_MINUTES} 2>/dev/null)
  if [ -n "$S" ]; then rm -rf ${L}; echo "broke=stale"; continue; fi
  [ $i -eq 0 ] && echo waiting
  i=$((i+1)); [ $i -gt 3000 ] && exit 5
  sleep 0.2
done
echo "$O" > ${L}/owner`;
  const r = await sh(conn, acquire, { timeoutMs: 11 * 60_000 });
  if (r.code !== 0) {
    throw new NodeError("REMOTE_COMMAND_FAILED", `another deploy to ${conn.alias} has held ~/.rbee/deploy.lock for 10 minutes; if none runs, remove that folder on the node`, { alias: conn.alias });
  }
  if (r.stdout.includes("waiting")) emit({ step: "probe", status: "warning", message: `waited for another deploy to ${conn.alias} to finish` });
  if (r.stdout.includes("broke=stale")) emit({ step: "probe", status: "warning", message: `removed a deploy lock on ${conn.alias} left by a deploy that stopped` });
  const mine = `[ "$(cat ${L}/owner 2>/dev/null)" = ${lock.owner} ]`;
  const refresh = setInterval(() => {
    sh(conn, `${REMOTE_PATHS}\nif ${mine}; then touch ${L}/owner; else echo lost; fi`)
      .then((x) => {
        if (x.stdout.includes("lost")) lock.lost = true;
      })
      .catch(() => {});
  }, LOCK_REFRESH_MS);
  refresh.unref?.();
  try {
    signal?.throwIfAborted();
    return await fn(lock);
  } finally {
    clearInterval(refresh);
    // This deployer's temp folders only: another deployer's are its own business.
    await sh(conn, `${REMOTE_PATHS}\nrm -rf "$A/.tmp-${lock.owner}" "$A/.old-${lock.owner}" "$R/runtime/.tmp-${lock.owner}"\nif ${mine}; then rm -rf ${L}; fi`).catch(() => {});
  }
}

function assertLockHeld(conn: SshConnection, lock: DeployLock): void {
  if (lock.lost) {
    throw new NodeError("REMOTE_COMMAND_FAILED", `another deploy took over ~/.rbee/deploy.lock on ${conn.alias} while this one ran; nothing was changed, deploy again`, { alias: conn.alias });
  }
}

async function installAndStart(
  conn: SshConnection,
  state: NodeState,
  local: LocalAgent,
  localSha: string,
  opts: DeployOptions,
  emit: (e: DeployEvent) => void,
  started: number,
  lock: DeployLock,
): Promise<DeployResult> {
  const agentDir = `${state.root}/agent/${local.version}`;
  const mode = opts.runtimeInstall ?? "pinned";
  const nodeRuntime: NodeRuntime = mode === "copy" ? "system" : (opts.nodeRuntime ?? "pinned");

  const platform = await probePlatform(conn);
  if (platform.missingTools.length) {
    throw new NodeError("UNSUPPORTED_PLATFORM", `${conn.alias} lacks ${platform.missingTools.join(" and ")}, which rbee needs to unpack its runtime there; install them with the node's package manager`, {
      alias: conn.alias,
    });
  }
  const pins = mode === "pinned" ? (opts.pins ?? loadRuntimePins()) : undefined;
  const set = pins ? runtimeSetFor(platform, pins, { withNode: nodeRuntime === "pinned" }) : copySet(local, platform);
  const systemNode = nodeRuntime === "system" ? requireNodeJs(conn, state, opts.nodeCommand ?? "node") : undefined;
  const runtimeDir = `${state.root}/runtime/${set.id}`;
  const nodePath = systemNode ?? `${runtimeDir}/node/bin/node`;
  let uploadedBytes = 0;

  // 1. The agent's files, into this deployer's temp folder, checked against the hashes we send.
  const tmp = `${state.root}/agent/.tmp-${lock.owner}`;
  emit({ step: "upload", status: "started", message: `uploading hive-agent ${local.version} to ${conn.alias}` });
  const files: { name: string; data: Buffer }[] = [
    { name: "hive-agent.js", data: readFileSync(local.script) },
    ...(local.sourceMap ? [{ name: "hive-agent.js.map", data: readFileSync(local.sourceMap) }] : []),
    { name: "package.json", data: Buffer.from(agentPackageJson(local.version, pins?.llamaVersion ?? local.nodeLlamaCppVersion, set.prebuilts)) },
  ];
  const manifest = files.map((f) => `${f.name === "hive-agent.js" ? localSha : sha256(f.data)}  ${f.name}\n`).join("");
  const mk = await sh(conn, `${REMOTE_PATHS}\nfind "$A" "$R/runtime" -maxdepth 1 -name '.tmp-*' -mtime +1 -exec rm -rf {} + 2>/dev/null\nmkdir -p ${shQuote(tmp)}`);
  if (mk.code !== 0) throw new NodeError("RUNTIME_INSTALL_FAILED", `creating ${tmp} on ${conn.alias} failed: ${mk.stderr.trim()}`, { alias: conn.alias });
  uploadedBytes += await uploadFiles(conn, [...files.map((f) => ({ content: f.data, remote: `${tmp}/${f.name}` })), { content: Buffer.from(manifest), remote: `${tmp}/.manifest` }], "upload", emit, opts.signal);
  emit({ step: "upload", status: "done", message: `uploaded hive-agent ${local.version}` });

  // 2. The runtime set, unless the node has it intact already (another version used the same set).
  let runtime: DeployResult["runtime"];
  const have = await sh(conn, `${REMOTE_PATHS}\n${HASH_TOOLS}\n${VERIFY_FN}\n[ -f ${shQuote(runtimeDir)}/.complete ] && verify ${shQuote(runtimeDir)} && echo intact`);
  if (have.stdout.includes("intact")) {
    runtime = "reused";
    emit({ step: "runtime", status: "skipped", message: `runtime ${set.id} is already on ${conn.alias}` });
  } else if (pins) {
    uploadedBytes += await uploadRuntime(conn, set, state.root, lock, opts, emit);
    runtime = "uploaded";
  } else {
    uploadedBytes += await copyRuntime(conn, local, platform, set, state.root, lock, emit);
    runtime = "copied";
  }

  // 3. Finish the temp folder: verify what arrived, link the runtime, mark it complete.
  const complete = `backends=${set.backends.join(" ")}\nruntime=${set.id}\nnode=${nodePath}\n`;
  const fin = await sh(
    conn,
    `${REMOTE_PATHS}\n${HASH_TOOLS}\nset -e\ncd ${shQuote(tmp)}\n$S256 -c --status .manifest || { echo "the uploaded agent files do not match their hashes" >&2; exit 3; }\nln -s ../../runtime/${set.id}/node_modules node_modules\nprintf '%s' ${shQuote(complete)} > .complete`,
  );
  if (fin.code !== 0) throw new NodeError("RUNTIME_INSTALL_FAILED", `preparing ${local.version} on ${conn.alias} failed: ${fin.stderr.trim()}`, { alias: conn.alias });

  // Past this point the running hive is touched: no cancel, and only while we still own the lock.
  opts.signal?.throwIfAborted();
  assertLockHeld(conn, lock);
  const previous = state.hiveAlive ? { pid: state.hive!.pid, version: state.hive!.version } : undefined;
  if (previous) await stopHive(conn, previous.pid, emit);
  emit({ step: "activate", status: "started", message: `activating ${local.version}` });
  const backup = `${state.root}/agent/.old-${lock.owner}`;
  const act = await sh(conn, `set -e\nif [ -e ${shQuote(agentDir)} ]; then mv ${shQuote(agentDir)} ${shQuote(backup)}; fi\nmv ${shQuote(tmp)} ${shQuote(agentDir)}`);
  if (act.code !== 0) throw new NodeError("RUNTIME_INSTALL_FAILED", `activating ${local.version} on ${conn.alias} failed: ${act.stderr.trim()}`, { alias: conn.alias });
  emit({ step: "activate", status: "done", message: runtime === "reused" ? `installed ${local.version} (runtime reused)` : `installed ${local.version}` });

  emit({ step: "token", status: "started", message: "preparing the hive token" });
  const token = state.token ?? (await writeToken(conn));
  emit({ step: "token", status: "done", message: state.token ? "kept the node's token" : "generated a new token (mode 0600)" });

  let info: HiveInfo;
  try {
    emit({ step: "start", status: "started", message: `starting the hive on ${conn.alias}` });
    info = await startHive(conn, nodePath, agentDir, state.hiveHome, opts);
    emit({ step: "start", status: "done", message: `hive started (pid ${info.pid}, listening on ${info.address})` });
    emit({ step: "health", status: "started", message: "checking /v1/health through SSH" });
    if (!(await hiveAnswers(conn, info.address, token, local.version, 5))) {
      throw new NodeError("HIVE_START_FAILED", `the hive on ${conn.alias} started (pid ${info.pid}) but /v1/health did not answer through SSH; see rbee logs --node ${conn.alias}`, { alias: conn.alias });
    }
  } catch (err) {
    // A failed upgrade puts the previous version back and starts it again.
    const back = previous ? await restorePrevious(conn, state, previous.version, local.version, agentDir, backup, opts) : undefined;
    if (err instanceof NodeError && back) throw new NodeError(err.code, `${err.message}\n${back}`, err.details);
    throw err;
  }
  emit({ step: "health", status: "done", message: `hive ${local.version} on ${conn.alias} answers` });

  // Older versions and runtime sets go only now, once the new one answers.
  emit({ step: "cleanup", status: "started", message: "removing older versions" });
  await sh(
    conn,
    `${REMOTE_PATHS}\nfor d in "$A"/*; do [ "$d" = ${shQuote(agentDir)} ] || rm -rf "$d"; done\nfor d in "$R"/runtime/*; do [ "\${d##*/}" = ${set.id} ] || rm -rf "$d"; done`,
  );
  emit({ step: "cleanup", status: "done", message: "older versions removed" });

  return {
    alias: conn.alias,
    version: local.version,
    changed: true,
    runtime,
    backends: set.backends,
    uploadedBytes,
    pid: info.pid,
    address: info.address,
    token,
    agentDir,
    hiveHome: state.hiveHome,
    durationMs: Date.now() - started,
  };
}

/** After a failed start: the previous version's folder back in place and its hive started; says what happened. */
async function restorePrevious(conn: SshConnection, state: NodeState, prevVersion: string, newVersion: string, agentDir: string, backup: string, opts: DeployOptions): Promise<string> {
  try {
    const prevDir = `${state.root}/agent/${prevVersion}`;
    if (prevVersion === newVersion) {
      const r = await sh(conn, `set -e\n[ -d ${shQuote(backup)} ]\nrm -rf ${shQuote(agentDir)}\nmv ${shQuote(backup)} ${shQuote(agentDir)}`);
      if (r.code !== 0) return `the previous files of ${prevVersion} could not be put back`;
    }
    const r = await sh(conn, `sed -n 's/^node=//p' ${shQuote(prevDir)}/.complete`);
    const nodePath = r.stdout.trim() || state.nodePath;
    if (!nodePath) return `the previous version ${prevVersion} could not be restarted (no node program recorded)`;
    const info = await startHive(conn, nodePath, prevDir, state.hiveHome, opts);
    return `the previous version ${prevVersion} was started again (pid ${info.pid})`;
  } catch (e) {
    return `restarting the previous version ${prevVersion} failed too: ${(e as Error).message}`;
  }
}

/** The runtime "set" of the development copy path: this checkout's node_modules and the node's own Node.js. */
function copySet(local: LocalAgent, platform: NodePlatform): { id: string; prebuilts: string[]; backends: string[]; node?: PinnedTarball; packages: PinnedTarball[] } {
  const target = nodeJsPlatform(platform);
  if (target.platform !== process.platform || target.arch !== process.arch) {
    throw new NodeError(
      "RUNTIME_INSTALL_FAILED",
      `${platform.os} ${platform.machine} differs from this machine (${process.platform} ${process.arch}), so its node_modules cannot be copied there; deploy with the pinned runtime (the default)`,
      {},
    );
  }
  if (!local.nodeModules) throw new NodeError("DEPLOY_BUNDLE_MISSING", `node-llama-cpp is not installed next to ${local.script}, so it cannot be copied; run npm install, or deploy the pinned runtime`, {});
  const choice = prebuiltPackagesFor(platform);
  const available = choice.packages.filter((p) => existsSync(path.join(local.nodeModules!, p, "package.json")));
  if (!available.length) throw new NodeError("DEPLOY_BUNDLE_MISSING", `none of ${choice.packages.join(", ")} is installed under ${local.nodeModules}; run npm install`, {});
  const backends = choice.backends.filter((b) => (b === "cpu" ? true : available.some((p) => p.endsWith(b === "metal" ? "-metal" : `-${b}`))));
  const id = "copy-" + sha256(JSON.stringify({ nlc: local.nodeLlamaCppVersion, available, from: local.nodeModules })).slice(0, 12);
  return { id, prebuilts: available, backends, packages: [] };
}

/**
 * Uploads the set's tarballs (fetched into the cache first when missing) to the node, which checks
 * each against its pinned sha512, unpacks it where package-lock.json puts it, records the sha256 of
 * every file, and moves the finished folder into place.
 */
async function uploadRuntime(
  conn: SshConnection,
  set: ReturnType<typeof runtimeSetFor>,
  root: string,
  lock: DeployLock,
  opts: DeployOptions,
  emit: (e: DeployEvent) => void,
): Promise<number> {
  const cache = opts.cache ?? new RuntimeCache(opts.cacheDir ?? defaultRuntimeCacheDir());
  const tarballs: PinnedTarball[] = [...(set.node ? [set.node] : []), ...set.packages];
  emit({ step: "fetch", status: "started", message: `checking the runtime cache (${tarballs.length} packages) in ${cache.dir}` });
  let lastEmit = 0;
  const got = await cache.ensure(tarballs, {
    signal: opts.signal,
    onProgress: (p) => {
      if (Date.now() - lastEmit < 250 && p.done < p.total) return;
      lastEmit = Date.now();
      emit({ step: "fetch", status: "progress", bytes: p.done, totalBytes: p.total, message: `${p.done} / ${p.total} packages, ${(p.fetchedBytes / 1e6).toFixed(1)} MB fetched` });
    },
  });
  emit({
    step: "fetch",
    status: "done",
    message: got.fetched ? `fetched ${got.fetched} packages (${(got.fetchedBytes / 1e6).toFixed(1)} MB) from the npm registry, verified` : "every package was in the cache, verified",
  });

  const tmp = `${root}/runtime/.tmp-${lock.owner}`;
  emit({ step: "runtime", status: "started", message: `uploading the runtime (${tarballs.length} packages) to ${conn.alias}` });
  const mk = await sh(conn, `${REMOTE_PATHS}\nrm -rf ${shQuote(tmp)}\nmkdir -p ${shQuote(tmp)}/.tarballs`);
  if (mk.code !== 0) throw new NodeError("RUNTIME_INSTALL_FAILED", `creating ${tmp} on ${conn.alias} failed: ${mk.stderr.trim()}`, { alias: conn.alias });
  // A package version installed at two paths of the tree travels once.
  const unique = [...new Map(tarballs.map((t, i) => [tarballFileName(t), { pin: t, file: got.files[i] }])).values()];
  const sums = unique.map((u) => `${integrityDigest(u.pin.integrity).hex}  ${tarballFileName(u.pin)}\n`).join("");
  const bytes = await uploadFiles(
    conn,
    [...unique.map((u) => ({ local: u.file, remote: `${tmp}/.tarballs/${tarballFileName(u.pin)}` })), { content: Buffer.from(sums), remote: `${tmp}/.tarballs/SHA512SUMS` }],
    "runtime",
    emit,
    opts.signal,
  );
  // Each tarball's single top folder (package/, or another name in a few old packages) is stripped.
  const list = tarballs.map((t) => `${t.path === "node" ? "node" : t.path}\t${tarballFileName(t)}`).join("\n");
  const unpack = `${REMOTE_PATHS}
${HASH_TOOLS}
set -e
cd ${shQuote(tmp)}
(cd .tarballs && $S512 -c --status SHA512SUMS) || { echo "the uploaded runtime tarballs do not match their pinned hashes" >&2; exit 3; }
X=; tar --version 2>/dev/null | grep -q GNU && X="--no-same-owner --no-same-permissions"
TAB=$(printf '\\t')
while IFS="$TAB" read -r dest file; do
  mkdir -p "$dest"
  tar $X -xzf ".tarballs/$file" -C "$dest" --strip-components=1
done <<'RBEE_LIST'
${list}
RBEE_LIST
rm -rf .tarballs node/include node/share node/lib/node_modules node/CHANGELOG.md node/README.md
chmod -R u+rwX,go-rwx .
find . -type f ! -name .manifest -exec $S256 {} + | sed 's|  \\./|  |' > .manifest
printf '%s\\n' ${shQuote(set.id)} > .complete
cd ..
rm -rf ${shQuote(set.id)}
mv ${shQuote(tmp)} ${shQuote(set.id)}`;
  opts.signal?.throwIfAborted();
  assertLockHeld(conn, lock);
  const r = await sh(conn, unpack, { timeoutMs: 20 * 60_000 });
  if (r.code !== 0) throw new NodeError("RUNTIME_INSTALL_FAILED", `unpacking the runtime on ${conn.alias} failed (exit ${r.code}): ${r.stderr.trim().split("\n").slice(-6).join("\n")}`, { alias: conn.alias });
  emit({ step: "runtime", status: "done", message: `runtime ${set.id} installed (${(bytes / 1e6).toFixed(0)} MB uploaded)` });
  return bytes;
}

/** The development path: this checkout's node_modules over tar | gzip, then the same manifest. */
async function copyRuntime(conn: SshConnection, local: LocalAgent, _platform: NodePlatform, set: ReturnType<typeof copySet>, root: string, lock: DeployLock, emit: (e: DeployEvent) => void): Promise<number> {
  const rels = runtimeClosure(local.nodeModules!, set.prebuilts);
  const total = closureSize(local.nodeModules!, rels);
  const tmp = `${root}/runtime/.tmp-${lock.owner}`;
  emit({ step: "runtime", status: "started", message: `copying node-llama-cpp ${local.nodeLlamaCppVersion} (${set.prebuilts.join(", ")}, ${(total / 1e6).toFixed(0)} MB) to ${conn.alias}` });
  await sh(conn, `${REMOTE_PATHS}\nrm -rf ${shQuote(tmp)}`);
  const sent = await copyTree(conn, local.nodeModules!, rels, `${tmp}/node_modules`, total, emit);
  const fin = await sh(
    conn,
    `${REMOTE_PATHS}\n${HASH_TOOLS}\nset -e\ncd ${shQuote(tmp)}\nchmod -R u+rwX,go-rwx .\nfind . -type f ! -name .manifest -exec $S256 {} + | sed 's|  \\./|  |' > .manifest\nprintf '%s\\n' ${shQuote(set.id)} > .complete\ncd ..\nrm -rf ${shQuote(set.id)}\nmv ${shQuote(tmp)} ${shQuote(set.id)}`,
  );
  if (fin.code !== 0) throw new NodeError("RUNTIME_INSTALL_FAILED", `finishing the runtime copy on ${conn.alias} failed: ${fin.stderr.trim()}`, { alias: conn.alias });
  emit({ step: "runtime", status: "done", message: `node-llama-cpp copied (${(total / 1e6).toFixed(0)} MB)` });
  return sent;
}

type Upload = { local: string; remote: string } | { content: Buffer; remote: string };

/**
 * Uploads files over one SFTP session (4 at a time, each 0600), reporting bytes sent / total for
 * the step. An abort ends the session, which fails the transfers in flight.
 */
async function uploadFiles(conn: SshConnection, files: Upload[], step: DeployStep, emit: (e: DeployEvent) => void, signal?: AbortSignal): Promise<number> {
  signal?.throwIfAborted();
  const sizes = files.map((f) => ("local" in f ? statSync(f.local).size : f.content.length));
  const total = sizes.reduce((a, b) => a + b, 0);
  const sent = new Array<number>(files.length).fill(0);
  let lastEmit = 0;
  const report = (force = false) => {
    if (!force && Date.now() - lastEmit < 250) return;
    lastEmit = Date.now();
    const bytes = sent.reduce((a, b) => a + b, 0);
    emit({ step, status: "progress", bytes, totalBytes: total, message: `${(bytes / 1e6).toFixed(1)} / ${(total / 1e6).toFixed(1)} MB` });
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
            reject(new NodeError("RUNTIME_INSTALL_FAILED", `uploading ${f.remote} to ${conn.alias} failed: ${err.message}`, { alias: conn.alias }));
          };
          if ("local" in f) {
            sftp.fastPut(f.local, f.remote, { mode: 0o600, step: (transferred) => ((sent[i] = transferred), report()) }, done);
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

/** /v1/health through the SSH connection, with the expected version. */
async function hiveAnswers(conn: SshConnection, address: string, token: string, version: string, attempts = 1): Promise<boolean> {
  const transport = sshTransport(conn);
  try {
    const client = new HiveClient({ transport, baseUrl: address, token, nodeName: conn.alias, requestTimeoutMs: 10_000, retry: { attempts, baseMs: 100 } });
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

/** tar | gzip over an exec channel into `remoteDir` (created). */
async function copyTree(conn: SshConnection, root: string, rels: string[], remoteDir: string, total: number, emit: (e: DeployEvent) => void): Promise<number> {
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
  return sent;
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
async function startHive(conn: SshConnection, nodePath: string, agentDir: string, hiveHome: string, opts: DeployOptions): Promise<HiveInfo> {
  const limitMs = opts.startTimeoutMs ?? 30_000;
  // RBEE_NATIVE_BUILD and RBEE_CALIBRATE set where the keeper runs apply to the hives it starts on SSH nodes too.
  const nativeBuild = process.env.RBEE_NATIVE_BUILD ? ["--native-build", process.env.RBEE_NATIVE_BUILD] : [];
  const calibrate = process.env.RBEE_CALIBRATE ? ["--calibrate", process.env.RBEE_CALIBRATE] : [];
  const extra = [...nativeBuild, ...calibrate, ...(opts.daemonArgs ?? [])].map(shQuote).join(" ");
  // setsid where it exists (not on macOS): the hive must outlive this session; nohup covers SIGHUP.
  const script = `${REMOTE_PATHS}
mkdir -p "$H" && chmod 700 "$H"
cd ${shQuote(agentDir)} || exit 1
rm -f "$H/hive.json"
S=; command -v setsid >/dev/null 2>&1 && S=setsid
( exec $S nohup ${shQuote(nodePath)} hive-agent.js daemon --token-file "$H/token" --home "$H" ${extra} ) >> "$H/hive.log" 2>&1 < /dev/null &
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
    const info = parseHiveInfo(kv.get("hive_json")![0], hiveHome);
    if (info?.address) return info;
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
  const healthy = running && state.hive!.address !== "" && state.token !== undefined ? await hiveAnswers(conn, state.hive!.address, state.token, state.hive!.version) : false;
  return {
    alias: conn.alias,
    installedVersions: state.agentDirs,
    running,
    pid: running ? state.hive!.pid : undefined,
    address: running && state.hive!.address ? state.hive!.address : undefined,
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
 * Stops the hive and removes the agent, its runtime, token, hive.json and log. The model catalog stays
 * unless `purgeModels` (models are often large downloads).
 */
export async function uninstallHive(conn: SshConnection, opts: { purgeModels?: boolean; onProgress?: (e: DeployEvent) => void } = {}): Promise<{ removed: boolean }> {
  const emit = opts.onProgress ?? (() => {});
  const state = await probeState(conn, "-", "node");
  if (state.hiveAlive) await stopHive(conn, state.hive!.pid, emit);
  const removeModels = opts.purgeModels ? `rm -rf "$H/models" "$H/catalog.json"\n` : "";
  const r = await sh(
    conn,
    `${REMOTE_PATHS}\nfound=0\n[ -d "$A" ] && found=1\n[ -f "$H/token" ] && found=1\nrm -rf "$A" "$R/runtime"\nrm -f "$H/token" "$H/hive.json" "$H/hive.log" "$H/hive.sock"\nrm -rf "$H/workers"\n${removeModels}rmdir "$H" 2>/dev/null\nrmdir "$R" 2>/dev/null\necho "found=$found"`,
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
