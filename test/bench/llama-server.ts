// llama.cpp's own server as the bench's peer: the worker must be at least as fast as a user running
// llama-server by hand. Built once from the very llama.cpp source node-llama-cpp ships (so both sides
// run the same kernels), into the git-ignored .cache/ — only the bench builds it, never the tests
// (it takes minutes on 2 cores).

import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { ggmlCpuOptions } from "../../hive-agent/src/worker/cpu-features";
import { TokenClock, type StreamTiming } from "./measure";

const REPO_ROOT = path.resolve(__dirname, "..", "..");
const BUNDLE = path.join(REPO_ROOT, "node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");
export const LLAMA_CPP_SRC = path.join(REPO_ROOT, ".cache", "llama.cpp-src");
export const LLAMA_SERVER_DIR = path.join(REPO_ROOT, ".cache", "llama-server");
const BUILD_DIR = path.join(LLAMA_SERVER_DIR, "build");
const STAMP = path.join(LLAMA_SERVER_DIR, "stamp.json");
const BINARY = path.join(BUILD_DIR, "bin", "llama-server");

/** CMake options of the peer build: Release, CPU only, this CPU's instruction sets (AMX included, as the worker's native build). */
export function llamaServerCmakeOptions(): Record<string, string> {
  return {
    CMAKE_BUILD_TYPE: "Release",
    LLAMA_CURL: "OFF",
    LLAMA_OPENSSL: "OFF",
    LLAMA_BUILD_TESTS: "OFF",
    LLAMA_BUILD_EXAMPLES: "OFF",
    GGML_CUDA: "OFF",
    GGML_VULKAN: "OFF",
    GGML_METAL: "OFF",
    ...ggmlCpuOptions(),
  };
}

function run(cmd: string, args: string[], opts: { cwd?: string; log: NodeJS.WritableStream }): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      opts.log.write(d);
    });
    child.stderr.on("data", (d: Buffer) => opts.log.write(d));
    child.on("error", reject);
    child.on("close", (code) =>
      code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(" ")} exited with ${code}`)),
    );
  });
}

/**
 * Returns the path of the llama-server binary, building it first when the stamp does not match
 * the bundled source's commit and the CMake options. The build log goes to .cache/llama-server/build.log.
 */
export async function ensureLlamaServer(log: (line: string) => void = () => {}): Promise<string> {
  if (!existsSync(BUNDLE)) throw new Error(`llama.cpp source bundle not found at ${BUNDLE}; run npm ci first`);
  const options = llamaServerCmakeOptions();
  mkdirSync(LLAMA_SERVER_DIR, { recursive: true });
  const logFile = path.join(LLAMA_SERVER_DIR, "build.log");
  const logStream = createWriteStream(logFile, { flags: "a" });
  try {
    // The bundle's commit names the source; fetching it is cheap (seconds), the compile is not.
    if (!existsSync(path.join(LLAMA_CPP_SRC, ".git")))
      await run("git", ["init", "-q", LLAMA_CPP_SRC], { log: logStream });
    await run("git", ["-C", LLAMA_CPP_SRC, "fetch", "-q", BUNDLE, "HEAD"], { log: logStream });
    const commit = (await run("git", ["-C", LLAMA_CPP_SRC, "rev-parse", "FETCH_HEAD"], { log: logStream })).trim();
    const wanted = JSON.stringify({ commit, options });
    if (existsSync(BINARY) && existsSync(STAMP) && readFileSync(STAMP, "utf8") === wanted) return BINARY;

    log(`building llama-server ${commit.slice(0, 10)} (minutes; log: ${path.relative(REPO_ROOT, logFile)})`);
    await run("git", ["-C", LLAMA_CPP_SRC, "checkout", "-q", "--force", commit], { log: logStream });
    rmSync(STAMP, { force: true });
    // A clean build folder: other options, or a cache that was configured somewhere else (CMake
    // refuses a CMakeCache.txt made for another folder).
    rmSync(BUILD_DIR, { recursive: true, force: true });
    const defines = Object.entries(options).map(([k, v]) => `-D${k}=${v}`);
    await run("cmake", ["-S", LLAMA_CPP_SRC, "-B", BUILD_DIR, ...defines], { log: logStream });
    await run("cmake", ["--build", BUILD_DIR, "--target", "llama-server", "-j2"], { log: logStream });
    if (!existsSync(BINARY)) throw new Error(`the build finished but ${BINARY} is missing; see ${logFile}`);
    writeFileSync(STAMP, wanted);
    return BINARY;
  } finally {
    logStream.end();
  }
}

export interface LlamaServerOptions {
  binary: string;
  model: string;
  /** -t: threads for generation. */
  threads: number;
  /** -tb: threads for prompt processing (defaults to `threads`). */
  threadsBatch?: number;
  /** -np: parallel slots. */
  parallel?: number;
  /** -c: total context (shared by the slots). */
  contextSize?: number;
  /** More command-line arguments (e.g. ["-fa", "off"]). */
  extraArgs?: string[];
  /** Run under `taskset -c <cpus>`. */
  cpus?: string;
}

export interface LlamaServer {
  url: string;
  pid: number;
  /** What the server printed (its own timings are in it). */
  output(): string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill("SIGKILL"), 5000);
    child.once("exit", () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/** Starts llama-server on 127.0.0.1 and resolves once /health answers 200 (model loaded). */
export async function startLlamaServer(opts: LlamaServerOptions): Promise<LlamaServer> {
  const port = await freePort();
  const args = [
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "-m",
    opts.model,
    "-t",
    String(opts.threads),
    "-tb",
    String(opts.threadsBatch ?? opts.threads),
    "-np",
    String(opts.parallel ?? 1),
    "-c",
    String(opts.contextSize ?? 4096),
    "--no-webui",
    ...(opts.extraArgs ?? []),
  ];
  const [cmd, cmdArgs] = opts.cpus ? ["taskset", ["-c", opts.cpus, opts.binary, ...args]] : [opts.binary, args];
  // The build's RUNPATH names the folder it was built in; the cache may have moved since (a copied
  // .cache/, another worktree), so point the loader at the binary's own folder first.
  const libDir = path.dirname(opts.binary);
  const env = { ...process.env, LD_LIBRARY_PATH: [libDir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(":") };
  const child = spawn(cmd, cmdArgs, { stdio: ["ignore", "pipe", "pipe"], env });
  let output = "";
  const collect = (d: Buffer) => {
    output += d.toString();
    if (output.length > 1 << 20) output = output.slice(-(1 << 19));
  };
  child.stdout!.on("data", collect);
  child.stderr!.on("data", collect);
  const url = `http://127.0.0.1:${port}`;
  const server: LlamaServer = { url, pid: child.pid!, output: () => output, stop: () => stopChild(child) };

  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `llama-server exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${output.slice(-2000)}`,
      );
    }
    try {
      const res = await fetch(`${url}/health`);
      await res.body?.cancel();
      if (res.status === 200) return server;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await server.stop();
  throw new Error(`llama-server did not become ready within 60 s:\n${output.slice(-2000)}`);
}

export interface CompletionRequest {
  prompt: string;
  nPredict: number;
  seed?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  /** Generate exactly nPredict tokens whatever the model samples. */
  ignoreEos?: boolean;
}

export interface CompletionResult extends StreamTiming {
  text: string;
  /** The server's own timings object from the last event (predicted_per_second, prompt_ms…). */
  serverTimings: Record<string, number>;
}

/**
 * Streams POST /completion and times it from the client side. Tokens are counted from the token
 * ids each event carries (`return_tokens`), not from text pieces, which may merge bytes of a token.
 */
export async function streamCompletion(
  url: string,
  req: CompletionRequest,
  signal?: AbortSignal,
): Promise<CompletionResult> {
  const body = {
    prompt: req.prompt,
    n_predict: req.nPredict,
    seed: req.seed ?? 1,
    temperature: req.temperature ?? 0,
    top_k: req.topK ?? 40,
    top_p: req.topP ?? 0.95,
    ignore_eos: req.ignoreEos ?? true,
    stream: true,
    return_tokens: true,
    cache_prompt: false,
  };
  const clock = new TokenClock();
  const res = await fetch(`${url}/completion`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
  if (res.status !== 200 || !res.body)
    throw new Error(`llama-server /completion answered ${res.status}: ${await res.text()}`);
  let text = "";
  let serverTimings: Record<string, number> = {};
  let pending = "";
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    pending += decoder.decode(chunk as Uint8Array, { stream: true });
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (!line.startsWith("data: ")) continue;
      const event = JSON.parse(line.slice(6)) as {
        content?: string;
        tokens?: number[];
        stop?: boolean;
        timings?: Record<string, number>;
      };
      clock.tokens(event.tokens?.length ?? 0);
      text += event.content ?? "";
      if (event.timings) serverTimings = event.timings;
    }
  }
  return { ...clock.result(), text, serverTimings };
}
