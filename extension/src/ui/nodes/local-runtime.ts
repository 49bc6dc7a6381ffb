// Where the local hive's program runs from. The hive-agent bundle (dist/hive-agent.js) needs
// node-llama-cpp at run time, a package of native llama.cpp builds that is far too large to ship
// inside the .vsix for every platform and GPU (~1 GB of optional binaries). So:
//   1. a checkout or an install that has node-llama-cpp next to the bundle runs the bundle in place;
//   2. otherwise the bundle is copied to <rbee home>/agent/<version>/ and node-llama-cpp (the
//      version this extension was built with) is installed there with npm, once — the same layout
//      the SSH deploy uses on remote nodes (docs/install.md), which also picks the right GPU binaries.

import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { RbeeError } from "../../../../hive-agent/src/protocol";
import { FileLock } from "../../keeper/registry-lock";
import { findNodeModulesWith } from "../../nodes/runtime-packages";

export const AGENT_BUNDLE = "hive-agent.js";
const RUNTIME_PACKAGE = "node-llama-cpp";

/** The folder holding node_modules/node-llama-cpp, searching `from` and its parents; undefined if none. */
export function findLlamaRuntime(from: string): string | undefined {
  const nodeModules = findNodeModulesWith(RUNTIME_PACKAGE, from);
  return nodeModules && path.dirname(nodeModules);
}

export interface LocalRuntimeOptions {
  /** Folder of the running bundles (dist/), holding hive-agent.js. */
  bundleDir: string;
  /** ~/.rbee or $RBEE_HOME. */
  home: string;
  version: string;
  /** node-llama-cpp version to install (the extension's package.json dependency). */
  llamaVersion: string;
  /** The npm program; default "npm" from PATH. */
  npm?: string;
}

export class LocalRuntime {
  private script: string | undefined;

  constructor(private readonly opts: LocalRuntimeOptions) {}

  /** Where an installed runtime lives. */
  get installDir(): string {
    return path.join(this.opts.home, "agent", this.opts.version);
  }

  /** The agent script to run, once known (after prepare(), or at once when no install is needed). */
  get agentScript(): string {
    return this.script ?? this.ready() ?? path.join(this.opts.bundleDir, AGENT_BUNDLE);
  }

  /** The script to run without installing anything, or undefined when an install is needed. */
  ready(): string | undefined {
    const bundled = path.join(this.opts.bundleDir, AGENT_BUNDLE);
    if (!existsSync(bundled)) throw new RbeeError("NODE_UNREACHABLE", `the hive-agent program is missing at ${bundled}; reinstall the rbee extension`);
    if (findLlamaRuntime(this.opts.bundleDir)) return bundled;
    const installed = path.join(this.installDir, AGENT_BUNDLE);
    if (existsSync(path.join(this.installDir, "node_modules", RUNTIME_PACKAGE, "package.json")) && sameFile(installed, bundled)) return installed;
    return undefined;
  }

  /** Makes the runtime available, installing it when needed; `onLine` receives npm's output. */
  async prepare(onLine: (line: string) => void = () => {}): Promise<string> {
    const now = this.ready();
    if (now) return (this.script = now);
    mkdirSync(this.installDir, { recursive: true, mode: 0o700 });
    // Two windows starting the hive at once must not run two npm installs into one folder.
    return new FileLock(path.join(this.installDir, "install.lock"), { timeoutMs: 15 * 60_000, staleMs: 15 * 60_000 }).withLock(async () => {
      const again = this.ready();
      if (again) return (this.script = again);
      const bundled = path.join(this.opts.bundleDir, AGENT_BUNDLE);
      writeFileSync(
        path.join(this.installDir, "package.json"),
        JSON.stringify({ name: "rbee-hive-agent", version: this.opts.version, private: true, dependencies: { [RUNTIME_PACKAGE]: this.opts.llamaVersion } }, null, 2),
      );
      onLine(`installing ${RUNTIME_PACKAGE} ${this.opts.llamaVersion} into ${this.installDir} (once per rbee version)`);
      await runNpm(this.opts.npm ?? "npm", ["install", "--omit=dev", "--no-audit", "--no-fund", "--no-package-lock"], this.installDir, onLine);
      if (!existsSync(path.join(this.installDir, "node_modules", RUNTIME_PACKAGE, "package.json")))
        throw new RbeeError("BACKEND_UNAVAILABLE", `npm finished but ${RUNTIME_PACKAGE} is not in ${this.installDir}/node_modules; see the rbee log`);
      // Copied last: its presence next to a complete node_modules marks the install as done.
      copyFileSync(bundled, path.join(this.installDir, AGENT_BUNDLE));
      return (this.script = path.join(this.installDir, AGENT_BUNDLE));
    });
  }
}

function sameFile(a: string, b: string): boolean {
  try {
    const sa = statSync(a);
    const sb = statSync(b);
    return sa.size === sb.size && readFileSync(a).equals(readFileSync(b));
  } catch {
    return false;
  }
}

function runNpm(npm: string, args: string[], cwd: string, onLine: (l: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(npm, args, { cwd, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, npm_config_update_notifier: "false" } });
    let tail = "";
    const forward = (chunk: Buffer) => {
      const text = chunk.toString("utf8");
      tail = (tail + text).slice(-2000);
      for (const line of text.split("\n")) if (line.trim()) onLine(line.trimEnd());
    };
    child.stdout.on("data", forward);
    child.stderr.on("data", forward);
    child.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        e.code === "ENOENT"
          ? new RbeeError("BACKEND_UNAVAILABLE", `the local hive needs ${RUNTIME_PACKAGE}, and npm ("${npm}") was not found to install it: install Node.js 20 or newer (with npm) and try again`)
          : e,
      ),
    );
    child.once("exit", (code) =>
      code === 0 ? resolve() : reject(new RbeeError("BACKEND_UNAVAILABLE", `npm install of ${RUNTIME_PACKAGE} failed with exit code ${code} in ${cwd}: ${tail.trim().split("\n").slice(-5).join(" / ")}`)),
    );
  });
}
