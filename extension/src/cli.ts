// `rbee`: the keeper as a command-line tool (headless use, scripts, tests). Tokens go to stdout,
// narration and errors to stderr. Exit codes: 0 ok, 1 error, 2 usage, 130 cancelled.

import { parseArgs, type ParseArgsConfig } from "node:util";
import { readFileSync } from "node:fs";
import {
  RbeeError,
  BACKENDS,
  AGENT_VERSION,
  calibrationSummary,
  parseKeepAlive,
  type Backend,
  type CpuCalibration,
  type DeviceInfo,
  type NativeBuildStatus,
} from "@rbee/hive-agent/protocol";
import { errorCode } from "@rbee/hive-agent/util/coded-error";
import { StreamInterruptedError } from "./keeper/keeper";
import { defaultAgentScript, idleTimeoutDaemonArgs } from "./keeper/local-hive";
import { shQuote } from "./nodes/shell";
import { LOCALHOST } from "./keeper/local-connector";
import { defaultRegistryPath } from "./keeper/registry";
import { createLocalHive, openKeeperStack, type KeeperStack, type LocalHiveSetup } from "./stack/keeper-stack";
import { Narrator } from "./cli/narration";
import { existsSync } from "node:fs";
import path from "node:path";
import { SERVE_HELP, serve } from "./cli/serve";

const HELP: Record<string, string> = {
  main: `rbee ${AGENT_VERSION}: your own machines as a private code-completion and chat cloud

usage: rbee <command> [options]

commands:
  infer            stream a completion from a model on a node
  nodes list       the nodes rbee knows (localhost and your ~/.ssh/config hosts)
  nodes deploy|status|uninstall NAME   the hive-agent on an SSH node
  runtime fetch|import   the runtime tarballs, for keepers without registry access
  logs             a node's hive log (--node NAME [--follow])
  workers list     workers running on a node
  workers health   ask each worker of a node how it is
  workers stop     stop a worker now (frees its GPU)
  models list      models in a node's catalog
  models download  download a model into a node's catalog
  hive start|stop|status   the local hive (localhost's daemon)
  serve            an OpenAI-, Ollama- and llama.cpp-compatible gateway to your nodes' workers

global options:
  --registry FILE  registry file (default ${defaultRegistryPath()}; RBEE_HOME moves ~/.rbee)
  --ssh-config FILE        ssh config to read nodes from (default ~/.ssh/config)
  --accept-new-host-key    accept and record an SSH host key that known_hosts lacks (never a changed one)
  --json           machine-readable output where it applies
  --help           help for a command
  --version        print rbee's version (the keeper's and the hive-agent's it deploys) and exit
`,
  infer: `usage: rbee infer --model REF (--prompt TEXT | --prompt - | --prompt-file FILE) [options]

  --node NAME          node to run on (default localhost)
  --model REF          hf:owner/repo[/file.gguf], https://…/x.gguf, file:/abs/x.gguf
  --prompt TEXT        the prompt ("-" reads it from stdin). Other local users can read a
                       prompt given as TEXT in \`ps\`: use "-" or --prompt-file for anything private
  --prompt-file FILE   read the prompt from FILE
  --max-tokens N       tokens to generate (default 128)
  --temperature X      sampling temperature (default 0.8)
  --seed N             sampling seed, for reproducible output
  --backend B          cuda | metal | vulkan | cpu (default: the node's best)
  --device N|auto      GPU for a new worker (default auto: the GPU with room and the least load)
  --devices 0,1        split a new worker's model over these GPUs
  --allow-split        let the node span GPUs when no single one has room for the model
  --keep-alive S       idle time before the node stops a new worker: seconds or 30s/5m/2h; 0 = never
                       (default: the node's idle timeout)
  --threads N          CPU threads for a new worker (default: cores - 1)
  --context-size N     context per slot for a new worker (default: min(model's, 4096))
  --slots N            parallel requests a new worker serves (default 2 on CPU, 4 on GPU)
  --timeout S          give up after S seconds (default: none)
  --stall-limit S      end a stream that sends nothing for S seconds with STREAM_STALLED
                       (default 60, or RBEE_STALL_LIMIT_MS; 0: never)
  --ephemeral          stop the local hive afterwards if this run started it
  --no-autostart       fail instead of starting the local hive
  --json               print one JSON object with the result instead of streaming text
`,
  nodes: `usage: rbee nodes list [--json]      every node with its GPUs (free/total VRAM, workers on each)
       rbee nodes deploy NAME [--idle-timeout S]   install or upgrade the hive-agent on an SSH node and start it
                                   (--idle-timeout: how long its workers may sit idle; 0 = never; default 5m)
                                   (localhost: start the local hive, upgrading one of another version)
         --node-runtime pinned|system   the Node.js rbee brings (default) or the node's own (>= 20)
       rbee nodes status NAME      what is installed and running there
       rbee nodes uninstall NAME   stop the hive and remove the agent (models are kept; --purge-models removes them)
       rbee nodes build-native NAME   build llama.cpp for the node's CPU once (minutes); its calibration then measures it (without calibration: CPU workers of 2+ threads use it)
`,
  runtime: `usage: rbee runtime fetch --platform P [--gpu G] --out DIR   on a machine with an npm registry
       rbee runtime import DIR                                  on a keeper without one
  --platform P   linux-x64 | linux-arm64 | darwin-x64 | darwin-arm64 | win32-x64 (default: this machine)
  --gpu G        cpu | cuda | vulkan | metal, comma-separated (default cpu)
  --without-node  leave out the Node.js build (nodes that run their own, or darwin-arm64)
  Tarballs are checked against the hashes pinned in this rbee build; the cache is ${"${RBEE_HOME:-~/.rbee}"}/cache/runtime.
`,
  logs: `usage: rbee logs --node NAME [--follow] [--lines N]\n`,
  workers: `usage: rbee workers list [--node NAME] [--json]
       rbee workers health [--node NAME] [--json]   each worker's own answer (exit 1 if one does not answer)
       rbee workers stop ID [--node NAME]           stop a worker now and free its GPU
       rbee workers shutdown ID | --id ID [--node NAME]   the same
`,
  models: `usage: rbee models list [--node NAME] [--json]\n       rbee models download REF [--node NAME]\n`,
  serve: SERVE_HELP,
  hive: `usage: rbee hive start|stop|status|build-native [--json]
  start [--idle-timeout S]   how long workers may sit idle before the hive stops them (0 = never; default 5m)
  build-native   build llama.cpp for this machine's CPU once (minutes); calibration then measures it (without: CPU workers of 2+ threads use it)
`,
};

class UsageError extends Error {}

const GLOBAL_OPTIONS = {
  help: { type: "boolean", short: "h" },
  json: { type: "boolean" },
  registry: { type: "string" },
  node: { type: "string", default: LOCALHOST },
  "ssh-config": { type: "string" },
  "accept-new-host-key": { type: "boolean" },
} satisfies ParseArgsConfig["options"];

function parse<O extends ParseArgsConfig["options"]>(argv: string[], options: O) {
  try {
    return parseArgs({ args: argv, options: { ...GLOBAL_OPTIONS, ...options }, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function num(
  value: string | undefined,
  name: string,
  opts: { integer?: boolean; min?: number } = {},
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) || (opts.min !== undefined && n < opts.min))
    throw new UsageError(
      `--${name} must be ${opts.integer ? "an integer" : "a number"}${opts.min !== undefined ? ` ≥ ${opts.min}` : ""}, got "${value}"`,
    );
  return n;
}

type Context = KeeperStack;

interface OpenOptions {
  registry?: string;
  "ssh-config"?: string;
  "accept-new-host-key"?: boolean;
}

/**
 * The local hive's setup. A .vsix install has no node-llama-cpp next to dist/: its runtime is
 * unpacked once per version from ~/.rbee/cache/runtime (fetched or imported), and a hive left by an
 * older version is upgraded on first use. RBEE_AGENT_SCRIPT (tests, development) runs that script as it is.
 */
function localSetup(daemonArgs: string[] = []): LocalHiveSetup {
  const bundled = path.join(__dirname, "hive-agent.js");
  const runtime =
    process.env.RBEE_AGENT_SCRIPT || !existsSync(bundled)
      ? undefined
      : { bundleDir: __dirname, version: AGENT_VERSION };
  return {
    runtime,
    daemonArgs: () => daemonArgs,
    onRuntimeLine: (line) => process.stderr.write(`[runtime] ${line}\n`),
  };
}

function open(o: OpenOptions, autoStart = true): Promise<Context> {
  return openKeeperStack({
    ...localSetup(),
    registry: {
      path: o.registry ?? defaultRegistryPath(),
      logger: (level, m) => level === "warn" && process.stderr.write(`rbee: ${m}\n`),
    },
    autoStart,
    ssh: {
      configPath: () => o["ssh-config"],
      // The CLI cannot ask: an unknown host key is refused unless --accept-new-host-key.
      connect: { acceptNewHostKey: Boolean(o["accept-new-host-key"]) },
      deploy: deploySettingsFromEnv,
    },
    keeper: keeperTuningFromEnv(),
  });
}

/** RBEE_RUNTIME_INSTALL (pinned | copy): how node-llama-cpp reaches a node; RBEE_NODE_RUNTIME (pinned | system): which Node.js runs the hive there. */
function deploySettingsFromEnv(): { runtimeInstall?: "pinned" | "copy"; nodeRuntime?: "pinned" | "system" } {
  const runtime = process.env.RBEE_RUNTIME_INSTALL;
  const node = process.env.RBEE_NODE_RUNTIME;
  return {
    ...(runtime === "pinned" || runtime === "copy" ? { runtimeInstall: runtime } : {}),
    ...(node === "pinned" || node === "system" ? { nodeRuntime: node } : {}),
  };
}

/** RBEE_LOAD_TIMEOUT_MS and RBEE_BUSY_RETRY_MS ("1000,2000,4000") tune the keeper's limits. */
function keeperTuningFromEnv(): { loadTimeoutMs?: number; busyRetryDelaysMs?: number[] } {
  const out: { loadTimeoutMs?: number; busyRetryDelaysMs?: number[] } = {};
  const load = Number(process.env.RBEE_LOAD_TIMEOUT_MS);
  if (load > 0) out.loadTimeoutMs = load;
  const busy = process.env.RBEE_BUSY_RETRY_MS?.split(",").map(Number);
  if (busy?.length && busy.every((n) => n >= 0)) out.busyRetryDelaysMs = busy;
  return out;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function readPromptFile(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read --prompt-file ${file}: ${(e as Error).message}`);
  }
}

async function infer(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, {
    model: { type: "string" },
    prompt: { type: "string" },
    "prompt-file": { type: "string" },
    "max-tokens": { type: "string", default: "128" },
    temperature: { type: "string" },
    seed: { type: "string" },
    backend: { type: "string" },
    device: { type: "string" },
    devices: { type: "string" },
    "allow-split": { type: "boolean" },
    "keep-alive": { type: "string" },
    threads: { type: "string" },
    "context-size": { type: "string" },
    slots: { type: "string" },
    timeout: { type: "string" },
    "stall-limit": { type: "string" },
    ephemeral: { type: "boolean" },
    "no-autostart": { type: "boolean" },
  });
  if (v.help) return help("infer");
  if (!v.model) throw new UsageError("--model is required");
  if ((v.prompt === undefined) === (v["prompt-file"] === undefined))
    throw new UsageError("give the prompt with --prompt TEXT, --prompt - (stdin) or --prompt-file FILE (one of them)");
  if (v.backend && !BACKENDS.includes(v.backend as Backend))
    throw new UsageError(`--backend must be one of ${BACKENDS.join(", ")}`);
  // --prompt TEXT is visible to every local user in `ps`; stdin and --prompt-file are not.
  const prompt =
    v["prompt-file"] !== undefined
      ? readPromptFile(v["prompt-file"])
      : v.prompt === "-"
        ? await readStdin()
        : v.prompt!;
  const stall = num(v["stall-limit"], "stall-limit", { min: 0 });
  if (stall !== undefined) process.env.RBEE_STALL_LIMIT_MS = String(Math.round(stall * 1000));
  const timeout = num(v.timeout, "timeout", { min: 0 });
  const placement = placementOptions(v);

  const ctx = await open(v, !v["no-autostart"]);
  const narrator = new Narrator(process.stderr, Boolean(v.json));
  const abort = new AbortController();
  let cancelledBySignal = false;
  // Ctrl+C cancels on the worker (DELETE) and exits 130 (docs/edge-cases.md, EC5).
  const onSigint = () => {
    if (abort.signal.aborted) process.exit(130); // a second Ctrl+C does not wait
    cancelledBySignal = true;
    abort.abort();
  };
  process.on("SIGINT", onSigint);
  const timer = timeout !== undefined ? setTimeout(() => abort.abort(), timeout * 1000) : undefined;
  let wroteText = false;
  try {
    const result = await ctx.keeper.generate(
      {
        node: v.node!,
        model: v.model,
        backend: v.backend as Backend | undefined,
        ...placement,
        threads: num(v.threads, "threads", { integer: true, min: 1 }),
        contextSize: num(v["context-size"], "context-size", { integer: true, min: 16 }),
        slots: num(v.slots, "slots", { integer: true, min: 1 }),
      },
      {
        kind: "inference",
        prompt,
        max_tokens: num(v["max-tokens"], "max-tokens", { integer: true, min: 1 })!,
        temperature: num(v.temperature, "temperature", { min: 0 }),
        seed: num(v.seed, "seed", { integer: true, min: 0 }),
      },
      {
        onEvent: (e) => narrator.event(e),
        onToken: (t) => {
          if (v.json) return;
          narrator.done();
          process.stdout.write(t);
          wroteText = true;
        },
      },
      abort.signal,
    );
    narrator.done();
    if (v.json)
      process.stdout.write(
        JSON.stringify({
          text: result.text,
          tokens_out: result.tokensOut,
          stop_reason: result.stopReason,
          decode_ms: result.decodeMs,
          first_token_ms: result.firstTokenMs,
          worker_id: result.workerId,
          spawned: result.spawned,
        }) + "\n",
      );
    else if (wroteText) process.stdout.write("\n");
    if (result.stopReason === "cancelled") {
      process.stderr.write(cancelledBySignal ? "Cancelled.\n" : `Timed out after ${timeout} s.\n`);
      return cancelledBySignal ? 130 : 1;
    }
    return 0;
  } catch (e) {
    narrator.done();
    if (wroteText) process.stdout.write("\n");
    if (abort.signal.aborted && e instanceof RbeeError && e.code === "REQUEST_CANCELLED") {
      process.stderr.write(cancelledBySignal ? "Cancelled.\n" : `Timed out after ${timeout} s.\n`);
      return cancelledBySignal ? 130 : 1;
    }
    throw e;
  } finally {
    clearTimeout(timer);
    process.off("SIGINT", onSigint);
    if (v.ephemeral && ctx.localConnector.startedHive) await ctx.local.stop();
    await ctx.close();
  }
}

/** --device, --devices, --allow-split and --keep-alive as a worker spec's fields. */
function placementOptions(v: { device?: string; devices?: string; "allow-split"?: boolean; "keep-alive"?: string }) {
  const device =
    v.device === undefined || v.device === "auto" ? undefined : num(v.device, "device", { integer: true, min: 0 });
  const devices = v.devices?.split(",").map((d) => num(d.trim(), "devices", { integer: true, min: 0 })!);
  if (devices !== undefined && device !== undefined)
    throw new UsageError("give either --device or --devices, not both");
  return {
    device,
    devices,
    allowSplit: v["allow-split"] || undefined,
    keepAliveS: seconds(v["keep-alive"], "keep-alive"),
  };
}

/** A duration flag (seconds, or 30s / 5m / 2h; 0 = never) in seconds. */
function seconds(value: string | undefined, name: string): number | undefined {
  try {
    return parseKeepAlive(/^\d+$/.test(value ?? "") ? Number(value) : value, name);
  } catch {
    throw new UsageError(`--${name} must be seconds or a duration like 30s, 5m, 2h (0 = never), got "${value}"`);
  }
}

function print(json: boolean | undefined, data: unknown, table: () => string) {
  process.stdout.write(json ? JSON.stringify(data, null, 2) + "\n" : table());
}

function formatTable(rows: string[][]): string {
  if (!rows.length) return "";
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => c.padEnd(widths[i]))
          .join("  ")
          .trimEnd(),
      )
      .join("\n") + "\n"
  );
}

async function nodes(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, {
    "purge-models": { type: "boolean" },
    "idle-timeout": { type: "string" },
    "node-runtime": { type: "string" },
  });
  const sub = positionals[0];
  if (v.help || !["list", "deploy", "status", "uninstall", "build-native"].includes(sub)) return help("nodes", !v.help);
  const idleArgs = idleTimeoutDaemonArgs(seconds(v["idle-timeout"], "idle-timeout"));
  const nodeRuntime = v["node-runtime"];
  if (nodeRuntime !== undefined && nodeRuntime !== "pinned" && nodeRuntime !== "system")
    throw new UsageError(`--node-runtime is pinned or system, got "${nodeRuntime}"`);
  const ctx = await open(v, false);
  try {
    if (sub === "list") return await listNodes(ctx, v.json);
    const name = positionals[1];
    if (!name) throw new UsageError(`nodes ${sub} needs a node name (a Host of your ssh config)`);
    if (name === LOCALHOST) {
      if (sub !== "deploy") throw new UsageError(`localhost's hive is local: "rbee hive start|stop|status"`);
      // Deploying localhost = this version's local hive running (an older one is upgraded, models kept).
      const { started } = await ctx.local.ensure((m) =>
        process.stderr.write(`[localhost] ${m ?? "starting the local hive"}\n`),
      );
      const s = await ctx.local.status();
      print(
        v.json,
        { ...s, started },
        () => `local hive ${s.version} ${started ? "started" : "already running"} (pid ${s.pid})\n`,
      );
      return 0;
    }
    const { deployHive, hiveStatus, uninstallHive } = require("./nodes/deploy") as typeof import("./nodes/deploy");
    const conn = ctx.ssh().pool.get(name);
    const bar = new Narrator(process.stderr, Boolean(v.json));
    const narrate = (e: import("./nodes/deploy").DeployEvent) => {
      if (v.json) return;
      if (e.status === "progress") {
        const mb = (n: number) => (n / 1e6).toFixed(1);
        const unit =
          e.step === "fetch" ? `${e.bytes} / ${e.totalBytes} packages` : `${mb(e.bytes)} / ${mb(e.totalBytes)} MB`;
        bar.progress(`[${name}] ${e.step}`, e.totalBytes ? e.bytes / e.totalBytes : 0, unit);
      } else if (e.status !== "done") bar.line(`[${name}] ${e.message}`);
    };
    // Ctrl-C cancels a deploy before the new version is swapped in; the running one stays.
    const ac = new AbortController();
    const onSigint = () => ac.abort();
    process.once("SIGINT", onSigint);
    const deployOpts = {
      ...ctx.deployOptions(),
      ...(nodeRuntime ? { nodeRuntime: nodeRuntime as "pinned" | "system" } : {}),
      signal: ac.signal,
      onProgress: narrate,
    };
    if (sub === "deploy") {
      let r;
      try {
        r = await deployHive(conn, { ...deployOpts, daemonArgs: [...(deployOpts.daemonArgs ?? []), ...idleArgs] });
      } catch (e) {
        if (ac.signal.aborted) {
          bar.line(`[${name}] deploy cancelled; the previous version (if any) keeps running`);
          return 130;
        }
        throw e;
      } finally {
        process.removeListener("SIGINT", onSigint);
        bar.done();
      }
      await ctx.registry.upsertNode({ alias: name, host: conn.spec.hostname, transport: "ssh" });
      await ctx.registry.setNodeStatus(name, "online", { agent_version: r.version });
      const { token: _secret, ...shown } = r;
      print(v.json, shown, () =>
        r.changed
          ? `deployed hive-agent ${r.version} to ${name} in ${(r.durationMs / 1000).toFixed(1)} s (backends: ${r.backends.join(", ")})\n`
          : `${name} already runs hive-agent ${r.version}; nothing to do\n`,
      );
    } else if (sub === "build-native") {
      const r = await deployHive(conn, deployOpts);
      process.removeListener("SIGINT", onSigint);
      process.stderr.write(`[${name}] building llama.cpp for the node's CPU (this takes minutes)\n`);
      const node = (await conn.exec(`sed -n 's/^node=//p' ${shQuote(r.agentDir)}/.complete`)).stdout.trim() || "node";
      const cmd = `cd ${shQuote(r.agentDir)} && ${shQuote(node)} hive-agent.js build-native --home ${shQuote(r.hiveHome)}`;
      const out = await conn.execChecked(cmd, "the native build", { timeoutMs: 45 * 60_000 });
      print(
        v.json,
        JSON.parse(out.stdout.trim().split("\n").pop()!),
        () => `built llama.cpp for ${name}'s CPU; new CPU workers use it\n`,
      );
    } else if (sub === "status") {
      const s = await hiveStatus(conn);
      print(
        v.json,
        s,
        () =>
          `${name}: ${s.running ? `running hive-agent ${s.version} (pid ${s.pid}, ${s.healthy ? "healthy" : "not answering"})` : "hive not running"}; installed: ${s.installedVersions.join(", ") || "none"}\n`,
      );
    } else {
      const r = await uninstallHive(conn, { purgeModels: Boolean(v["purge-models"]), onProgress: narrate });
      await ctx.registry.removeNode(name).catch(() => false);
      print(v.json, r, () =>
        r.removed ? `removed the hive-agent from ${name}\n` : `nothing was installed on ${name}\n`,
      );
    }
    return 0;
  } finally {
    await ctx.close();
  }
}

type GpuRow = Pick<DeviceInfo, "backend" | "index" | "name" | "vram_total_bytes" | "vram_free_bytes"> & {
  workers: string[];
};

/** A node's GPUs as `nodes list` shows them: free is what a new worker can have, with the workers on each. */
function gpuRows(devices: DeviceInfo[]): GpuRow[] {
  return devices.map((d) => ({
    backend: d.backend,
    index: d.index,
    name: d.name,
    vram_total_bytes: d.vram_total_bytes,
    vram_free_bytes: d.vram_free_bytes,
    workers: d.workers ?? [],
  }));
}

function formatGpu(g: GpuRow): string {
  const gib = (b: number) => (b / 2 ** 30).toFixed(1);
  return `${g.backend}:${g.index} ${g.name} ${gib(g.vram_free_bytes)}/${gib(g.vram_total_bytes)} GiB free${g.workers.length ? ` [${g.workers.join(" ")}]` : ""}`;
}

interface NodeRow {
  alias: string;
  host: string;
  reachable: boolean;
  status: string;
  agent_version: string | null;
  backends: string[];
  gpus: GpuRow[];
  /** The node's own CPU build of llama.cpp (null while the hive is not running). */
  native_build: NativeBuildStatus | null;
  /** Which CPU binary the node measured fastest (null while the hive is not running, or from an older hive). */
  cpu_calibration: CpuCalibration | null;
}

async function listNodes(ctx: Context, json: boolean | undefined): Promise<number> {
  const rows: NodeRow[] = [];
  const local = await ctx.local.status();
  const localCaps = local.running ? await (await ctx.local.connectExisting())!.capabilities() : undefined;
  rows.push({
    alias: LOCALHOST,
    host: "127.0.0.1",
    reachable: local.running,
    status: local.running ? "running" : "not started",
    agent_version: local.version ?? null,
    backends: localCaps?.backends ?? [],
    gpus: gpuRows(localCaps?.devices ?? []),
    native_build: localCaps?.native_build ?? null,
    cpu_calibration: localCaps?.cpu_calibration ?? null,
  });
  const { hiveStatus } = require("./nodes/deploy") as typeof import("./nodes/deploy");
  const specs = ctx.listSshNodes();
  // Nodes are probed in parallel; each answers for itself, a dead one does not hold the others.
  rows.push(
    ...(await Promise.all(
      specs.map(async (spec): Promise<NodeRow> => {
        const row: NodeRow = {
          alias: spec.alias,
          host: spec.hostname,
          reachable: false,
          status: "unreachable",
          agent_version: null,
          backends: [],
          gpus: [],
          native_build: null,
          cpu_calibration: null,
        };
        try {
          const s = await hiveStatus(ctx.ssh().pool.get(spec.alias));
          row.reachable = true;
          row.status = s.running
            ? s.healthy
              ? "running"
              : "not answering"
            : s.installedVersions.length
              ? "stopped"
              : "not deployed";
          row.agent_version = s.version ?? s.installedVersions.at(-1) ?? null;
          if (s.running && s.healthy) {
            const caps = await (await ctx.nodes.connect(spec.alias, () => {})).hive.capabilities();
            row.backends = caps.backends;
            row.gpus = gpuRows(caps.devices);
            row.native_build = caps.native_build;
            row.cpu_calibration = caps.cpu_calibration ?? null;
          }
        } catch (e) {
          row.status = `unreachable: ${(e as Error).message}`;
        }
        return row;
      }),
    )),
  );
  print(json, { nodes: rows }, () =>
    formatTable([
      ["NODE", "HOST", "STATUS", "AGENT", "BACKENDS", "GPUS", "CPU BUILD", "CPU BINARY"],
      ...rows.map((r) => [
        r.alias,
        r.host,
        r.status,
        r.agent_version ?? "-",
        r.backends.join(",") || "-",
        r.gpus.map(formatGpu).join("; ") || "-",
        r.native_build?.state ?? "-",
        calibrationSummary(r.cpu_calibration ?? undefined),
      ]),
    ]),
  );
  return 0;
}

async function logs(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, {
    follow: { type: "boolean", short: "f" },
    lines: { type: "string", default: "100" },
  });
  if (v.help) return help("logs");
  const lines = num(v.lines, "lines", { integer: true, min: 1 });
  if (v.node === LOCALHOST) {
    const { local } = createLocalHive(localSetup());
    const { existsSync, readFileSync } = await import("node:fs");
    if (!existsSync(local.logFile))
      throw new RbeeError(
        "NODE_UNREACHABLE",
        `no local hive log yet (${local.logFile}); start it with "rbee hive start"`,
      );
    process.stdout.write(
      readFileSync(local.logFile, "utf8")
        .split("\n")
        .slice(-(lines! + 1))
        .join("\n"),
    );
    if (v.follow) {
      const { spawn } = await import("node:child_process");
      const tail = spawn("tail", ["-n", "0", "-F", local.logFile], { stdio: ["ignore", "inherit", "inherit"] });
      await new Promise((resolve) => process.once("SIGINT", () => resolve(tail.kill())));
    }
    return 0;
  }
  const ctx = await open(v, false);
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once("SIGINT", onSigint);
  try {
    const { hiveLogs } = require("./nodes/deploy") as typeof import("./nodes/deploy");
    for await (const line of hiveLogs(ctx.ssh().pool.get(v.node!), {
      follow: Boolean(v.follow),
      lines,
      signal: abort.signal,
    }))
      process.stdout.write(line.endsWith("\n") ? line : line + "\n");
    return 0;
  } finally {
    process.off("SIGINT", onSigint);
    await ctx.close();
  }
}

async function connectHive(ctx: Context, node: string) {
  const handle = await ctx.nodes.connect(node, () => {});
  return handle.hive;
}

async function workers(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, { id: { type: "string" } });
  const sub = positionals[0];
  if (v.help || !["list", "health", "stop", "shutdown"].includes(sub)) return help("workers", !v.help);
  const ctx = await open(v, false);
  try {
    const hive = await connectHive(ctx, v.node!);
    if (sub === "health") return await workersHealth(hive, v.json);
    if (sub === "list") {
      const list = await hive.workers();
      await ctx.registry.replaceNodeState(v.node!, list, await hive.models());
      const safe = list.map(({ api_key: _secret, ...w }) => w);
      print(
        v.json,
        { workers: safe },
        () =>
          formatTable([
            ["ID", "MODEL", "STATE", "ON", "MEMORY", "SLOTS", "KEEP-ALIVE", "TOK/S"],
            ...safe.map((w) => [
              w.id,
              w.model_ref,
              w.state,
              w.backend === "cpu" ? "cpu" : `${w.backend}:${w.devices.join("+")}`,
              `${(w.memory_bytes / 2 ** 20).toFixed(0)} MiB`,
              `${w.slots_busy}/${w.slots_total}`,
              w.keep_alive_s ? `${w.keep_alive_s} s` : "never",
              w.last_tokens_per_second?.toFixed(1) ?? "-",
            ]),
          ]) || "no workers\n",
      );
      return 0;
    }
    const id = positionals[1] ?? v.id;
    if (!id) throw new UsageError(`workers ${sub} needs a worker ID (see rbee workers list)`);
    await hive.shutdown(id);
    await ctx.registry.removeWorker(id);
    process.stderr.write(`worker ${id} stopped\n`);
    return 0;
  } finally {
    await ctx.close();
  }
}

/** Asks every worker of a node directly (not the hive's cached view); 1 when one does not answer. */
async function workersHealth(
  hive: Awaited<ReturnType<typeof connectHive>>,
  json: boolean | undefined,
): Promise<number> {
  const list = await hive.workers();
  const rows = await Promise.all(
    list.map(async (w) => {
      const t0 = Date.now();
      try {
        const h = await hive.workerClient(w).health();
        return {
          id: w.id,
          model_ref: w.model_ref,
          answered: true,
          state: h.state,
          slots_busy: h.slots_busy,
          slots_total: w.slots_total,
          latency_ms: Date.now() - t0,
          error: null,
        };
      } catch (e) {
        return {
          id: w.id,
          model_ref: w.model_ref,
          answered: false,
          state: w.state,
          slots_busy: w.slots_busy,
          slots_total: w.slots_total,
          latency_ms: Date.now() - t0,
          error: (e as Error).message,
        };
      }
    }),
  );
  print(
    json,
    { workers: rows },
    () =>
      formatTable([
        ["ID", "MODEL", "HEALTH", "STATE", "SLOTS", "ANSWERED IN"],
        ...rows.map((r) => [
          r.id,
          r.model_ref,
          r.answered ? "ok" : `no answer: ${r.error}`,
          r.state,
          `${r.slots_busy}/${r.slots_total}`,
          `${r.latency_ms} ms`,
        ]),
      ]) || "no workers\n",
  );
  return rows.every((r) => r.answered) ? 0 : 1;
}

async function models(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, {});
  const sub = positionals[0];
  if (v.help || (sub !== "list" && sub !== "download")) return help("models", !v.help);
  const ctx = await open(v, sub === "download");
  try {
    if (sub === "list") {
      const list = await (await connectHive(ctx, v.node!)).models();
      print(
        v.json,
        { models: list },
        () =>
          formatTable([
            ["MODEL", "SIZE", "PATH"],
            ...list.map((m) => [m.model_ref, `${(m.size_bytes / 2 ** 20).toFixed(1)} MiB`, m.local_path]),
          ]) || "no models\n",
      );
      return 0;
    }
    const ref = positionals[1];
    if (!ref) throw new UsageError("models download needs a model ref, e.g. hf:owner/repo/file.gguf");
    const narrator = new Narrator(process.stderr, Boolean(v.json));
    const done = await ctx.keeper.downloadModel(v.node!, ref, (e) => narrator.event(e));
    narrator.done();
    print(v.json, done, () => `${ref} → ${done.local_path}\n`);
    return 0;
  } finally {
    await ctx.close();
  }
}

async function hiveCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, { "idle-timeout": { type: "string" } });
  const sub = positionals[0];
  if (v.help || !["start", "stop", "status", "build-native"].includes(sub)) return help("hive", !v.help);
  const { local } = createLocalHive(localSetup(idleTimeoutDaemonArgs(seconds(v["idle-timeout"], "idle-timeout"))));
  try {
    if (sub === "start") {
      const { started } = await local.ensure();
      const s = await local.status();
      print(
        v.json,
        { ...s, started },
        () =>
          `local hive ${started ? "started" : "already running"} (pid ${s.pid}, listening on ${s.address}, log ${s.logFile})\n`,
      );
    } else if (sub === "build-native") {
      const { spawnSync } = await import("node:child_process");
      const r = spawnSync(process.execPath, [defaultAgentScript(), "build-native", "--home", local.home], {
        stdio: ["ignore", "pipe", "inherit"],
        encoding: "utf8",
      });
      if (r.status !== 0) return 1;
      print(
        v.json,
        JSON.parse(r.stdout.trim().split("\n").pop()!),
        () => "built llama.cpp for this CPU; new CPU workers use it\n",
      );
    } else if (sub === "stop") {
      const stopped = await local.stop();
      print(v.json, { stopped }, () => (stopped ? "local hive stopped\n" : "no local hive was running\n"));
    } else {
      const s = await local.status();
      print(v.json, s, () =>
        s.running
          ? `running: pid ${s.pid}, listening on ${s.address}, version ${s.version}, home ${s.home}\n`
          : `not running (home ${s.home})\n`,
      );
    }
    return 0;
  } finally {
    await local.close();
  }
}

/** `linux-x64` → the platform the runtime set is chosen for. */
function parsePlatform(spec: string | undefined, gpus: string): import("./nodes/runtime-packages").NodePlatform {
  const key = spec ?? `${process.platform}-${process.arch}`;
  const m = /^(linux|darwin|win32)-(x64|arm64)$/.exec(key);
  if (!m)
    throw new UsageError(
      `--platform is one of linux-x64, linux-arm64, darwin-x64, darwin-arm64, win32-x64; got "${key}"`,
    );
  const kinds = gpus
    .split(",")
    .map((g) => g.trim())
    .filter(Boolean);
  for (const g of kinds)
    if (!["cpu", "cuda", "vulkan", "metal"].includes(g))
      throw new UsageError(`--gpu takes cpu, cuda, vulkan or metal; got "${g}"`);
  const machine = m[2] === "x64" ? "x86_64" : m[1] === "darwin" ? "arm64" : "aarch64";
  return { os: m[1], machine, musl: false, gpus: kinds.filter((g) => g !== "cpu") as ("cuda" | "vulkan" | "metal")[] };
}

async function runtimeCommand(argv: string[]): Promise<number> {
  const { values: v, positionals } = parse(argv, {
    platform: { type: "string" },
    gpu: { type: "string", default: "cpu" },
    out: { type: "string" },
    "without-node": { type: "boolean" },
  });
  const sub = positionals[0];
  if (v.help || !["fetch", "import"].includes(sub)) return help("runtime", !v.help);
  const { RuntimeCache, defaultRuntimeCacheDir } =
    require("./nodes/runtime-cache") as typeof import("./nodes/runtime-cache");
  const { loadRuntimePins, runtimeSetFor } =
    require("./nodes/runtime-packages") as typeof import("./nodes/runtime-packages");
  const pins = loadRuntimePins();
  const cache = new RuntimeCache(defaultRuntimeCacheDir());
  if (sub === "fetch") {
    if (!v.out) throw new UsageError("runtime fetch needs --out DIR (the folder to carry to the air-gapped keeper)");
    const platform = parsePlatform(v.platform, v.gpu!);
    const set = runtimeSetFor(platform, pins, { withNode: !v["without-node"] });
    const all = [...(set.node ? [set.node] : []), ...set.packages];
    const bar = new Narrator(process.stderr, Boolean(v.json));
    const r = await cache.exportTo(all, v.out, {
      onProgress: (p) => bar.progress("fetch", p.total ? p.done / p.total : 1, `${p.done} / ${p.total} packages`),
    });
    bar.done();
    print(
      v.json,
      {
        dir: path.resolve(v.out),
        files: r.files.length,
        bytes: r.bytes,
        prebuilts: set.prebuilts,
        node: set.node?.version ?? null,
      },
      () =>
        `wrote ${r.files.length} verified tarballs (${(r.bytes / 1e6).toFixed(0)} MB: ${set.node ? `Node.js ${set.node.version}, ` : ""}node-llama-cpp ${pins.llamaVersion}, ${set.prebuilts.join(", ")}) to ${path.resolve(v.out!)}\n` +
        `carry that folder to the keeper without registry access and run: rbee runtime import ${path.resolve(v.out!)}\n`,
    );
    return 0;
  }
  const dir = positionals[1];
  if (!dir) throw new UsageError("runtime import needs the folder written by rbee runtime fetch");
  const r = await cache.importFrom(dir, pins);
  print(
    v.json,
    { ...r, cache: cache.dir },
    () =>
      `imported ${r.imported.length} tarballs into ${cache.dir}` +
      (r.skipped.length ? `; skipped ${r.skipped.length} this rbee does not pin` : "") +
      (r.refused.length
        ? `; REFUSED ${r.refused.length} whose bytes differ from the pins: ${r.refused.join(", ")}`
        : "") +
      "\n",
  );
  return r.refused.length || !r.imported.length ? 1 : 0;
}

function help(topic: string, asError = false): number {
  (asError ? process.stderr : process.stdout).write(HELP[topic] ?? HELP.main);
  return asError ? 2 : 0;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "infer":
        return await infer(rest);
      case "nodes":
        return await nodes(rest);
      case "workers":
        return await workers(rest);
      case "models":
        return await models(rest);
      case "hive":
        return await hiveCommand(rest);
      case "logs":
        return await logs(rest);
      case "runtime":
        return await runtimeCommand(rest);
      case "serve": {
        const { values: v } = parse(rest, {
          host: { type: "string" },
          port: { type: "string" },
          config: { type: "string" },
          "show-token": { type: "boolean" },
        });
        if (v.help) return help("serve");
        return await serve(
          v,
          () => open(v),
          (m) => new UsageError(m),
        );
      }
      case "--version":
      case "version":
        process.stdout.write(`${AGENT_VERSION}\n`);
        return 0;
      case undefined:
      case "help":
      case "--help":
      case "-h":
        return help("main");
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`rbee: ${e.message}\n\n${HELP[command] ?? HELP.main}`);
      return 2;
    }
    if (e instanceof StreamInterruptedError) {
      process.stderr.write(`rbee: ${e.message}\n`);
      return 1;
    }
    const code = errorCode(e) ? ` [${errorCode(e)}]` : "";
    process.stderr.write(`rbee: ${(e as Error).message}${code}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
