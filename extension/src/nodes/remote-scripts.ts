// The POSIX sh scripts rbee runs on a node (scripts/*.sh), and how they run: each one after
// scripts/common.sh, under `sh -c` whatever the user's login shell is (fish, csh), with its
// parameters as positional arguments ($1, $2, …), each quoted as one word: a value is never spliced
// into a script's text. Secrets and lists travel on stdin.
//
// How the .sh files reach the code, in every way rbee runs: esbuild reads the folder at build time
// and defines __RBEE_NODE_SCRIPTS__ (name → text), so each bundle (dist/cli.js, dist/extension.js,
// and so the .vsix) carries the scripts inside it and needs no file next to it; source run through
// tsx (tests, benches) has no such define and reads the files beside this module. The same
// pattern as __RBEE_VERSION__ in the protocol module. (esbuild's watch mode picks up an edited
// script only on restart.)

import { readFileSync } from "node:fs";
import path from "node:path";
import type { SshConnection } from "./connection";
import type { ExecOptions, ExecResult } from "./ssh-options";
import { shQuote } from "./shell";

declare const __RBEE_NODE_SCRIPTS__: Record<string, string> | undefined;

export type ScriptName =
  | "agent-activate"
  | "agent-finish"
  | "agent-node"
  | "agent-restore"
  | "agent-tmp"
  | "cleanup-old"
  | "hive-log"
  | "hive-start"
  | "hive-stop"
  | "hive-token-read"
  | "hive-token-write"
  | "lock-acquire"
  | "lock-refresh"
  | "lock-release"
  | "probe-platform"
  | "probe-state"
  | "runtime-clear"
  | "runtime-copy-finish"
  | "runtime-intact"
  | "runtime-tmp"
  | "runtime-unpack"
  | "uninstall"
  | "untar";

const loaded = new Map<string, string>();

function scriptText(name: ScriptName | "common"): string {
  if (typeof __RBEE_NODE_SCRIPTS__ !== "undefined") {
    const text = __RBEE_NODE_SCRIPTS__[name];
    if (text === undefined)
      throw new Error(`this build has no node script ${name}.sh (esbuild.mjs bundles extension/src/nodes/scripts)`);
    return text;
  }
  let text = loaded.get(name);
  if (text === undefined)
    loaded.set(name, (text = readFileSync(path.join(__dirname, "scripts", `${name}.sh`), "utf8")));
  return text;
}

/** The command line that runs a script on the node: `sh -c '<common + script>' rbee-<name> 'arg1' 'arg2' …`. */
export function scriptCommand(name: ScriptName, args: readonly (string | number)[] = []): string {
  const text = `${scriptText("common")}\n${scriptText(name)}`;
  return [`sh -c ${shQuote(text)}`, `rbee-${name}`, ...args.map((a) => shQuote(String(a)))].join(" ");
}

/** Runs a script on the node and collects its output (a non-zero exit is the caller's to judge). */
export function runScript(
  conn: SshConnection,
  name: ScriptName,
  args: readonly (string | number)[] = [],
  opts: ExecOptions = {},
): Promise<ExecResult> {
  return conn.exec(scriptCommand(name, args), opts);
}

/** A script's `key=value` lines; a key may repeat. */
export function parseKv(out: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const line of out.split("\n")) {
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    const k = line.slice(0, eq);
    m.set(k, [...(m.get(k) ?? []), line.slice(eq + 1)]);
  }
  return m;
}
