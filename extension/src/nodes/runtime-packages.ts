// Which packages a node needs: the pinned runtime set (a Node.js build, node-llama-cpp's production
// closure and the prebuilts that fit the node, each an npm tarball with an integrity hash pinned at
// build time), and the local files to copy there in the development path (runtimeInstall: "copy").
//
// node-llama-cpp loads llama.cpp from optional packages named @node-llama-cpp/<platform>[-gpu];
// the hive runs with `build: "never"`, so only those prebuilts (never a source build) are used.
// A node gets the CPU prebuilt of its platform plus the GPU one its hardware can use.

import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { NodeError } from "./errors";

export type GpuKind = "cuda" | "vulkan" | "metal";

/** What the probe learned about a node's OS, CPU and GPUs. */
export interface NodePlatform {
  /** `uname -s` lowercased: linux, darwin, … */
  os: string;
  /** `uname -m`: x86_64, aarch64, arm64, armv7l, riscv64 */
  machine: string;
  musl: boolean;
  /** glibc version ("2.36") when the probe found one. */
  glibc?: string;
  gpus: GpuKind[];
}

/** Node.js's names for the node's platform (process.platform / process.arch). */
export function nodeJsPlatform(p: NodePlatform): { platform: string; arch: string } {
  const arch =
    { x86_64: "x64", amd64: "x64", aarch64: "arm64", arm64: "arm64", armv7l: "arm", riscv64: "riscv64" }[p.machine] ??
    p.machine;
  return { platform: p.os, arch };
}

/**
 * The @node-llama-cpp/* packages for a node: its CPU build first, then the GPU builds it can use.
 * Throws UNSUPPORTED_PLATFORM when node-llama-cpp publishes no prebuilt for it.
 */
export function prebuiltPackagesFor(p: NodePlatform): { packages: string[]; backends: string[] } {
  const { platform, arch } = nodeJsPlatform(p);
  const unsupported = (why: string) =>
    new NodeError(
      "UNSUPPORTED_PLATFORM",
      `${why}; rbee runs on Linux (x64, arm64, armv7l, riscv64 with glibc) and macOS (Apple silicon, x64): use such a machine as the node`,
      {
        os: p.os,
        machine: p.machine,
      },
    );
  if (platform === "linux") {
    if (p.musl)
      throw unsupported(
        `the node runs a musl Linux such as Alpine (${p.machine}), for which neither node-llama-cpp's llama.cpp nor the official Node.js builds exist; run rbee there inside a glibc container (e.g. debian:bookworm-slim with sshd, reached as its own Host), or use a glibc distribution`,
      );
    if (arch === "x64") {
      const packages = ["@node-llama-cpp/linux-x64"];
      const backends = ["cpu"];
      if (p.gpus.includes("cuda")) {
        packages.push("@node-llama-cpp/linux-x64-cuda", "@node-llama-cpp/linux-x64-cuda-ext");
        backends.push("cuda");
      }
      if (p.gpus.includes("vulkan")) {
        packages.push("@node-llama-cpp/linux-x64-vulkan");
        backends.push("vulkan");
      }
      return { packages, backends };
    }
    if (arch === "arm64") return { packages: ["@node-llama-cpp/linux-arm64"], backends: ["cpu"] };
    if (arch === "arm") return { packages: ["@node-llama-cpp/linux-armv7l"], backends: ["cpu"] };
    if (arch === "riscv64") return { packages: ["@node-llama-cpp/linux-riscv64"], backends: ["cpu"] };
  }
  if (platform === "darwin") {
    if (arch === "arm64") return { packages: ["@node-llama-cpp/mac-arm64-metal"], backends: ["metal", "cpu"] };
    if (arch === "x64") return { packages: ["@node-llama-cpp/mac-x64"], backends: ["cpu"] };
  }
  // Windows only ever hosts the local hive (nodes are reached over SSH and run a POSIX shell).
  if (platform === "win32" || platform === "windows_nt") {
    if (arch === "x64") {
      const packages = ["@node-llama-cpp/win-x64"];
      const backends = ["cpu"];
      if (p.gpus.includes("cuda")) {
        packages.push("@node-llama-cpp/win-x64-cuda", "@node-llama-cpp/win-x64-cuda-ext");
        backends.push("cuda");
      }
      if (p.gpus.includes("vulkan")) {
        packages.push("@node-llama-cpp/win-x64-vulkan");
        backends.push("vulkan");
      }
      return { packages, backends };
    }
    if (arch === "arm64") return { packages: ["@node-llama-cpp/win-arm64"], backends: ["cpu"] };
  }
  throw unsupported(`the node is ${p.os} ${p.machine}`);
}

/** The node_modules folder that holds node-llama-cpp for a given script (walking up like require). */
export function findNodeModulesWith(pkg: string, fromDir: string): string | undefined {
  let dir = path.resolve(fromDir);
  for (;;) {
    const candidate = path.join(dir, "node_modules");
    if (existsSync(path.join(candidate, pkg, "package.json"))) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

export function packageVersion(nodeModules: string, pkg: string): string | undefined {
  try {
    return JSON.parse(readFileSync(path.join(nodeModules, pkg, "package.json"), "utf8")).version;
  } catch {
    return undefined;
  }
}

/**
 * The package folders (relative to `nodeModules`) that make node-llama-cpp run: itself, its
 * dependencies and optional dependencies that are installed here (transitively, resolved as
 * require() would from each package), and the prebuilts asked for. A missing required dependency
 * or prebuilt is an error, so a copy is never half a runtime.
 */
export function runtimeClosure(nodeModules: string, prebuilts: string[]): string[] {
  const root = path.resolve(nodeModules);
  const found = new Set<string>();
  const visit = (pkg: string, fromDir: string, optional: boolean) => {
    const dir = resolvePackageDir(pkg, fromDir, root);
    if (!dir) {
      if (optional) return;
      throw new NodeError(
        "DEPLOY_BUNDLE_MISSING",
        `${pkg} is not installed under ${root}; run npm install there (it is needed to copy the runtime to a node)`,
        { package: pkg },
      );
    }
    const rel = path.relative(root, dir);
    if (found.has(rel)) return;
    found.add(rel);
    const pj = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8"));
    for (const dep of Object.keys(pj.dependencies ?? {})) visit(dep, dir, false);
    for (const dep of Object.keys(pj.optionalDependencies ?? {})) {
      // node-llama-cpp lists every platform's prebuilt as optional: only the chosen ones go.
      if (dep.startsWith("@node-llama-cpp/")) continue;
      visit(dep, dir, true);
    }
  };
  visit("node-llama-cpp", root, false);
  for (const p of prebuilts) visit(p, root, false);
  // A package nested inside another (x/node_modules/y) travels with its parent folder.
  return [...found]
    .filter((rel) => ![...found].some((other) => other !== rel && rel.startsWith(other + path.sep)))
    .sort();
}

/** Like require.resolve for a package folder: node_modules/<pkg> in fromDir or above, within root. */
function resolvePackageDir(pkg: string, fromDir: string, root: string): string | undefined {
  let dir = fromDir;
  for (;;) {
    const candidate = path.basename(dir) === "node_modules" ? path.join(dir, pkg) : path.join(dir, "node_modules", pkg);
    if (existsSync(path.join(candidate, "package.json"))) return candidate;
    if (dir === root || !dir.startsWith(root)) {
      const top = path.join(root, pkg);
      return existsSync(path.join(top, "package.json")) ? top : undefined;
    }
    dir = path.dirname(dir);
  }
}

/**
 * Paths inside node-llama-cpp that only a source build uses (the llama.cpp checkout and its git
 * bundle, ~240 MB); the hive never builds, so they are not copied.
 */
export const RUNTIME_COPY_EXCLUDES = [
  "node-llama-cpp/llama/llama.cpp",
  "node-llama-cpp/llama/gitRelease.bundle",
  "node-llama-cpp/llama/localBuilds",
];

/** Total size in bytes of what would be copied (for progress). */
export function closureSize(nodeModules: string, rels: string[]): number {
  const excluded = new Set(RUNTIME_COPY_EXCLUDES.map((e) => path.join(nodeModules, e)));
  let total = 0;
  const walk = (p: string) => {
    if (excluded.has(p)) return;
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) {
      for (const name of readdirSync(p)) walk(path.join(p, name));
    } else if (st.isFile()) total += st.size;
  };
  for (const rel of rels) walk(path.join(nodeModules, rel));
  return total;
}

/** One npm tarball of the pinned runtime: where it goes (a lock-style path), what it is, its hash. */
export interface PinnedTarball {
  /** node_modules/… as in package-lock.json, or "node" for the Node.js runtime. */
  path: string;
  name: string;
  version: string;
  /** Subresource-integrity string from package-lock.json or the registry (sha512-…). */
  integrity: string;
}

/** dist/runtime-pins.json, written at build time by extension/build/runtime-pins.mjs. */
export interface RuntimePins {
  llamaVersion: string;
  closure: PinnedTarball[];
  prebuilts: Record<string, PinnedTarball>;
  node: { version: string; minGlibc: string; packages: Record<string, PinnedTarball> };
}

export const RUNTIME_PINS_FILE = "runtime-pins.json";

/** The pins shipped next to the bundle ($RBEE_RUNTIME_PINS, else found above this module, as dist/ in a checkout). */
export function loadRuntimePins(file?: string): RuntimePins {
  const candidates = file
    ? [file]
    : [
        process.env.RBEE_RUNTIME_PINS,
        path.join(__dirname, RUNTIME_PINS_FILE),
        path.join(__dirname, "..", "..", "..", "dist", RUNTIME_PINS_FILE),
      ];
  for (const c of candidates) {
    if (c && existsSync(c)) return JSON.parse(readFileSync(c, "utf8")) as RuntimePins;
  }
  throw new NodeError(
    "DEPLOY_BUNDLE_MISSING",
    `the runtime pins (${RUNTIME_PINS_FILE}) are missing next to ${__dirname}; rebuild with npm run build (or reinstall rbee)`,
    {},
  );
}

/** "linux-x64", "darwin-arm64", "win32-x64": the key of the Node.js packages in the pins. */
export function platformKey(p: NodePlatform): string {
  const { platform, arch } = nodeJsPlatform(p);
  return `${platform === "windows_nt" ? "win32" : platform}-${arch}`;
}

/** The tarballs one node gets, and the id of that set (same set = same id = nothing to ship again). */
export interface RuntimeSet {
  id: string;
  /** The Node.js runtime, unless the node runs its own. */
  node?: PinnedTarball;
  /** node-llama-cpp's closure and the chosen prebuilts, each with its node_modules path. */
  packages: PinnedTarball[];
  prebuilts: string[];
  backends: string[];
}

function versionAtLeast(have: string, need: string): boolean {
  const a = have.split(".").map(Number);
  const b = need.split(".").map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}

/**
 * The pinned set for a platform. `withNode` adds the Node.js runtime; a platform without a pinned
 * Node.js build, or a Linux whose glibc is older than that build needs, is refused with what to do.
 */
export function runtimeSetFor(p: NodePlatform, pins: RuntimePins, opts: { withNode: boolean }): RuntimeSet {
  const { packages: names, backends } = prebuiltPackagesFor(p);
  const key = platformKey(p);
  let node: PinnedTarball | undefined;
  if (opts.withNode) {
    node = pins.node.packages[key];
    if (!node) {
      throw new NodeError(
        "UNSUPPORTED_PLATFORM",
        `npm carries no Node.js ${pins.node.version.split(".")[0]} build for ${key}, so rbee cannot bring one; install Node.js 20 or newer on the node and deploy with its own Node (rbee nodes deploy NAME --node-runtime system, or RBEE_NODE_RUNTIME=system)`,
        { platform: key },
      );
    }
    if (p.os === "linux" && p.glibc && !versionAtLeast(p.glibc, pins.node.minGlibc)) {
      throw new NodeError(
        "UNSUPPORTED_PLATFORM",
        `the node's glibc is ${p.glibc}, older than the ${pins.node.minGlibc} that Node.js ${pins.node.version} and llama.cpp's prebuilt binaries need; upgrade the node's OS (Debian 10+, Ubuntu 20.04+, RHEL 8+), or run rbee there inside a newer glibc container (e.g. debian:bookworm) reached over SSH`,
        { glibc: p.glibc, min_glibc: pins.node.minGlibc },
      );
    }
  }
  const prebuilts = names.map((n) => {
    const pin = pins.prebuilts[n];
    if (!pin)
      throw new NodeError("DEPLOY_BUNDLE_MISSING", `${n} is not in the runtime pins of this build; rebuild rbee`, {
        package: n,
      });
    return pin;
  });
  const packages = [...pins.closure, ...prebuilts];
  const id = createHash("sha256")
    .update(JSON.stringify([node?.integrity ?? "system", ...packages.map((x) => `${x.path}@${x.integrity}`)]))
    .digest("hex")
    .slice(0, 16);
  return { id, node, packages, prebuilts: names, backends };
}
