// A build of node-llama-cpp's llama.cpp for this node's CPU, done once at deploy time, with the
// prebuilt binary as the fallback whenever the build is missing, failed or does not load.
//
// Why: the prebuilt CPU binaries are built without OpenMP (node-llama-cpp's CI sets GGML_OPENMP=OFF).
// ggml then creates and joins its worker threads for every token and synchronises them with a
// barrier that only spins; with 2+ threads on a busy machine a preempted thread stalls the others
// for a whole scheduler slice. llama.cpp's default build (OpenMP on) keeps its threads and waits in
// the kernel after a short spin. See test/bench/FINDINGS.md for the measurements.
//
// node-llama-cpp always writes a source build under its own package folder
// (node_modules/node-llama-cpp/llama/localBuilds) and has no option to move it. So the build goes
// into a private copy of the package under `dir`, whose dependencies are links to the installed
// ones: the installed package stays untouched (it may be shared), and the build is made and loaded
// through node-llama-cpp's own supported API (`getLlama({ build, cmakeOptions })`).

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { Llama, LlamaOptions } from "node-llama-cpp";
import { cpuFlags, ggmlCpuOptions } from "./cpu-features";

export interface NativeBuildOptions {
  /** Folder that receives the private package copy and its build (created if missing). */
  dir: string;
  /** The installed node-llama-cpp package folder (default: the one this process resolves). */
  packageDir?: string;
  /** CMake options (default: `nativeCmakeOptions()`). */
  cmakeOptions?: Record<string, string>;
  /** Build progress lines (compiler output is long; it goes to `<dir>/build.log` too). */
  log?: (line: string) => void;
  /** Give up after this long (default 30 min: a 2-core machine needs ~12). */
  timeoutMs?: number;
}

export interface NativeBuildResult {
  ok: boolean;
  /** The copy's entry module, to load with `loadLlama`. */
  entry: string;
  cmakeOptions: Record<string, string>;
  durationMs: number;
  /** Why the build is not usable (ok false). */
  error?: string;
}

const STAMP = "rbee-native-build.json";

/**
 * CMake options for this CPU: OpenMP on (persistent threads, a barrier that sleeps), the CPU's own
 * instruction sets listed one by one, AMX off (see cpu-features.ts).
 */
export function nativeCmakeOptions(flags = cpuFlags()): Record<string, string> {
  return { ...ggmlCpuOptions(flags), GGML_OPENMP: "ON" };
}

/** The installed node-llama-cpp package folder. */
export function installedPackageDir(): string {
  // The package exports no "./package.json"; its main entry is dist/index.js.
  return path.resolve(path.dirname(require.resolve("node-llama-cpp")), "..");
}

function copyDir(dir: string): string {
  return path.join(dir, "node_modules", "node-llama-cpp");
}

/** The entry module of the package copy in `dir` (import it to use the same classes as its Llama). */
export function nativeEntry(dir: string): string {
  return path.join(copyDir(dir), "dist", "index.js");
}

function packageVersion(packageDir: string): string {
  return (JSON.parse(readFileSync(path.join(packageDir, "package.json"), "utf8")) as { version: string }).version;
}

/** What must match for a finished build to be reused: package version, options, CPU. */
function stampFor(packageDir: string, cmakeOptions: Record<string, string>): string {
  const cpu = createHash("sha256").update([...cpuFlags()].sort().join(" ")).digest("hex").slice(0, 16);
  return JSON.stringify({ version: packageVersion(packageDir), cmakeOptions, cpu });
}

/**
 * Makes `<dir>/node_modules/node-llama-cpp`: its own files copied (so the build lands beside them),
 * without the 200 MB llama.cpp checkout (the build clones it from the bundled git bundle), and
 * every sibling package of the installed one linked, so its imports resolve wherever `dir` is.
 */
function preparePackageCopy(packageDir: string, dir: string): void {
  const target = copyDir(dir);
  const staging = `${target}.${process.pid}.tmp`;
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  for (const name of readdirSync(packageDir)) {
    if (name === "node_modules") continue;
    cpSync(path.join(packageDir, name), path.join(staging, name), {
      recursive: true,
      dereference: true,
      filter: (src) => {
        const rel = path.relative(path.join(packageDir, "llama"), src);
        return !["llama.cpp", "localBuilds", "build", "lastBuild.json"].some((skip) => rel === skip || rel.startsWith(skip + path.sep));
      },
    });
  }
  // The package's own nested dependencies, if npm put any there.
  if (existsSync(path.join(packageDir, "node_modules"))) symlinkSync(path.join(packageDir, "node_modules"), path.join(staging, "node_modules"));
  const siblings = path.dirname(packageDir);
  for (const name of readdirSync(siblings)) {
    if (name === "node-llama-cpp" || name.startsWith(".")) continue;
    const link = path.join(dir, "node_modules", name);
    if (!existsSync(link)) symlinkSync(path.join(siblings, name), link);
  }
  rmSync(target, { recursive: true, force: true });
  renameSync(staging, target);
}

/** Runs a small ESM script with node; resolves with its exit code and keeps its output in `logFile`. */
function runNode(script: string, logFile: string, timeoutMs: number, log: (line: string) => void): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    const chunks: Buffer[] = [];
    let last = "";
    const onData = (d: Buffer) => {
      chunks.push(d);
      // node-llama-cpp's own messages, once each: progress bars redraw the same line many times.
      for (const raw of d.toString().split(/[\r\n]+/)) {
        const line = raw.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "").replace(/\s+\d+%$/, "").trim();
        if (line !== last && /^\[node-llama-cpp\]|^rbee:/.test(line)) log(line);
        if (line) last = line;
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      writeFileSync(logFile, Buffer.concat(chunks));
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}

/**
 * Builds node-llama-cpp's llama.cpp for this CPU into `dir` (minutes), then loads it once in a
 * separate process to prove it works. Reuses a finished build with the same stamp. Never throws for
 * a failed build: the result says why, and `loadLlama` then falls back to the prebuilt.
 */
export async function buildNativeLlama(opts: NativeBuildOptions): Promise<NativeBuildResult> {
  const started = Date.now();
  const packageDir = opts.packageDir ?? installedPackageDir();
  const cmakeOptions = opts.cmakeOptions ?? nativeCmakeOptions();
  const log = opts.log ?? (() => {});
  const entry = nativeEntry(opts.dir);
  const stampFile = path.join(opts.dir, STAMP);
  const wanted = stampFor(packageDir, cmakeOptions);
  const result = (ok: boolean, error?: string): NativeBuildResult => ({ ok, entry, cmakeOptions, durationMs: Date.now() - started, error });

  if (existsSync(stampFile) && readFileSync(stampFile, "utf8") === wanted && existsSync(entry)) return result(true);
  try {
    mkdirSync(path.join(opts.dir, "node_modules"), { recursive: true });
    rmSync(stampFile, { force: true });
    log(`rbee: copying node-llama-cpp ${packageVersion(packageDir)} to ${opts.dir}`);
    preparePackageCopy(packageDir, opts.dir);
  } catch (err) {
    return result(false, `could not prepare the package copy: ${(err as Error).message}`);
  }

  // The build and the check run in a child: a failed native load must not take this process down.
  const script = `
    const { getLlama } = await import(${JSON.stringify(pathToFileURL(entry).href)});
    const options = { gpu: false, cmakeOptions: ${JSON.stringify(cmakeOptions)}, progressLogs: true };
    const built = await getLlama({ ...options, build: "forceRebuild" });
    await built.dispose();
    const llama = await getLlama({ ...options, build: "never", usePrebuiltBinaries: false });
    console.log("rbee: build type " + llama.buildType);
    process.exit(llama.buildType === "localBuild" ? 0 : 3);
  `;
  log("rbee: building llama.cpp for this CPU (minutes)");
  const code = await runNode(script, path.join(opts.dir, "build.log"), opts.timeoutMs ?? 30 * 60_000, log);
  if (code !== 0) return result(false, `the native build failed (exit ${code}); see ${path.join(opts.dir, "build.log")}`);
  writeFileSync(stampFile, wanted);
  return result(true);
}

export interface LoadedLlama {
  llama: Llama;
  /** "native": the build from `buildNativeLlama`; "prebuilt": node-llama-cpp's own binary. */
  kind: "native" | "prebuilt";
  /** Why the native build was not used (kind "prebuilt"), when there was one to consider. */
  fallbackReason?: string;
}

export interface LoadLlamaOptions {
  /** The folder given to `buildNativeLlama`; absent: always the prebuilt. */
  dir?: string;
  /** Compute threads the worker will give its context. */
  threads: number;
  /** More getLlama options (logLevel…); gpu and build are set here. */
  llamaOptions?: LlamaOptions;
}

/**
 * The Llama a CPU worker should use (GPU workers keep the prebuilt for their GPU):
 * - one thread: the prebuilt. It has no thread handoff to lose time on, and its CPU variants carry
 *   kernels a portable source build does not (AMX, where the CPU has it: 1.3x on this machine);
 * - two or more: the native build from `dir` when it exists for this package version, options
 *   and CPU, else the prebuilt.
 * When the worker owns every CPU it may run on (threads == available parallelism), the OpenMP
 * threads are pinned one per core (OMP_PROC_BIND=spread, set before the library loads, unless the
 * environment already says otherwise): unpinned, the scheduler now and then stacks both compute
 * threads on one core and their spinning barrier loses 90% of the speed. A node running several
 * workers should give each its own CPU set (taskset) so the pins never overlap.
 */
export async function loadLlama(opts: LoadLlamaOptions): Promise<LoadedLlama> {
  const base: LlamaOptions = { ...opts.llamaOptions, gpu: false, build: "never" };
  const prebuilt = async (fallbackReason?: string): Promise<LoadedLlama> => {
    const { getLlama } = await import("node-llama-cpp");
    return { llama: await getLlama(base), kind: "prebuilt", fallbackReason };
  };
  const { dir, threads } = opts;
  if (!dir) return prebuilt();
  if (threads < 2) return prebuilt("one thread: the prebuilt is as fast or faster");
  const stampFile = path.join(dir, STAMP);
  const entry = nativeEntry(dir);
  if (!existsSync(stampFile) || !existsSync(entry)) return prebuilt(`no native build in ${dir}`);
  const stamp = JSON.parse(readFileSync(stampFile, "utf8")) as { cmakeOptions: Record<string, string> };
  if (readFileSync(stampFile, "utf8") !== stampFor(installedPackageDir(), stamp.cmakeOptions)) {
    return prebuilt("the native build is for another node-llama-cpp version or CPU");
  }
  if (threads === availableParallelism() && process.env.OMP_PROC_BIND === undefined) process.env.OMP_PROC_BIND = "spread";
  try {
    const { getLlama }: typeof import("node-llama-cpp") = await import(pathToFileURL(entry).href);
    const llama = await getLlama({ ...base, cmakeOptions: stamp.cmakeOptions, usePrebuiltBinaries: false });
    if (llama.buildType !== "localBuild") {
      await llama.dispose();
      return prebuilt("the native build did not load");
    }
    return { llama, kind: "native" };
  } catch (err) {
    return prebuilt(`the native build did not load: ${(err as Error).message}`);
  }
}
