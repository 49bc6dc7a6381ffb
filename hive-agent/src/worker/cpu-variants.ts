// node-llama-cpp's prebuilt CPU binary comes as one llama.cpp with several ggml CPU back ends
// (libggml-cpu-<variant>.so: x64, sse42, haswell, zen4, sapphirerapids…); at load ggml scores every
// one against the CPU and takes the best-scoring. The best score is not always the fastest (the AMX
// variant is the fastest at 1 thread and the slowest at 2 on one machine: test/bench/FINDINGS.md §2d),
// so calibration measures each, and a worker can load a chosen one.
//
// A chosen variant is loaded through a private copy of the package set in which the other CPU
// variants are left out: ggml then has only that one to pick. node-llama-cpp finds its prebuilt
// binaries by importing @node-llama-cpp/<platform>-<arch> from its own dist folder, and Node resolves
// imports from a file's real path, so the copy's dist files are real files (hard links where the file
// system allows, copies elsewhere); everything else is a symbolic link to the installed packages, and
// the variant's own library is copied (it is the one file that differs, and writing to it must never
// reach the installed package, which other users may share).

import {
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";

const STAMP = "rbee-variant.json";
const VARIANT_FILE = /^libggml-cpu-(.+)\.so$/;

/** node-llama-cpp's name for this platform's prebuilt package ("linux-x64"…). */
function platformName(): string {
  const os = process.platform === "darwin" ? "mac" : process.platform === "win32" ? "win" : process.platform;
  return `${os}-${process.arch}`;
}

/** The installed @node-llama-cpp/<platform>-<arch> package beside `packageDir` (node-llama-cpp's folder), if any. */
export function prebuiltPackageDir(packageDir: string): string | undefined {
  const dir = path.join(path.dirname(packageDir), "@node-llama-cpp", platformName());
  return existsSync(path.join(dir, "bins", platformName())) ? dir : undefined;
}

/** The CPU variants the installed prebuilt ships, sorted by name; empty where it has one CPU back end only (macOS). */
export function prebuiltCpuVariants(packageDir: string): string[] {
  const pkg = prebuiltPackageDir(packageDir);
  if (!pkg) return [];
  return readdirSync(path.join(pkg, "bins", platformName()))
    .map((f) => VARIANT_FILE.exec(f)?.[1])
    .filter((v): v is string => v !== undefined)
    .sort();
}

/** The entry module of the private copy for `variant` under `root`. */
export function variantEntry(root: string, variant: string): string {
  return path.join(root, variant, "node_modules", "node-llama-cpp", "dist", "index.js");
}

function versionOf(packageDir: string): string {
  return (JSON.parse(readFileSync(path.join(packageDir, "package.json"), "utf8")) as { version: string }).version;
}

/** Whether `root` holds a finished private copy for `variant` made from this node-llama-cpp version. */
export function variantReady(root: string, variant: string, packageDir: string): boolean {
  try {
    const stamp = JSON.parse(readFileSync(path.join(root, variant, STAMP), "utf8")) as {
      version?: string;
      variant?: string;
    };
    return (
      stamp.version === versionOf(packageDir) && stamp.variant === variant && existsSync(variantEntry(root, variant))
    );
  } catch {
    return false;
  }
}

/** A tree of real files at `dst` for `src`: hard links where possible (no space taken), copies across file systems. */
function linkTree(src: string, dst: string): void {
  mkdirSync(dst, { recursive: true });
  for (const name of readdirSync(src)) {
    const from = path.join(src, name);
    const to = path.join(dst, name);
    if (statSync(from).isDirectory()) linkTree(from, to);
    else {
      try {
        linkSync(from, to);
      } catch {
        copyFileSync(from, to);
      }
    }
  }
}

/**
 * Makes (or reuses) `<root>/<variant>`: node-llama-cpp and its prebuilt package with only this CPU
 * variant. Returns the entry module to import. Throws when the variant is not in the installed prebuilt.
 */
export function prepareVariant(root: string, variant: string, packageDir: string): string {
  if (variantReady(root, variant, packageDir)) return variantEntry(root, variant);
  const pkg = prebuiltPackageDir(packageDir);
  const binsName = platformName();
  const variantLib = pkg && path.join(pkg, "bins", binsName, `libggml-cpu-${variant}.so`);
  if (!pkg || !variantLib || !existsSync(variantLib))
    throw new Error(`node-llama-cpp's prebuilt has no CPU variant "${variant}"`);
  const final = path.join(root, variant);
  const staging = `${final}.${process.pid}.tmp`;
  rmSync(staging, { recursive: true, force: true });
  const nm = path.join(staging, "node_modules");
  // node-llama-cpp: dist as real files (imports resolve from here), the rest linked.
  const nlc = path.join(nm, "node-llama-cpp");
  mkdirSync(nlc, { recursive: true });
  for (const name of readdirSync(packageDir)) {
    if (name === "dist") linkTree(path.join(packageDir, name), path.join(nlc, name));
    else if (name === "package.json") copyFileSync(path.join(packageDir, name), path.join(nlc, name));
    else if (name !== "node_modules") symlinkSync(path.join(packageDir, name), path.join(nlc, name));
  }
  if (existsSync(path.join(packageDir, "node_modules")))
    symlinkSync(path.join(packageDir, "node_modules"), path.join(nlc, "node_modules"));
  // Its dependencies: the installed ones.
  const siblings = path.dirname(packageDir);
  for (const name of readdirSync(siblings)) {
    if (name === "node-llama-cpp" || name === "@node-llama-cpp" || name.startsWith(".")) continue;
    symlinkSync(path.join(siblings, name), path.join(nm, name));
  }
  // The prebuilt package: its own files, and a bins folder with every library but the other CPU variants.
  const prebuilt = path.join(nm, "@node-llama-cpp", binsName);
  mkdirSync(path.join(prebuilt, "bins", binsName), { recursive: true });
  for (const name of readdirSync(pkg)) {
    if (name === "bins") continue;
    if (name === "dist") linkTree(path.join(pkg, name), path.join(prebuilt, name));
    else copyFileSync(path.join(pkg, name), path.join(prebuilt, name));
  }
  const bins = path.join(pkg, "bins", binsName);
  for (const name of readdirSync(bins)) {
    const other = VARIANT_FILE.exec(name);
    if (other && other[1] !== variant) continue;
    if (other) copyFileSync(path.join(bins, name), path.join(prebuilt, "bins", binsName, name));
    else symlinkSync(path.join(bins, name), path.join(prebuilt, "bins", binsName, name));
  }
  writeFileSync(path.join(staging, STAMP), JSON.stringify({ version: versionOf(packageDir), variant }));
  rmSync(final, { recursive: true, force: true });
  renameSync(staging, final);
  return variantEntry(root, variant);
}
