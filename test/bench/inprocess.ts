// The in-process node-llama-cpp baseline: what the worker's engine does with no HTTP in between,
// timed the same way as llama-server (see measure.ts), so the bench can tell engine cost from
// worker (HTTP/SSE) cost.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import type { Llama, LlamaContext, LlamaModel, LlamaOptions } from "node-llama-cpp";
import { loadLlama, nativeEntry } from "../../hive-agent/src/worker/native-build";
import { TokenClock, type StreamTiming } from "./measure";

export interface InProcessOptions {
  model: string;
  threads: number;
  /** Parallel sequences in the one context (llama-server's -np). */
  sequences?: number;
  contextSize?: number;
  batchSize?: number;
  flashAttention?: boolean;
  /** getLlama options; defaults to the CPU prebuilt, never building. */
  llama?: LlamaOptions;
  /** Reuse a Llama instance (loading one per config costs seconds). */
  llamaInstance?: Llama;
  /**
   * Load node-llama-cpp from this entry file instead of the installed package: a copy of the
   * package with its own native build (see native-build) or a reduced set of prebuilt CPU variants.
   */
  nodeLlamaCppEntry?: string;
  /** Use the native build made by buildNativeLlama in this folder; fail if it does not load. */
  nativeBuildDir?: string;
  /**
   * With more than one generation running, hold a batch back this long (ms) so the other
   * sequences' next tokens join it (node-llama-cpp's default dispatches on the next event-loop
   * cycle, often before the other sequences have sampled). 0 or absent: the default schedule.
   */
  gatherMs?: number;
}

export interface GenerateRequest {
  prompt: string;
  maxTokens: number;
  seed?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
}

export interface InProcessEngine {
  llama: Llama;
  model: LlamaModel;
  context: LlamaContext;
  /** Generates on a free sequence and times it like a streaming client would. */
  generate(req: GenerateRequest): Promise<StreamTiming & { text: string }>;
  dispose(): Promise<void>;
}

export async function loadInProcess(opts: InProcessOptions): Promise<InProcessEngine> {
  const entry = opts.nativeBuildDir ? nativeEntry(opts.nativeBuildDir) : opts.nodeLlamaCppEntry;
  const { getLlama, LlamaCompletion }: typeof import("node-llama-cpp") = entry
    ? await import(pathToFileURL(entry).href)
    : await import("node-llama-cpp");
  let llama = opts.llamaInstance;
  if (!llama && opts.nativeBuildDir) {
    // loadLlama takes the prebuilt for one thread; the study measures the native build at 1 thread too.
    const loaded = await loadLlama({
      dir: opts.nativeBuildDir,
      threads: Math.max(2, opts.threads),
      llamaOptions: opts.llama,
    });
    if (loaded.kind !== "native")
      throw new Error(`native build in ${opts.nativeBuildDir} not used: ${loaded.fallbackReason}`);
    llama = loaded.llama;
  }
  llama ??= await getLlama({ gpu: false, build: "never", ...opts.llama });
  const model = await llama.loadModel({ modelPath: opts.model });
  const sequences = opts.sequences ?? 1;
  let active = 0;
  const gatherMs = opts.gatherMs ?? 0;
  const gather = (dispatch: () => void) => {
    if (active <= 1) return dispatch();
    const start = performance.now();
    const tick = () => (performance.now() - start >= gatherMs ? dispatch() : setImmediate(tick));
    setImmediate(tick);
  };
  const context = await model.createContext({
    ...(gatherMs > 0 ? { batching: { dispatchSchedule: gather } } : {}),
    threads: opts.threads,
    sequences,
    contextSize: opts.contextSize ?? 4096,
    ...(opts.batchSize ? { batchSize: opts.batchSize } : {}),
    ...(opts.flashAttention !== undefined ? { flashAttention: opts.flashAttention } : {}),
  });
  const free = Array.from({ length: sequences }, () => context.getSequence());

  return {
    llama,
    model,
    context,
    async generate(req) {
      const sequence = free.pop();
      if (!sequence) throw new Error(`all ${sequences} sequences are busy`);
      const completion = new LlamaCompletion({ contextSequence: sequence, autoDisposeSequence: false });
      active++;
      try {
        await sequence.clearHistory();
        const clock = new TokenClock();
        const text = await completion.generateCompletion(req.prompt, {
          maxTokens: req.maxTokens,
          seed: req.seed ?? 1,
          temperature: req.temperature ?? 0,
          topK: req.topK ?? 40,
          topP: req.topP ?? 0.95,
          onToken: (tokens) => clock.tokens(tokens.length),
        });
        return { ...clock.result(), text };
      } finally {
        active--;
        completion.dispose({ disposeSequence: false });
        free.push(sequence);
      }
    },
    async dispose() {
      await context.dispose();
      await model.dispose();
      if (!opts.llamaInstance) await llama.dispose();
    },
  };
}

// ---- The same engine in a child process -------------------------------------------------------
// A worker is a process of its own; so is this, which also lets a bench run engines built
// differently (one native addon per process) and pin one with taskset without pinning the bench.

export type ChildEngineOptions = Omit<InProcessOptions, "llamaInstance"> & {
  /** Run under `taskset -c <cpus>`. */
  cpus?: string;
  /** Extra environment for the child (e.g. OMP_WAIT_POLICY). */
  env?: Record<string, string>;
};

export interface ChildEngine {
  pid: number;
  generate(req: GenerateRequest): Promise<StreamTiming & { text: string }>;
  stop(): Promise<void>;
}

type ChildReply =
  | { id: number; ok: true; result: StreamTiming & { text: string } }
  | { id: number; ok: false; error: string }
  | { ready: true };

export async function startChildEngine(opts: ChildEngineOptions): Promise<ChildEngine> {
  const { cpus, env, ...engineOpts } = opts;
  const nodeArgs = ["--import", "tsx", __filename, JSON.stringify(engineOpts)];
  const [cmd, args] = cpus ? ["taskset", ["-c", cpus, process.execPath, ...nodeArgs]] : [process.execPath, nodeArgs];
  const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, ...env } });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4000);
  });
  const pending = new Map<
    number,
    { resolve: (r: StreamTiming & { text: string }) => void; reject: (e: Error) => void }
  >();
  let nextId = 1;
  const ready = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      if (!line.startsWith("{")) return;
      const msg = JSON.parse(line) as ChildReply;
      if ("ready" in msg) return resolve();
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.ok) p?.resolve(msg.result);
      else p?.reject(new Error(msg.error));
    });
    child.on("exit", (code, signal) => {
      const err = new Error(`engine child exited (${code ?? signal}):\n${stderr}`);
      reject(err);
      for (const p of pending.values()) p.reject(err);
      pending.clear();
    });
  });
  await ready;
  return {
    pid: child.pid!,
    generate(req) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.stdin!.write(JSON.stringify({ id, req }) + "\n");
      });
    },
    stop() {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      return new Promise((resolve) => {
        child.once("exit", () => resolve());
        child.stdin!.end();
      });
    },
  };
}

async function childMain(optsJson: string) {
  const engine = await loadInProcess(JSON.parse(optsJson) as InProcessOptions);
  const reply = (msg: ChildReply): void => {
    process.stdout.write(JSON.stringify(msg) + "\n");
  };
  reply({ ready: true });
  const rl = createInterface({ input: process.stdin });
  const running: Promise<void>[] = [];
  for await (const line of rl) {
    const { id, req } = JSON.parse(line) as { id: number; req: GenerateRequest };
    running.push(
      engine.generate(req).then(
        (result) => reply({ id, ok: true, result }),
        (err: Error) => reply({ id, ok: false, error: err.message }),
      ),
    );
  }
  await Promise.all(running);
  await engine.dispose();
}

if (require.main === module) {
  childMain(process.argv[2] ?? "{}").catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
