// Where the local hive's program runs from. The hive-agent bundle (dist/hive-agent.js) needs
// node-llama-cpp at run time, a package of native llama.cpp builds that is far too large to ship
// inside the .vsix for every platform and GPU (~1 GB of optional binaries). So:
//   1. a checkout that has node-llama-cpp next to the bundle runs the bundle in place;
//   2. otherwise (a .vsix install) the pinned tarballs for this machine's platform — node-llama-cpp,
//      its closure and the prebuilts that fit its GPUs — come from the same runtime cache the SSH
//      deploy uses (fetched from the configured npm registry, or imported for an air-gapped
//      machine), verified against the pins of this build, and are unpacked once per rbee version
//      into <rbee home>/agent/<version>/ next to a copy of the bundle. The hive runs on the
//      editor's (or the CLI's) own Node.js, so no Node.js tarball is needed here.

import { spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { RbeeError } from "@rbee/hive-agent/protocol";
import { FileLock } from "../keeper/registry-lock";
import { detectLocalPlatform } from "../nodes/local-platform";
import { RuntimeCache } from "../nodes/runtime-cache";
import {
  findNodeModulesWith,
  loadRuntimePins,
  runtimeSetFor,
  type NodePlatform,
  type RuntimePins,
} from "../nodes/runtime-packages";

export const AGENT_BUNDLE = "hive-agent.js";
const RUNTIME_PACKAGE = "node-llama-cpp";
const COMPLETE = ".complete";

/** The folder holding node_modules/node-llama-cpp, searching `from` and its parents; undefined if none. */
export function findLlamaRuntime(from: string): string | undefined {
  const nodeModules = findNodeModulesWith(RUNTIME_PACKAGE, from);
  return nodeModules && path.dirname(nodeModules);
}

export interface LocalRuntimeOptions {
  /** Folder of the running bundles (dist/), holding hive-agent.js and runtime-pins.json. */
  bundleDir: string;
  /** ~/.rbee or $RBEE_HOME. */
  home: string;
  version: string;
  /** The runtime tarball cache (VS Code: its global storage; CLI: ~/.rbee/cache/runtime). */
  cache: RuntimeCache;
  /** Default: runtime-pins.json next to the bundle. */
  pins?: RuntimePins;
  /** Default: detected (OS, CPU, libc, GPUs of this machine). */
  platform?: NodePlatform;
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
    if (!existsSync(bundled))
      throw new RbeeError(
        "NODE_UNREACHABLE",
        `the hive-agent program is missing at ${bundled}; reinstall the rbee extension`,
      );
    if (findLlamaRuntime(this.opts.bundleDir)) return bundled;
    const installed = path.join(this.installDir, AGENT_BUNDLE);
    if (existsSync(path.join(this.installDir, COMPLETE)) && sameFile(installed, bundled)) return installed;
    return undefined;
  }

  /** Makes the runtime available, installing it from the cache when needed; `onLine` narrates. */
  async prepare(onLine: (line: string) => void = () => {}): Promise<string> {
    const now = this.ready();
    if (now) return (this.script = now);
    mkdirSync(this.installDir, { recursive: true, mode: 0o700 });
    // Two windows starting the hive at once must not unpack twice into one folder.
    return new FileLock(path.join(this.opts.home, "agent", `${this.opts.version}.install.lock`), {
      timeoutMs: 15 * 60_000,
      staleMs: 15 * 60_000,
    }).withLock(async () => {
      const again = this.ready();
      if (again) return (this.script = again);
      const pins = this.opts.pins ?? loadRuntimePins(path.join(this.opts.bundleDir, "runtime-pins.json"));
      const platform = this.opts.platform ?? (await detectLocalPlatform());
      let set;
      try {
        set = runtimeSetFor(platform, pins, { withNode: false });
      } catch (e) {
        throw new RbeeError(
          "BACKEND_UNAVAILABLE",
          `the local hive cannot run on this machine: ${(e as Error).message}`,
        );
      }
      onLine(
        `preparing node-llama-cpp ${pins.llamaVersion} (${set.prebuilts.join(", ")}) for the local hive from ${this.opts.cache.dir} (once per rbee version)`,
      );
      let got;
      try {
        got = await this.opts.cache.ensure(set.packages, {
          onProgress: (p) =>
            p.done === p.total || p.done % 20 === 0 ? onLine(`runtime packages ${p.done} / ${p.total}`) : undefined,
        });
      } catch (e) {
        throw new RbeeError(
          "BACKEND_UNAVAILABLE",
          `${(e as Error).message} (the local hive needs node-llama-cpp; on a machine without registry access use "rbee runtime import DIR")`,
        );
      }
      onLine(
        got.fetched
          ? `fetched ${got.fetched} packages (${(got.fetchedBytes / 1e6).toFixed(1)} MB), verified`
          : "every package was in the cache, verified",
      );
      // Unpacked beside the final folder, then renamed: a half-unpacked runtime is never used.
      const tmp = `${this.installDir}.tmp-${process.pid}`;
      rmSync(tmp, { recursive: true, force: true });
      for (const [i, pin] of set.packages.entries()) {
        const dest = path.join(tmp, ...pin.path.split("/"));
        mkdirSync(dest, { recursive: true, mode: 0o700 });
        await untar(got.files[i], dest);
      }
      copyFileSync(path.join(this.opts.bundleDir, AGENT_BUNDLE), path.join(tmp, AGENT_BUNDLE));
      writeFileSync(
        path.join(tmp, "package.json"),
        JSON.stringify({ name: "rbee-hive-agent", version: this.opts.version, private: true }, null, 2),
      );
      writeFileSync(path.join(tmp, COMPLETE), `runtime=${set.id}\nbackends=${set.backends.join(" ")}\n`);
      rmSync(this.installDir, { recursive: true, force: true });
      renameSync(tmp, this.installDir);
      onLine(`node-llama-cpp ready in ${this.installDir} (backends: ${set.backends.join(", ")})`);
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

/** Unpacks one npm tarball (its single top folder stripped) with the system tar (also on Windows 10+). */
function untar(file: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("tar", ["-xzf", file, "-C", dest, "--strip-components=1"], {
      stdio: ["ignore", "ignore", "pipe"],
      windowsHide: true,
    });
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    child.once("error", (e) =>
      reject(
        new RbeeError(
          "BACKEND_UNAVAILABLE",
          `unpacking ${path.basename(file)} needs the tar program, which failed to run: ${e.message}`,
        ),
      ),
    );
    child.once("exit", (code) =>
      code === 0
        ? resolve()
        : reject(
            new RbeeError(
              "BACKEND_UNAVAILABLE",
              `unpacking ${path.basename(file)} failed (tar exit ${code}): ${err.trim()}`,
            ),
          ),
    );
  });
}
