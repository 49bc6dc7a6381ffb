// The hive daemon: one per node, bound to loopback only. It owns the node's model catalog and
// downloads, spawns and supervises workers, and answers the keeper over HTTP + SSE (docs/protocol.md).

import { execFile } from "node:child_process";
import { chmodSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import {
  AGENT_VERSION, API_VERSION, HIVE_PATHS, RbeeError, parseDownloadRequest, parseLoadFailedCallback, parseReadyCallback, parseSpawnRequest,
  type Backend, type CapabilitiesResponse, type DownloadProgressEvent, type HealthResponse, type NodeHardware, type SpawnResponse,
} from "../protocol";
import { Catalog } from "../catalog/catalog";
import { DEFAULT_DOWNLOAD_OPTIONS, Downloads, type DownloadOptions } from "../catalog/download";
import { isLoopback } from "../catalog/model-ref";
import { checkBearer, endSse, matchPath, readJson, sendError, sendJson, startSse, writeSse } from "../util/http";
import { createLogger, registerSecret, type Logger } from "../util/log";
import { availableRam, bestBackend } from "./capabilities";
import { checkBackend, checkRam, estimateBytes, readModelShape } from "./preflight";
import { deviceRooms, placeWorker } from "./placement";
import { Supervisor } from "./supervisor";
import { NativeBuilder, type NativeBuildMode } from "./native-builder";

export interface DaemonOptions {
  bind: string;
  port: number;
  tokenFile: string;
  home: string;
  /** Default idle time before a worker is stopped (a spawn's keep_alive overrides it); 0 = never. */
  idleTimeoutMs: number;
  /** The most VRAM rbee's workers may take on each GPU, and RAM on the CPU altogether (nodes shared with others). */
  vramLimitBytes?: number;
  ramLimitBytes?: number;
  healthIntervalMs: number;
  gracefulShutdownMs: number;
  loadTimeoutMs: number;
  download: Partial<DownloadOptions>;
  /** Whether to build llama.cpp for this CPU in the background where it pays off (native-builder.ts). */
  nativeBuild?: NativeBuildMode;
}

export const DEFAULT_DAEMON_OPTIONS = {
  idleTimeoutMs: 5 * 60_000,
  healthIntervalMs: 30_000,
  gracefulShutdownMs: 30_000,
  loadTimeoutMs: 5 * 60_000,
};

/** The file a running hive describes itself in, so a keeper (or deploy over SSH) finds its port. */
export const HIVE_INFO_FILE = "hive.json";
export interface HiveInfoFile {
  pid: number;
  port: number;
  version: string;
  api_version: string;
}

const CAPABILITIES_TTL_MS = 10_000;

/** Where `hive-agent build-native` puts this node's own llama.cpp build. */
export function nativeBuildDir(home: string): string {
  return path.join(home, "native");
}

/** Default decode threads: leave one core to the event loop that streams the tokens. */
export function defaultThreads(cores: number): number {
  return Math.max(1, cores - 1);
}

export class HiveDaemon {
  private readonly log = createLogger("hive");
  private readonly server: Server;
  private readonly catalog: Catalog;
  private readonly downloads: Downloads;
  private readonly supervisor: Supervisor;
  private readonly token: string;
  private port = 0;
  /** The last hardware detection; `at` is when it started (memory in use before then is in its figures). */
  private capabilities?: { at: number; value: Promise<NodeHardware> };
  private readonly nativeBuilder: NativeBuilder;
  private stopping = false;

  constructor(private readonly opts: DaemonOptions) {
    if (!isLoopback(opts.bind)) throw new Error(`refusing to bind ${opts.bind}: the hive listens on loopback only (127.0.0.1); remote keepers reach it through SSH`);
    this.token = readToken(opts.tokenFile);
    registerSecret(this.token);
    this.catalog = new Catalog(opts.home);
    this.downloads = new Downloads(
      this.catalog,
      { ...DEFAULT_DOWNLOAD_OPTIONS, hfEndpoint: process.env.HF_ENDPOINT ?? DEFAULT_DOWNLOAD_OPTIONS.hfEndpoint, hfToken: process.env.HF_TOKEN, ...opts.download },
      createLogger("download"),
    );
    if (process.env.HF_TOKEN) registerSecret(process.env.HF_TOKEN);
    this.supervisor = new Supervisor(
      {
        agentScript: process.argv[1],
        hiveUrl: () => `http://127.0.0.1:${this.port}`,
        hiveToken: this.token,
        healthIntervalMs: opts.healthIntervalMs,
        maxHealthFailures: 3,
        gracefulShutdownMs: opts.gracefulShutdownMs,
        loadTimeoutMs: opts.loadTimeoutMs,
      },
      createLogger("supervisor"),
    );
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((e) => {
        if (!(e instanceof RbeeError) || e.code === "INTERNAL") this.log.error(`${req.method} ${req.url}: ${(e as Error).stack ?? e}`);
        sendError(res, e);
      });
    });
    this.server.requestTimeout = 0;
    this.nativeBuilder = new NativeBuilder(nativeBuildDir(opts.home), opts.nativeBuild ?? "auto", createLogger("native-build"));
  }

  async start(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.opts.port, this.opts.bind, () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
    this.supervisor.start();
    // Detection takes a second or two (a child process loads the GPU libraries): start it now so
    // the first spawn does not wait for it.
    // The native build (where it pays off) is decided once the hardware is known.
    this.getCapabilities().catch((e) => this.log.warn((e as Error).message));
    const info: HiveInfoFile = { pid: process.pid, port: this.port, version: AGENT_VERSION, api_version: API_VERSION };
    const file = path.join(this.opts.home, HIVE_INFO_FILE);
    writeFileSync(file, JSON.stringify(info), { mode: 0o600 });
    this.log.info(`rbee hive ${AGENT_VERSION} listening on ${this.opts.bind}:${this.port} (home ${this.opts.home})`);
    return this.port;
  }

  /** Graceful shutdown cascade: stop accepting, ask workers to stop, kill the stragglers. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.log.info("stopping: shutting down workers");
    this.server.close();
    await Promise.all([this.supervisor.shutdownAll(), this.nativeBuilder.stop()]);
    this.server.closeAllConnections();
    rmSync(path.join(this.opts.home, HIVE_INFO_FILE), { force: true });
    this.log.info("stopped");
  }

  /** The node's hardware as last detected (at most CAPABILITIES_TTL_MS old) and when that detection began. */
  private async hardware(): Promise<{ at: number; hardware: NodeHardware }> {
    if (!this.capabilities || Date.now() - this.capabilities.at > CAPABILITIES_TTL_MS) {
      const value = detectInChild(this.log);
      this.capabilities = { at: Date.now(), value };
      value.catch(() => (this.capabilities = undefined));
    }
    const { at, value } = this.capabilities;
    const hardware = await value;
    this.nativeBuilder.start(hardware, defaultThreads(hardware.cpu_cores));
    return { at, hardware };
  }

  /** What a new worker can have: each device's free VRAM less rbee's own claims, with its workers; RAM likewise. */
  private capabilitiesFrom(at: number, hardware: NodeHardware): CapabilitiesResponse {
    const devices = hardware.backends.flatMap((b) =>
      this.rooms(at, hardware, b).map((r) => ({ ...r.device, vram_free_bytes: r.free, vram_reserved_bytes: r.reserved, workers: r.workers })),
    );
    const ram = this.supervisor.ramReserved();
    return {
      ...hardware,
      devices,
      ram_free_bytes: Math.max(0, Math.min(availableRam() - ram.loading, (this.opts.ramLimitBytes ?? Infinity) - ram.all)),
      native_build: this.nativeBuilder.status(),
      idle_timeout_s: Math.round(this.opts.idleTimeoutMs / 1000),
    };
  }

  private rooms(at: number, hardware: NodeHardware, backend: Backend) {
    return deviceRooms(hardware.devices, backend, this.supervisor.reservations(at), this.opts.vramLimitBytes);
  }

  private async getCapabilities(): Promise<CapabilitiesResponse> {
    const { at, hardware } = await this.hardware();
    return this.capabilitiesFrom(at, hardware);
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    const url = (req.url ?? "/").split("?")[0];
    const method = req.method ?? "GET";
    checkBearer(req, [this.token]);
    if (this.stopping && method !== "GET") throw new RbeeError("SHUTTING_DOWN", "the hive is shutting down");

    if (method === "GET" && url === HIVE_PATHS.health) {
      const body: HealthResponse = { status: "alive", version: AGENT_VERSION, api_version: API_VERSION };
      return sendJson(res, 200, body);
    }
    if (method === "GET" && url === HIVE_PATHS.capabilities) return sendJson(res, 200, await this.getCapabilities());
    if (method === "GET" && url === HIVE_PATHS.workers) {
      await this.supervisor.refresh();
      return sendJson(res, 200, { workers: this.supervisor.list() });
    }
    if (method === "POST" && url === HIVE_PATHS.spawn) return sendJson(res, 202, await this.spawn(await readJson(req)));
    if (method === "POST" && url === HIVE_PATHS.ready) {
      this.supervisor.onReady(parseReadyCallback(await readJson(req)));
      return sendJson(res, 200, { ok: true });
    }
    if (method === "POST" && url === HIVE_PATHS.loadFailed) {
      this.supervisor.onLoadFailed(parseLoadFailedCallback(await readJson(req)));
      return sendJson(res, 200, { ok: true });
    }
    const shutdown = method === "POST" && matchPath(/^\/v1\/workers\/([^/]+)\/shutdown$/, url);
    if (shutdown) {
      await this.supervisor.shutdown(shutdown[0]);
      return sendJson(res, 200, { worker_id: shutdown[0], state: "stopped" });
    }
    const one = method === "GET" && matchPath(/^\/v1\/workers\/([^/]+)$/, url);
    if (one) return sendJson(res, 200, this.supervisor.get(one[0]));
    if (method === "GET" && url === HIVE_PATHS.models) return sendJson(res, 200, { models: this.catalog.list() });
    if (method === "POST" && url === HIVE_PATHS.download) {
      const r = parseDownloadRequest(await readJson(req));
      return sendJson(res, 202, { download_id: this.downloads.start(r.model_ref, r.sha256) });
    }
    const progress = method === "GET" && matchPath(/^\/v1\/models\/download\/([^/]+)\/progress$/, url);
    if (progress) return this.streamDownload(res, progress[0]);
    const cancel = method === "DELETE" && matchPath(/^\/v1\/models\/download\/([^/]+)$/, url);
    if (cancel) return sendJson(res, 200, { download_id: cancel[0], cancelled: this.downloads.cancel(cancel[0]) });
    throw new RbeeError("NOT_FOUND", `no endpoint ${method} ${url} on this hive`);
  }

  private async spawn(body: unknown): Promise<SpawnResponse> {
    const r = parseSpawnRequest(body);
    const modelPath = this.catalog.resolve(r.model_ref);
    const { at, hardware } = await this.hardware();
    const backend = r.backend ?? bestBackend(hardware);
    checkBackend(hardware, backend);
    const shape = await readModelShape(modelPath).catch((e) => {
      throw new RbeeError("LOADING_FAILED", `${r.model_ref} is not a readable GGUF model: ${(e as Error).message}`, { model_ref: r.model_ref });
    });
    const slots = r.slots ?? (backend === "cpu" ? 2 : 4);
    const contextSize = r.context_size ?? Math.min(shape.trainContext, 4096);
    const needed = estimateBytes(statSync(modelPath).size, shape, contextSize, slots);
    // From here until the supervisor has registered the worker nothing awaits: the placement and its
    // reservation are one step, so two spawns at once can never both take the same free memory.
    const caps = this.capabilitiesFrom(at, hardware);
    let placement;
    if (backend === "cpu") {
      checkRam(caps.ram_free_bytes, modelPath, needed);
      placement = { devices: [], pins: [], bytes: [needed] };
    } else {
      const place = placeWorker({ backend, device: r.device, devices: r.devices, allowSplit: r.allow_split }, this.rooms(at, hardware, backend), needed);
      const pins = place.devices.map((i) => hardware.devices.find((d) => d.backend === backend && d.index === i)?.pin_id);
      placement = { ...place, pins };
    }
    const w = await this.supervisor.spawn({
      modelRef: r.model_ref,
      modelPath,
      backend,
      device: placement.devices[0] ?? 0,
      placement,
      keepAliveMs: r.keep_alive !== undefined ? r.keep_alive * 1000 : this.opts.idleTimeoutMs,
      contextSize,
      slots,
      threads: r.threads ?? defaultThreads(caps.cpu_cores),
      batchSize: r.batch_size,
      nativeDir: nativeBuildDir(this.opts.home),
    });
    return { worker_id: w.id, url: w.url, state: "loading", api_key: w.api_key };
  }

  private streamDownload(res: ServerResponse, id: string) {
    if (!this.downloads.has(id)) throw new RbeeError("NOT_FOUND", `no download with id ${id} on this hive`);
    startSse(res);
    const unfollow = this.downloads.follow(id, (e) => {
      writeSse(res, e);
      if (e.stage === "complete" || e.stage === "error") endSse(res);
    });
    res.on("close", unfollow);
  }
}

function readToken(file: string): string {
  let token: string;
  try {
    token = readFileSync(file, "utf8").trim();
  } catch (e) {
    throw new Error(`cannot read the token file ${file}: ${(e as Error).message}`);
  }
  if (token.length < 16) throw new Error(`the token in ${file} is too short (at least 16 characters)`);
  if (process.platform !== "win32" && statSync(file).mode & 0o077) chmodSync(file, 0o600);
  return token;
}

/** Runs `hive-agent detect` in a child process and parses its JSON; what the GPU libraries said goes to the log. */
function detectInChild(log: Logger): Promise<NodeHardware> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [process.argv[1], "detect", "--notes"], { timeout: 60_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      for (const line of stderr.split("\n").filter(Boolean)) log.info(`detection: ${line}`);
      if (err) return reject(new RbeeError("INTERNAL", `capability detection failed: ${err.message}`));
      try {
        resolve(JSON.parse(stdout) as NodeHardware);
      } catch (e) {
        reject(new RbeeError("INTERNAL", `capability detection printed bad JSON: ${(e as Error).message}`));
      }
    });
  });
}
