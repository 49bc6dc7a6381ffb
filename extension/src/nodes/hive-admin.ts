// What a user does with a deployed hive besides deploying it: its status, its token, its log, and
// uninstalling it. Each is one script on the node (probe-state.sh, hive-token-read.sh, hive-log.sh, uninstall.sh).

import type { SshConnection } from "./connection";
import { probeState } from "./deploy-probe";
import type { DeployEvent, RemoteHiveStatus } from "./deploy-types";
import { NodeError } from "./errors";
import { hiveAnswers, stopHive } from "./hive-lifecycle";
import { runScript, scriptCommand } from "./remote-scripts";

/** Installed versions, whether the hive runs, and whether it answers through SSH. */
export async function hiveStatus(conn: SshConnection, opts: { nodeCommand?: string } = {}): Promise<RemoteHiveStatus> {
  const state = await probeState(conn, "-", opts.nodeCommand ?? "node");
  const hive = state.hive;
  const healthy =
    hive.running && hive.address !== "" && state.token !== undefined
      ? await hiveAnswers(conn, hive.address, state.token, hive.version)
      : false;
  return {
    alias: conn.alias,
    installedVersions: state.agentDirs,
    running: hive.running,
    pid: hive.running ? hive.pid : undefined,
    address: hive.running && hive.address ? hive.address : undefined,
    version: hive.running ? hive.version : undefined,
    healthy,
    hiveHome: state.hiveHome,
  };
}

/** The hive's token from the node (a secret: never log it); undefined when there is none. */
export async function readHiveToken(conn: SshConnection): Promise<string | undefined> {
  const r = await runScript(conn, "hive-token-read");
  return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : undefined;
}

/**
 * Stops the hive and removes the agent, its runtime, token, hive.json and log. The model catalog stays
 * unless `purgeModels` (models are often large downloads).
 */
export async function uninstallHive(
  conn: SshConnection,
  opts: { purgeModels?: boolean; onProgress?: (e: DeployEvent) => void } = {},
): Promise<{ removed: boolean }> {
  const emit = opts.onProgress ?? (() => {});
  const state = await probeState(conn, "-", "node");
  if (state.hive.running) await stopHive(conn, state.hive.pid, emit);
  const r = await runScript(conn, "uninstall", [opts.purgeModels ? "yes" : "no"]);
  if (r.code !== 0 && !/found=/.test(r.stdout))
    throw new NodeError("REMOTE_COMMAND_FAILED", `uninstall on ${conn.alias} failed: ${r.stderr.trim()}`, {
      alias: conn.alias,
    });
  emit({
    step: "cleanup",
    status: "done",
    message: `removed rbee from ${conn.alias}${opts.purgeModels ? " (models too)" : "; models kept"}`,
  });
  return { removed: r.stdout.includes("found=1") };
}

/**
 * The hive's log on the node: its last `lines` lines, then (with `follow`) what it appends until
 * the signal aborts. Yields text chunks as they arrive.
 */
export async function* hiveLogs(
  conn: SshConnection,
  opts: { follow?: boolean; lines?: number; signal?: AbortSignal } = {},
): AsyncGenerator<string> {
  const lines = Math.max(0, Math.floor(opts.lines ?? 200));
  const channel = await conn.execStream(scriptCommand("hive-log", [lines, opts.follow ? "yes" : "no"]));
  let stderr = "";
  channel.stderr.on("data", (d: Buffer) => (stderr += d));
  const closed = new Promise<number | null | undefined>((resolve) =>
    channel.once("close", (c?: number | null) => resolve(c)),
  );
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
  if (exitCode === 3)
    throw new NodeError(
      "HIVE_NOT_DEPLOYED",
      `${conn.alias} has no hive log (${stderr.trim()}); deploy first: rbee nodes deploy ${conn.alias}`,
      { alias: conn.alias },
    );
}
