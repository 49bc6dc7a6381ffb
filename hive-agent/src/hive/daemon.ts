// The hive daemon: one per node, on a Unix socket in its 0700 home (loopback TCP only where there are
// no Unix sockets). It owns the node's model catalog and downloads, spawns and supervises workers,
// and answers the keeper over HTTP + SSE (docs/protocol.md).

import { execFile } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import path from "node:path";
import {
  AGENT_VERSION,
  API_VERSION,
  HIVE_PATHS,
  HIVE_SOCKET_NAME,
  RbeeError,
  WORKER_ID_HEADER,
  WORKER_SOCKET_DIR,
  socketPathOf,
  unixAddress,
  parseDownloadRequest,
  parseLoadFailedCallback,
  parseReadyCallback,
  parseSpawnRequest,
  type Backend,
  type CapabilitiesResponse,
  type DownloadCancelResponse,
  type HealthResponse,
  type NodeHardware,
  type SpawnResponse,
  type DecodeBatching,
} from "../protocol";
import { Catalog } from "../catalog/catalog";
import { DEFAULT_DOWNLOAD_OPTIONS, Downloads, type DownloadOptions } from "../catalog/download";
import {
  SERVER_OPTIONS,
  SERVER_LIMITS,
  answerHello,
  checkBearer,
  endSse,
  limitServer,
  listenOn,
  matchPath,
  readJson,
  sendError,
  sendJson,
  startSse,
  writeSse,
} from "../util/http";
import { createLogger, registerSecret, type Logger } from "../util/log";
import { availableRam, bestBackend } from "./capabilities";
import { checkBackend, checkRam, estimateBytes, readModelShape } from "./preflight";
import { deviceRooms, placeWorker } from "./placement";
import { DEFAULT_STALL_LIMIT_MS, Supervisor } from "./supervisor";
import { NativeBuilder, type NativeBuildMode } from "./native-builder";
import { Calibrator, DEFAULT_CALIBRATION, type CalibrationMode } from "./calibrator";

export interface DaemonOptions {
  /** `unix:<path>` (default: hive.sock in the home) or, without Unix sockets, `http://127.0.0.1:<port>`. */
  listen?: string;
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
  /** A busy worker without a new token for this long is unhealthy. */
  stallLimitMs?: number;
  /** Slow-client limits of the hive's server (util/http.ts SERVER_LIMITS). */
  limits?: Partial<typeof SERVER_LIMITS>;
  download: Partial<DownloadOptions>;
  /** Whether to build llama.cpp for this CPU in the background where it pays off (native-builder.ts). */
  nativeBuild?: NativeBuildMode;
  /** Whether to measure which CPU binary is fastest here (calibrator.ts), and how. */
  calibrate?: CalibrationMode;
  calibrateVariants?: string[];
  calibrateRounds?: number;
  calibrateTokens?: number;
  /** How CPU workers' concurrent streams share decodes; absent: what calibration decided (else together). */
  decodeBatching?: DecodeBatching;
  /** Decode threads a CPU worker gets when its spawn does not say (default: defaultThreads of the usable cores). */
  workerThreads?: number;
}

export const DEFAULT_DAEMON_OPTIONS = {
  idleTimeoutMs: 5 * 60_000,
  healthIntervalMs: 30_000,
  gracefulShutdownMs: 30_000,
  loadTimeoutMs: 5 * 60_000,
  stallLimitMs: DEFAULT_STALL_LIMIT_MS,
};

/** The file a running hive describes itself in, so a keeper (or deploy over SSH) finds it. */
export const HIVE_INFO_FILE = "hive.json";
export interface HiveInfoFile {
  pid: number;
  /** Where it listens (`unix:<path>`, or `http://127.0.0.1:<port>` without Unix sockets). */
  address: string;
  version: string;
  api_version: string;
}

const CAPABILITIES_TTL_MS = 10_000;

/** Where the hive listens by default: its socket in its home, or loopback TCP on Windows. */
export function defaultHiveAddress(home: string): string {
  return process.platform === "win32" ? "http://127.0.0.1:0" : unixAddress(path.join(home, HIVE_SOCKET_NAME));
}

/** Where `hive-agent build-native` puts this node's own llama.cpp build. */
export function nativeBuildDir(home: string): string {
  return path.join(home, "native");
}

/** Where the private copies of the prebuilt's CPU variants go (worker/cpu-variants.ts). */
export function variantsDir(home: string): string {
  return path.join(home, "cpu-variants");
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
  private address = "";
  /** The last hardware detection; `at` is when it started (memory in use before then is in its figures). */
  private capabilities?: { at: number; value: Promise<NodeHardware> };
  private readonly nativeBuilder: NativeBuilder;
  private readonly calibrator: Calibrator;
  /** The last hardware detection's result, for re-checking calibration when a native build finishes. */
  private lastHardware?: NodeHardware;
  private stopping = false;

  constructor(private readonly opts: DaemonOptions) {
    this.token = readToken(opts.tokenFile);
    registerSecret(this.token);
    this.catalog = new Catalog(opts.home);
    this.downloads = new Downloads(
      this.catalog,
      {
        ...DEFAULT_DOWNLOAD_OPTIONS,
        hfEndpoint: process.env.HF_ENDPOINT ?? DEFAULT_DOWNLOAD_OPTIONS.hfEndpoint,
        hfToken: process.env.HF_TOKEN,
        ...opts.download,
      },
      createLogger("download"),
    );
    if (process.env.HF_TOKEN) registerSecret(process.env.HF_TOKEN);
    this.supervisor = new Supervisor(
      {
        agentScript: process.argv[1],
        hiveUrl: () => this.address,
        workerAddress: (id) =>
          socketPathOf(this.address) !== undefined
            ? unixAddress(path.join(opts.home, WORKER_SOCKET_DIR, `${id}.sock`))
            : "http://127.0.0.1:0",
        healthIntervalMs: opts.healthIntervalMs,
        maxHealthFailures: 3,
        gracefulShutdownMs: opts.gracefulShutdownMs,
        loadTimeoutMs: opts.loadTimeoutMs,
        stallLimitMs: opts.stallLimitMs,
      },
      createLogger("supervisor"),
    );
    this.server = createServer(SERVER_OPTIONS, (req, res) => {
      this.handle(req, res).catch((e) => {
        if (!(e instanceof RbeeError) || e.code === "INTERNAL")
          this.log.error(`${req.method} ${req.url}: ${(e as Error).stack ?? e}`);
        sendError(res, e);
      });
    });
    limitServer(this.server, opts.limits);
    const calibrate = opts.calibrate ?? "auto";
    // A finished native build is a new candidate: calibration measures it against the prebuilt at once.
    this.nativeBuilder = new NativeBuilder(
      nativeBuildDir(opts.home),
      opts.nativeBuild ?? "auto",
      createLogger("native-build"),
      calibrate === "auto",
      () => {
        if (this.lastHardware && !this.stopping)
          this.calibrator.ensure(this.lastHardware, this.workerThreads(this.lastHardware));
      },
    );
    this.calibrator = new Calibrator({
      home: opts.home,
      mode: calibrate,
      agentScript: process.argv[1],
      nativeDir: nativeBuildDir(opts.home),
      variantsDir: variantsDir(opts.home),
      variants: opts.calibrateVariants,
      rounds: opts.calibrateRounds ?? DEFAULT_CALIBRATION.rounds,
      tokens: opts.calibrateTokens ?? DEFAULT_CALIBRATION.tokens,
      // Never measure next to a worker that is generating or loading.
      busy: () => this.supervisor.busyWorker(),
      log: createLogger("calibration"),
    });
  }

  /** Listens; resolves with the address it listens on. */
  async start(): Promise<string> {
    secureHome(this.opts.home);
    mkdirSync(path.join(this.opts.home, WORKER_SOCKET_DIR), { recursive: true, mode: 0o700 });
    this.address = await listenOn(this.server, this.opts.listen ?? defaultHiveAddress(this.opts.home));
    this.supervisor.start();
    // Detection takes a second or two (a child process loads the GPU libraries): start it now so
    // the first spawn does not wait for it.
    // The native build (where it pays off) is decided once the hardware is known.
    this.getCapabilities().catch((e) => this.log.warn((e as Error).message));
    const info: HiveInfoFile = {
      pid: process.pid,
      address: this.address,
      version: AGENT_VERSION,
      api_version: API_VERSION,
    };
    const file = path.join(this.opts.home, HIVE_INFO_FILE);
    writeFileSync(file, JSON.stringify(info), { mode: 0o600 });
    this.log.info(`rbee hive ${AGENT_VERSION} listening on ${this.address} (home ${this.opts.home})`);
    return this.address;
  }

  /** Graceful shutdown cascade: stop accepting, ask workers to stop, kill the stragglers. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.log.info("stopping: shutting down workers");
    this.server.close();
    await Promise.all([this.supervisor.shutdownAll(), this.nativeBuilder.stop(), this.calibrator.stop()]);
    this.server.closeAllConnections();
    rmSync(path.join(this.opts.home, HIVE_INFO_FILE), { force: true });
    const socket = socketPathOf(this.address);
    if (socket) rmSync(socket, { force: true });
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
    this.lastHardware = hardware;
    this.nativeBuilder.start(hardware, this.workerThreads(hardware));
    if (!this.stopping) this.calibrator.ensure(hardware, this.workerThreads(hardware));
    return { at, hardware };
  }

  /** Decode threads of a CPU worker whose spawn does not say (what calibration measures at). */
  private workerThreads(hardware: NodeHardware): number {
    return this.opts.workerThreads ?? defaultThreads(hardware.cpu_cores);
  }

  /** What a new worker can have: each device's free VRAM less rbee's own claims, with its workers; RAM likewise. */
  private capabilitiesFrom(at: number, hardware: NodeHardware): CapabilitiesResponse {
    const devices = hardware.backends.flatMap((b) =>
      this.rooms(at, hardware, b).map((r) => ({
        ...r.device,
        vram_free_bytes: r.free,
        vram_reserved_bytes: r.reserved,
        workers: r.workers,
      })),
    );
    return {
      ...hardware,
      devices,
      ram_free_bytes: this.ramFree(),
      native_build: this.nativeBuilder.status(),
      cpu_calibration: this.calibrator.status(),
      idle_timeout_s: Math.round(this.opts.idleTimeoutMs / 1000),
    };
  }

  /** RAM a new CPU worker can have: what the OS has available less workers still loading, within the node's limit. */
  private ramFree(): number {
    const ram = this.supervisor.ramReserved();
    return Math.max(0, Math.min(availableRam() - ram.loading, (this.opts.ramLimitBytes ?? Infinity) - ram.all));
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
    const callbackKey = (r: IncomingMessage) => {
      const id = r.headers[WORKER_ID_HEADER];
      return typeof id === "string" ? this.supervisor.callbackKey(id) : this.token;
    };
    if (answerHello(req, res, callbackKey)) return;
    // A worker's callbacks carry its own key, which is good for nothing else (the hive token is
    // never given to workers, and a worker can only speak for itself).
    if (method === "POST" && (url === HIVE_PATHS.ready || url === HIVE_PATHS.loadFailed)) {
      const id = req.headers[WORKER_ID_HEADER];
      const key = typeof id === "string" ? this.supervisor.callbackKey(id) : undefined;
      checkBearer(req, key ? [key] : []);
      const body = await readJson(req, 64 * 1024);
      if (url === HIVE_PATHS.ready) {
        const cb = parseReadyCallback(body);
        if (cb.worker_id !== id) throw new RbeeError("INVALID_API_KEY", "a worker can only report for itself");
        this.supervisor.onReady(cb);
      } else {
        const cb = parseLoadFailedCallback(body);
        if (cb.worker_id !== id) throw new RbeeError("INVALID_API_KEY", "a worker can only report for itself");
        this.supervisor.onLoadFailed(cb);
      }
      return sendJson(res, 200, { ok: true });
    }
    checkBearer(req, [this.token]);
    if (this.stopping && method !== "GET") throw new RbeeError("SHUTTING_DOWN", "the hive is shutting down");

    if (method === "GET" && url === HIVE_PATHS.health) {
      const body: HealthResponse = {
        status: "alive",
        version: AGENT_VERSION,
        api_version: API_VERSION,
        pid: process.pid,
      };
      return sendJson(res, 200, body);
    }
    if (method === "GET" && url === HIVE_PATHS.capabilities) return sendJson(res, 200, await this.getCapabilities());
    if (method === "GET" && url === HIVE_PATHS.workers) {
      await this.supervisor.refresh();
      return sendJson(res, 200, { workers: this.supervisor.list() });
    }
    if (method === "POST" && url === HIVE_PATHS.spawn) return sendJson(res, 202, await this.spawn(await readJson(req)));
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
    if (cancel) {
      const reply: DownloadCancelResponse = { download_id: cancel[0], cancelled: this.downloads.cancel(cancel[0]) };
      return sendJson(res, 200, reply);
    }
    throw new RbeeError("NOT_FOUND", `no endpoint ${method} ${url} on this hive`);
  }

  private async spawn(body: unknown): Promise<SpawnResponse> {
    const r = parseSpawnRequest(body);
    const modelPath = this.catalog.resolve(r.model_ref);
    const { at, hardware } = await this.hardware();
    const backend = r.backend ?? bestBackend(hardware);
    checkBackend(hardware, backend);
    const shape = await readModelShape(modelPath).catch((e) => {
      throw new RbeeError("LOADING_FAILED", `${r.model_ref} is not a readable GGUF model: ${(e as Error).message}`, {
        model_ref: r.model_ref,
      });
    });
    const slots = r.slots ?? (backend === "cpu" ? 2 : 4);
    const contextSize = r.context_size ?? Math.min(shape.trainContext, 4096);
    const needed = estimateBytes(statSync(modelPath).size, shape, contextSize, slots);
    // From here until the supervisor has registered the worker nothing awaits: the placement and its
    // reservation are one step, so two spawns at once can never both take the same free memory.
    let placement;
    if (backend === "cpu") {
      checkRam(this.ramFree(), modelPath, needed);
      placement = { devices: [], pins: [], bytes: [needed] };
    } else {
      const place = placeWorker(
        { backend, device: r.device, devices: r.devices, allowSplit: r.allow_split },
        this.rooms(at, hardware, backend),
        needed,
      );
      const pins = place.devices.map(
        (i) => hardware.devices.find((d) => d.backend === backend && d.index === i)?.pin_id,
      );
      placement = { ...place, pins };
    }
    const threads = r.threads ?? this.workerThreads(hardware);
    const w = await this.supervisor.spawn({
      modelRef: r.model_ref,
      modelPath,
      backend,
      device: placement.devices[0] ?? 0,
      placement,
      keepAliveMs: r.keep_alive !== undefined ? r.keep_alive * 1000 : this.opts.idleTimeoutMs,
      contextSize,
      slots,
      threads,
      batchSize: r.batch_size,
      nativeDir: nativeBuildDir(this.opts.home),
      // The binary calibration measured fastest at this thread count (none yet: loadLlama's rule), and
      // whether its streams decode together or one at a time (the measured answer, unless --decode-batching says).
      ...(backend === "cpu"
        ? {
            cpuBinary: this.calibrator.binaryFor(threads),
            decodeBatching: this.opts.decodeBatching ?? this.calibrator.decodeBatchingFor(threads),
            variantsDir: variantsDir(this.opts.home),
          }
        : {}),
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

/**
 * The home holds the sockets, the token and the models: it must be ours and closed to everyone else
 * (mode 0700), or another local user could reach or replace what is in it.
 */
function secureHome(home: string): void {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  if (process.platform === "win32") return;
  const st = statSync(home);
  if (typeof process.getuid === "function" && st.uid !== process.getuid())
    throw new Error(
      `the hive home ${home} belongs to another user (uid ${st.uid}); use a folder of your own (RBEE_HOME)`,
    );
  if (st.mode & 0o077) chmodSync(home, 0o700);
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
    execFile(
      process.execPath,
      [process.argv[1], "detect", "--notes"],
      { timeout: 60_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        for (const line of stderr.split("\n").filter(Boolean)) log.info(`detection: ${line}`);
        if (err) return reject(new RbeeError("INTERNAL", `capability detection failed: ${err.message}`));
        try {
          resolve(JSON.parse(stdout) as NodeHardware);
        } catch (e) {
          reject(new RbeeError("INTERNAL", `capability detection printed bad JSON: ${(e as Error).message}`));
        }
      },
    );
  });
}
