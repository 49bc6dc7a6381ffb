// What a deploy learns about a node before it changes anything: what rbee has installed there and
// whether its hive runs (probe-state.sh), the node's platform (probe-platform.sh), whether its
// Node.js can run the hive, and whether its sshd forwards the channels the keeper needs.

import { HIVE_SOCKET_NAME, socketPathOf } from "@rbee/hive-agent/protocol";
import type { SshConnection } from "./connection";
import type { HiveInfo } from "./deploy-types";
import { NodeError, isNodeError } from "./errors";
import { parseKv, runScript } from "./remote-scripts";
import type { GpuKind, NodePlatform } from "./runtime-packages";

export const MIN_NODE_MAJOR = 20;

/**
 * hive.json's content. Only a hive socket in that home is an address we talk to; a file of an older
 * hive-agent (which named a TCP port) gives its pid with no address, so a deploy stops that hive.
 */
export function parseHiveInfo(json: string, hiveHome: string): HiveInfo | undefined {
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

/** The hive as the probe found it: running (a live hive-agent process that hive.json names) or not. */
export type HiveOnNode = { running: false } | ({ running: true } & HiveInfo);

/** What one quick remote probe tells about a node's hive (no hardware probing). */
export interface NodeState {
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
  hive: HiveOnNode;
  token?: string;
}

/** The node's rbee state for `version`; `nodeVersion: false` skips asking its own Node.js (a process start). */
export async function probeState(
  conn: SshConnection,
  version: string,
  nodeCommand: string,
  opts: { nodeVersion?: boolean } = {},
): Promise<NodeState> {
  const r = await runScript(conn, "probe-state", [version, nodeCommand, opts.nodeVersion === false ? "no" : "yes"], {
    timeoutMs: 60_000,
  });
  if (r.code !== 0)
    throw new NodeError("REMOTE_COMMAND_FAILED", `probing ${conn.alias} failed (exit ${r.code}): ${r.stderr.trim()}`, {
      alias: conn.alias,
    });
  const kv = parseKv(r.stdout);
  const one = (k: string) => kv.get(k)?.[0] || undefined;
  const root = one("root") ?? "";
  const hiveJson = one("hive_json");
  const info = hiveJson ? parseHiveInfo(hiveJson, `${root}/hive`) : undefined;
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
    hive: one("hive_alive") === "yes" && info ? { running: true, ...info } : { running: false },
    token: one("token"),
  };
}

/** A clear error unless the node has a usable Node.js; returns the path of `node` there. */
export function requireNodeJs(conn: SshConnection, state: NodeState, nodeCommand: string): string {
  const fix =
    `install Node.js ${MIN_NODE_MAJOR} or newer on ${conn.alias} (e.g. from https://nodejs.org or your package manager) so that ` +
    `\`${nodeCommand}\` is on the PATH of non-interactive SSH sessions (check with: ssh ${conn.alias} 'command -v node; node --version'); ` +
    `a node installed with nvm is often only on interactive shells' PATH — link it into /usr/local/bin, or deploy with the Node.js rbee brings (the default: --node-runtime pinned)`;
  if (!state.nodePath) {
    throw new NodeError("NODE_JS_MISSING", `${conn.alias} has no \`${nodeCommand}\` on its PATH: ${fix}`, {
      alias: conn.alias,
    });
  }
  const m = /^v(\d+)\./.exec(state.nodeVersion ?? "");
  if (!m || Number(m[1]) < MIN_NODE_MAJOR) {
    throw new NodeError(
      "NODE_JS_MISSING",
      `${conn.alias} has Node.js ${state.nodeVersion || "of unknown version"} at ${state.nodePath}, but rbee needs ${MIN_NODE_MAJOR} or newer: ${fix}`,
      {
        alias: conn.alias,
        node_version: state.nodeVersion,
      },
    );
  }
  return state.nodePath;
}

export interface ProbedPlatform extends NodePlatform {
  /** Tools the runtime install needs that the node lacks. */
  missingTools: string[];
}

export async function probePlatform(conn: SshConnection): Promise<ProbedPlatform> {
  const r = await runScript(conn, "probe-platform", [], { timeoutMs: 60_000 });
  const kv = parseKv(r.stdout);
  const os = (kv.get("os")?.[0] ?? "").toLowerCase();
  const gpus = (kv.get("gpu") ?? []) as GpuKind[];
  if (os === "darwin" && (kv.get("machine")?.[0] ?? "") === "arm64") gpus.push("metal");
  const musl = kv.get("musl")?.[0] === "yes";
  return {
    os,
    machine: kv.get("machine")?.[0] ?? "",
    musl,
    glibc: musl ? undefined : kv.get("glibc")?.[0] || undefined,
    gpus,
    missingTools: kv.get("missing") ?? [],
  };
}

/**
 * Refuses a node whose sshd forbids TCP forwarding: the keeper reaches the hive only through
 * forwarded channels, so a deploy there would start a hive nobody can talk to.
 */
export async function requireForwarding(conn: SshConnection): Promise<void> {
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
