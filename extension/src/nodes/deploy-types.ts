// The types of a deploy: what a caller asks (DeployOptions) and gets back (DeployResult, the events
// it is told), and the context every step of one deploy shares instead of a row of parameters.

import type { SshConnection } from "./connection";
import type { RuntimeCache } from "./runtime-cache";
import type { RuntimePins } from "./runtime-packages";

export type DeployStep =
  "connect" | "probe" | "fetch" | "upload" | "runtime" | "stop" | "activate" | "token" | "start" | "health" | "cleanup";

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

/** What hive.json says about a hive: its pid, its address (empty when not one of ours), its version. */
export interface HiveInfo {
  pid: number;
  address: string;
  version: string;
}

/** The hive-agent bundle on this machine that a deploy ships. */
export interface LocalAgent {
  script: string;
  sourceMap?: string;
  version: string;
  nodeModules?: string;
  nodeLlamaCppVersion: string;
}

/** One deploy in progress: the connection, what was asked, the bundle being shipped, where to report. */
export interface DeployContext {
  conn: SshConnection;
  opts: DeployOptions;
  emit: (e: DeployEvent) => void;
  /** Date.now() when the deploy began (for durationMs). */
  started: number;
  local: LocalAgent;
  /** sha256 of the bundle's hive-agent.js. */
  localSha: string;
}
