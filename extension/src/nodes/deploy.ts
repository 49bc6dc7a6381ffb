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
// Every remote command is one of the scripts in scripts/ (remote-scripts.ts), run under `sh -c`
// whatever the user's login shell is.
//
// This module is the deploy's sequence; its steps live by concept: deploy-probe.ts (what the node
// has), deploy-lock.ts (one deploy at a time), deploy-upload.ts and deploy-runtime.ts (files and the
// runtime set), hive-lifecycle.ts (start, stop, token, health), hive-admin.ts (status, logs, uninstall).

import { readFileSync } from "node:fs";
import type { SshConnection } from "./connection";
import { withDeployLock, assertLockHeld, type DeployLock } from "./deploy-lock";
import { probePlatform, probeState, requireForwarding, requireNodeJs, type NodeState } from "./deploy-probe";
import { copyRuntime, copySet, uploadRuntime } from "./deploy-runtime";
import type { DeployContext, DeployOptions, DeployResult, HiveInfo, NodeRuntime } from "./deploy-types";
import { agentPackageJson, localAgent, sha256, uploadFiles } from "./deploy-upload";
import { NodeError } from "./errors";
import { hiveAnswers, startHive, stopHive, writeToken } from "./hive-lifecycle";
import { runScript } from "./remote-scripts";
import { loadRuntimePins, runtimeSetFor } from "./runtime-packages";

export type {
  DeployEvent,
  DeployOptions,
  DeployResult,
  DeployStep,
  NodeRuntime,
  RemoteHiveStatus,
  RuntimeInstall,
} from "./deploy-types";
export { LOCK_REFRESH_MS, LOCK_STALE_MINUTES } from "./deploy-lock";
export { MIN_NODE_MAJOR } from "./deploy-probe";
export { hiveLogs, hiveStatus, readHiveToken, uninstallHive } from "./hive-admin";

/**
 * Deploys the hive-agent and starts its hive, or does nothing when the same version is installed
 * intact and answers. A new version replaces the old one (the model catalog stays).
 */
export async function deployHive(conn: SshConnection, opts: DeployOptions = {}): Promise<DeployResult> {
  const started = Date.now();
  const emit = opts.onProgress ?? (() => {});
  const nodeCommand = opts.nodeCommand ?? "node";
  const local = await localAgent(opts);
  const ctx: DeployContext = { conn, opts, emit, started, local, localSha: sha256(readFileSync(local.script)) };

  emit({ step: "connect", status: "started", message: `connecting to ${conn.alias}` });
  await conn.connect();
  emit({ step: "connect", status: "done", message: `connected to ${conn.alias}` });

  emit({ step: "probe", status: "started", message: `checking ${conn.alias}` });
  const systemNode = (opts.runtimeInstall ?? "pinned") === "copy" || opts.nodeRuntime === "system";
  const state = await probeState(conn, local.version, nodeCommand, { nodeVersion: systemNode });
  emit({
    step: "probe",
    status: "done",
    message: `${conn.alias}: agent ${local.version} ${state.installed ? "installed" : "not installed (or not intact)"}`,
  });

  const upToDate = await upToDateResult(ctx, state);
  if (upToDate) return upToDate;
  opts.signal?.throwIfAborted();
  // The node's own Node.js, when it is to run the hive, is checked before anything is written there.
  if (systemNode) requireNodeJs(conn, state, nodeCommand);
  await requireForwarding(conn);
  return withDeployLock(ctx, async (lock) => {
    // Another deploy (another window, another CLI run) may have finished while we waited.
    const fresh = await probeState(conn, local.version, nodeCommand, { nodeVersion: systemNode });
    return (await upToDateResult(ctx, fresh)) ?? installAndStart(ctx, fresh, lock);
  });
}

/** The result of a no-op deploy when the same version is installed intact, running and answering. */
async function upToDateResult(ctx: DeployContext, state: NodeState): Promise<DeployResult | undefined> {
  const { conn, local } = ctx;
  const hive = state.hive;
  if (!(
    state.installed &&
    state.agentSha === ctx.localSha &&
    hive.running &&
    hive.address &&
    hive.version === local.version &&
    state.token
  ))
    return undefined;
  if (!(await hiveAnswers(conn, hive.address, state.token, local.version))) return undefined;
  ctx.emit({ step: "health", status: "done", message: `hive ${local.version} on ${conn.alias} is up to date` });
  return {
    alias: conn.alias,
    version: local.version,
    changed: false,
    runtime: "present",
    backends: state.backends,
    uploadedBytes: 0,
    pid: hive.pid,
    address: hive.address,
    token: state.token,
    agentDir: `${state.root}/agent/${local.version}`,
    hiveHome: state.hiveHome,
    durationMs: Date.now() - ctx.started,
  };
}

async function installAndStart(ctx: DeployContext, state: NodeState, lock: DeployLock): Promise<DeployResult> {
  const { conn, opts, emit, local, localSha } = ctx;
  const agentDir = `${state.root}/agent/${local.version}`;
  const mode = opts.runtimeInstall ?? "pinned";
  const nodeRuntime: NodeRuntime = mode === "copy" ? "system" : (opts.nodeRuntime ?? "pinned");

  const platform = await probePlatform(conn);
  if (platform.missingTools.length) {
    throw new NodeError(
      "UNSUPPORTED_PLATFORM",
      `${conn.alias} lacks ${platform.missingTools.join(" and ")}, which rbee needs to unpack its runtime there; install them with the node's package manager`,
      {
        alias: conn.alias,
      },
    );
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
    {
      name: "package.json",
      data: Buffer.from(
        agentPackageJson(local.version, pins?.llamaVersion ?? local.nodeLlamaCppVersion, set.prebuilts),
      ),
    },
  ];
  const manifest = files.map((f) => `${f.name === "hive-agent.js" ? localSha : sha256(f.data)}  ${f.name}\n`).join("");
  const mk = await runScript(conn, "agent-tmp", [tmp]);
  if (mk.code !== 0)
    throw new NodeError("RUNTIME_INSTALL_FAILED", `creating ${tmp} on ${conn.alias} failed: ${mk.stderr.trim()}`, {
      alias: conn.alias,
    });
  uploadedBytes += await uploadFiles(
    ctx,
    [
      ...files.map((f) => ({ content: f.data, remote: `${tmp}/${f.name}` })),
      { content: Buffer.from(manifest), remote: `${tmp}/.manifest` },
    ],
    "upload",
  );
  emit({ step: "upload", status: "done", message: `uploaded hive-agent ${local.version}` });

  // 2. The runtime set, unless the node has it intact already (another version used the same set).
  let runtime: DeployResult["runtime"];
  const have = await runScript(conn, "runtime-intact", [runtimeDir]);
  if (have.stdout.includes("intact")) {
    runtime = "reused";
    emit({ step: "runtime", status: "skipped", message: `runtime ${set.id} is already on ${conn.alias}` });
  } else if (pins) {
    uploadedBytes += await uploadRuntime(ctx, set, state.root, lock);
    runtime = "uploaded";
  } else {
    uploadedBytes += await copyRuntime(ctx, set, state.root, lock);
    runtime = "copied";
  }

  // 3. Finish the temp folder: verify what arrived, link the runtime, mark it complete.
  const complete = `backends=${set.backends.join(" ")}\nruntime=${set.id}\nnode=${nodePath}\n`;
  const fin = await runScript(conn, "agent-finish", [tmp, set.id, complete]);
  if (fin.code !== 0)
    throw new NodeError(
      "RUNTIME_INSTALL_FAILED",
      `preparing ${local.version} on ${conn.alias} failed: ${fin.stderr.trim()}`,
      { alias: conn.alias },
    );

  // Past this point the running hive is touched: no cancel, and only while we still own the lock.
  opts.signal?.throwIfAborted();
  assertLockHeld(conn, lock);
  const previous = state.hive.running ? { pid: state.hive.pid, version: state.hive.version } : undefined;
  if (previous) await stopHive(conn, previous.pid, emit);
  emit({ step: "activate", status: "started", message: `activating ${local.version}` });
  const backup = `${state.root}/agent/.old-${lock.owner}`;
  const act = await runScript(conn, "agent-activate", [agentDir, backup, tmp]);
  if (act.code !== 0)
    throw new NodeError(
      "RUNTIME_INSTALL_FAILED",
      `activating ${local.version} on ${conn.alias} failed: ${act.stderr.trim()}`,
      { alias: conn.alias },
    );
  emit({
    step: "activate",
    status: "done",
    message: runtime === "reused" ? `installed ${local.version} (runtime reused)` : `installed ${local.version}`,
  });

  emit({ step: "token", status: "started", message: "preparing the hive token" });
  const token = state.token ?? (await writeToken(conn));
  emit({
    step: "token",
    status: "done",
    message: state.token ? "kept the node's token" : "generated a new token (mode 0600)",
  });

  let info: HiveInfo;
  try {
    emit({ step: "start", status: "started", message: `starting the hive on ${conn.alias}` });
    info = await startHive(conn, { nodePath, agentDir, hiveHome: state.hiveHome }, opts);
    emit({ step: "start", status: "done", message: `hive started (pid ${info.pid}, listening on ${info.address})` });
    emit({ step: "health", status: "started", message: "checking /v1/health through SSH" });
    if (!(await hiveAnswers(conn, info.address, token, local.version, 5))) {
      throw new NodeError(
        "HIVE_START_FAILED",
        `the hive on ${conn.alias} started (pid ${info.pid}) but /v1/health did not answer through SSH; see rbee logs --node ${conn.alias}`,
        { alias: conn.alias },
      );
    }
  } catch (err) {
    // A failed upgrade puts the previous version back and starts it again.
    const back = previous ? await restorePrevious(ctx, state, { version: previous.version, backup }) : undefined;
    if (err instanceof NodeError && back) throw new NodeError(err.code, `${err.message}\n${back}`, err.details);
    throw err;
  }
  emit({ step: "health", status: "done", message: `hive ${local.version} on ${conn.alias} answers` });

  // Older versions and runtime sets go only now, once the new one answers.
  emit({ step: "cleanup", status: "started", message: "removing older versions" });
  await runScript(conn, "cleanup-old", [agentDir, set.id]);
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
    durationMs: Date.now() - ctx.started,
  };
}

/** After a failed start: the previous version's folder back in place and its hive started; says what happened. */
async function restorePrevious(
  ctx: DeployContext,
  state: NodeState,
  previous: { version: string; backup: string },
): Promise<string> {
  const { conn, opts, local } = ctx;
  const prevVersion = previous.version;
  try {
    const prevDir = `${state.root}/agent/${prevVersion}`;
    if (prevVersion === local.version) {
      const r = await runScript(conn, "agent-restore", [previous.backup, prevDir]);
      if (r.code !== 0) return `the previous files of ${prevVersion} could not be put back`;
    }
    const r = await runScript(conn, "agent-node", [prevDir]);
    const nodePath = r.stdout.trim() || state.nodePath;
    if (!nodePath) return `the previous version ${prevVersion} could not be restarted (no node program recorded)`;
    const info = await startHive(conn, { nodePath, agentDir: prevDir, hiveHome: state.hiveHome }, opts);
    return `the previous version ${prevVersion} was started again (pid ${info.pid})`;
  } catch (e) {
    return `restarting the previous version ${prevVersion} failed too: ${(e as Error).message}`;
  }
}
