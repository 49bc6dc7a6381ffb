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
import {
  chmodSync,
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { availableParallelism, setPriority } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { Llama, LlamaOptions } from "node-llama-cpp";
import { cpuFlags, ggmlCpuOptions } from "./cpu-features";
import { isPidAlive } from "../util/process";
import { variantEntry, variantReady } from "./cpu-variants";

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
  /** Scheduling priority of the build (nice value, 19 = lowest), so a background build yields to workers. */
  niceness?: number;
  /** Stops the build (its whole process group: node, cmake, the compilers). */
  signal?: AbortSignal;
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
/** Held while a build runs in the folder (the pid of the process building), so two builds never write it at once. */
const LOCK = "build.lock";

/**
 * CMake options for this CPU: OpenMP on (persistent threads, a barrier that sleeps), the CPU's own
 * instruction sets listed one by one, AMX where it has one (see cpu-features.ts).
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

/** The stamp a finished build with these options gets on this CPU (exported for tests). */
export function nativeBuildStamp(cmakeOptions: Record<string, string>): string {
  return stampFor(installedPackageDir(), cmakeOptions);
}

/** What must match for a finished build to be reused: package version, options, CPU. */
function stampFor(packageDir: string, cmakeOptions: Record<string, string>): string {
  const cpu = createHash("sha256")
    .update([...cpuFlags()].sort().join(" "))
    .digest("hex")
    .slice(0, 16);
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
        return !["llama.cpp", "localBuilds", "build", "lastBuild.json"].some(
          (skip) => rel === skip || rel.startsWith(skip + path.sep),
        );
      },
    });
  }
  // The package's own nested dependencies, if npm put any there.
  if (existsSync(path.join(packageDir, "node_modules")))
    symlinkSync(path.join(packageDir, "node_modules"), path.join(staging, "node_modules"));
  const siblings = path.dirname(packageDir);
  for (const name of readdirSync(siblings)) {
    if (name === "node-llama-cpp" || name.startsWith(".")) continue;
    const link = path.join(dir, "node_modules", name);
    if (!existsSync(link)) symlinkSync(path.join(siblings, name), link);
  }
  linkCmakeJs(siblings, path.join(dir, "node_modules", ".bin"));
  rmSync(target, { recursive: true, force: true });
  renameSync(staging, target);
}

/**
 * node-llama-cpp builds through `npm run cmake-js-llama`, which needs `cmake-js` in a node_modules/.bin
 * on npm's PATH. A deployed runtime (package folders copied to the node) has no .bin, so the copy
 * gets its own link to the cmake-js package's executable.
 */
function linkCmakeJs(siblings: string, binDir: string): void {
  const pkgDir = path.join(siblings, "cmake-js");
  if (!existsSync(path.join(pkgDir, "package.json"))) return; // the build will say what is missing
  const bin = (
    JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8")) as { bin?: string | Record<string, string> }
  ).bin;
  const rel = typeof bin === "string" ? bin : bin?.["cmake-js"];
  if (!rel) return;
  mkdirSync(binDir, { recursive: true });
  const link = path.join(binDir, "cmake-js");
  rmSync(link, { force: true });
  symlinkSync(path.join(pkgDir, rel), link);
  chmodSync(path.join(pkgDir, rel), 0o755);
}

/** Runs a small ESM script with node (saved beside `logFile`); resolves with its exit code and keeps its output in `logFile`. */
function runNode(
  script: string,
  logFile: string,
  timeoutMs: number,
  log: (line: string) => void,
  opts: { niceness?: number; signal?: AbortSignal; onSpawn?: (pid: number) => void } = {},
): Promise<number> {
  const { niceness, signal } = opts;
  return new Promise((resolve, reject) => {
    // A background build (one that can be stopped) gets its own process group, so stopping it stops
    // the cmake and compiler processes under it too. A foreground one stays in the caller's group,
    // where Ctrl+C reaches all of them.
    const ownGroup = signal !== undefined && process.platform !== "win32";
    // From a file, not `node -e`: node-llama-cpp tests a binary by forking with this process's
    // execArgv, and a forked `-e` would run this script again instead of its test.
    const scriptFile = `${logFile.replace(/\.log$/, "")}.mjs`;
    writeFileSync(scriptFile, script);
    const child = spawn(process.execPath, [scriptFile], { stdio: ["ignore", "pipe", "pipe"], detached: ownGroup });
    const killGroup = () => {
      try {
        if (ownGroup && child.pid) process.kill(-child.pid, "SIGKILL");
        else child.kill("SIGKILL");
      } catch {
        // already gone
      }
    };
    signal?.addEventListener("abort", killGroup, { once: true });
    if (signal?.aborted) killGroup();
    if (child.pid) opts.onSpawn?.(child.pid);
    // Set before the script starts cmake, so the compilers it spawns inherit it.
    if (niceness !== undefined && child.pid) {
      try {
        setPriority(child.pid, niceness);
      } catch {
        // not allowed here (some containers): the build still works, at normal priority
      }
    }
    const chunks: Buffer[] = [];
    let last = "";
    const onData = (d: Buffer) => {
      chunks.push(d);
      // node-llama-cpp's own messages, once each: progress bars redraw the same line many times.
      for (const raw of d.toString().split(/[\r\n]+/)) {
        const line = raw
          .replace(/\x1b\[[0-9;]*[A-Za-z]/g, "")
          .replace(/\s+\d+%$/, "")
          .trim();
        if (line !== last && /^\[node-llama-cpp\]|^rbee:/.test(line)) log(line);
        if (line) last = line;
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const timer = setTimeout(killGroup, timeoutMs);
    child.on("error", reject);
    child.on("close", (code, exitSignal) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", killGroup);
      writeFileSync(logFile, Buffer.concat(chunks));
      resolve(code ?? (exitSignal ? 128 : 1));
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
  const result = (ok: boolean, error?: string): NativeBuildResult => ({
    ok,
    entry,
    cmakeOptions,
    durationMs: Date.now() - started,
    error,
  });
  let wanted: string;
  try {
    wanted = stampFor(packageDir, cmakeOptions);
  } catch (err) {
    return result(false, `cannot read the node-llama-cpp package in ${packageDir}: ${(err as Error).message}`);
  }

  if (existsSync(stampFile) && readFileSync(stampFile, "utf8") === wanted && existsSync(entry)) return result(true);
  try {
    mkdirSync(opts.dir, { recursive: true });
  } catch (err) {
    return result(false, `cannot create ${opts.dir}: ${(err as Error).message}`);
  }
  const release = takeBuildLock(opts.dir);
  if (typeof release === "string") return result(false, release);
  try {
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
    const code = await runNode(script, path.join(opts.dir, "build.log"), opts.timeoutMs ?? 30 * 60_000, log, {
      niceness: opts.niceness,
      signal: opts.signal,
      // The lock names the build process from now on: should this process die, the build (and the
      // lock) live on until it ends, and nobody starts a second one in the same folder meanwhile.
      onSpawn: (pid) => writeFileSync(path.join(opts.dir, LOCK), String(pid)),
    });
    if (opts.signal?.aborted) return result(false, "the native build was stopped");
    if (code !== 0)
      return result(false, `the native build failed (exit ${code}); see ${path.join(opts.dir, "build.log")}`);
    writeFileSync(stampFile, wanted);
    return result(true);
  } finally {
    release();
  }
}

/**
 * Takes `<dir>/build.lock` (a lock left by a process that is gone is taken over). Returns the release
 * function, or why the lock is not free.
 */
function takeBuildLock(dir: string): (() => void) | string {
  const file = path.join(dir, LOCK);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(file, "wx", 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") return `cannot lock ${file}: ${(err as Error).message}`;
      const pid = Number(readFileSync(file, "utf8").trim());
      if (Number.isInteger(pid) && pid > 0 && isPidAlive(pid))
        return `another native build is running in ${dir} (pid ${pid}); wait for it to finish`;
      rmSync(file, { force: true });
    }
  }
  return `cannot lock ${file}`;
}

/** Whether `dir` holds a finished native build that this package version and CPU can use. */
export function checkNativeBuild(
  dir: string,
): { ok: true; cmakeOptions: Record<string, string> } | { ok: false; reason: string } {
  const stampFile = path.join(dir, STAMP);
  if (!existsSync(stampFile) || !existsSync(nativeEntry(dir)))
    return { ok: false, reason: `no native build in ${dir}` };
  const text = readFileSync(stampFile, "utf8");
  let stamp: { cmakeOptions?: Record<string, string> };
  try {
    stamp = JSON.parse(text);
  } catch {
    return { ok: false, reason: `the native build's stamp in ${dir} is unreadable` };
  }
  if (!stamp.cmakeOptions || text !== stampFor(installedPackageDir(), stamp.cmakeOptions)) {
    return { ok: false, reason: "the native build is for another node-llama-cpp version or CPU" };
  }
  return { ok: true, cmakeOptions: stamp.cmakeOptions };
}

/**
 * Which CPU binary a worker loads: "native" (the node's own build), "prebuilt:<variant>" (the prebuilt
 * with only that ggml CPU variant, cpu-variants.ts), or "prebuilt" (the prebuilt as ggml picks).
 */
export type CpuBinary = "native" | "prebuilt" | `prebuilt:${string}`;

export function isCpuBinary(x: string): x is CpuBinary {
  return x === "native" || x === "prebuilt" || /^prebuilt:[A-Za-z0-9_.-]+$/.test(x);
}

export interface LoadedLlama {
  llama: Llama;
  /** "native": the build from `buildNativeLlama`; "prebuilt": node-llama-cpp's own binary. */
  kind: "native" | "prebuilt";
  /** The binary that was loaded (a chosen variant only when it loaded). */
  binary: CpuBinary;
  /** Why the native build or the chosen binary was not used, when there was one to consider. */
  fallbackReason?: string;
}

export interface LoadLlamaOptions {
  /** The folder given to `buildNativeLlama`; absent: always the prebuilt. */
  dir?: string;
  /** Compute threads the worker will give its context. */
  threads: number;
  /**
   * The binary to load, as the node's calibration measured fastest (hive/calibrator.ts); absent: the
   * rule below. Falls back to the prebuilt when the chosen one is missing or does not load.
   */
  binary?: CpuBinary;
  /** Where the private copies of the prebuilt's CPU variants are (cpu-variants.ts), for "prebuilt:<variant>". */
  variantsDir?: string;
  /** More getLlama options (logLevel…); gpu and build are set here. */
  llamaOptions?: LlamaOptions;
}

/**
 * The Llama a CPU worker should use (GPU workers keep the prebuilt for their GPU). With a `binary`
 * from calibration, that one. Without (calibration off, not finished yet, or another thread count):
 * - one thread: the prebuilt. On the AMX machine this rule was measured on, OpenMP gained nothing
 *   without a second thread and the prebuilt's AMX variant won; on other CPUs calibration decides;
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
    return { llama: await getLlama(base), kind: "prebuilt", binary: "prebuilt", fallbackReason };
  };
  const { dir, threads, binary } = opts;
  if (binary?.startsWith("prebuilt:"))
    return loadVariant(binary.slice("prebuilt:".length), opts.variantsDir, base, prebuilt);
  if (binary === "prebuilt") return prebuilt();
  if (!dir) return prebuilt();
  if (binary !== "native" && threads < 2)
    return prebuilt("one thread: the prebuilt (no calibration figures for this thread count)");
  const check = checkNativeBuild(dir);
  if (!check.ok) return prebuilt(check.reason);
  const entry = nativeEntry(dir);
  if (threads === availableParallelism() && process.env.OMP_PROC_BIND === undefined)
    process.env.OMP_PROC_BIND = "spread";
  try {
    const { getLlama }: typeof import("node-llama-cpp") = await import(pathToFileURL(entry).href);
    const llama = await getLlama({ ...base, cmakeOptions: check.cmakeOptions, usePrebuiltBinaries: false });
    if (llama.buildType !== "localBuild") {
      await llama.dispose();
      return prebuilt("the native build did not load");
    }
    return { llama, kind: "native", binary: "native" };
  } catch (err) {
    return prebuilt(`the native build did not load: ${(err as Error).message}`);
  }
}

/** The prebuilt with one CPU variant, from its private copy; the plain prebuilt when that is missing or fails. */
async function loadVariant(
  variant: string,
  variantsDir: string | undefined,
  base: LlamaOptions,
  prebuilt: (reason: string) => Promise<LoadedLlama>,
): Promise<LoadedLlama> {
  if (!variantsDir || !variantReady(variantsDir, variant, installedPackageDir()))
    return prebuilt(`no private copy of the prebuilt's ${variant} variant`);
  try {
    const { getLlama }: typeof import("node-llama-cpp") = await import(
      pathToFileURL(variantEntry(variantsDir, variant)).href
    );
    return { llama: await getLlama(base), kind: "prebuilt", binary: `prebuilt:${variant}` };
  } catch (err) {
    return prebuilt(`the prebuilt's ${variant} variant did not load: ${(err as Error).message}`);
  }
}
