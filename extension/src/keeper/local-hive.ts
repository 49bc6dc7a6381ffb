// The embedded default: `localhost` is always a node. When no local hive answers, the keeper starts
// one itself (detached, so it outlives this CLI run or window and serves the next one warm) and
// stops it again only when asked (`rbee hive stop`, or an ephemeral run).

import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import path from "node:path";
import { RbeeError } from "../../../hive-agent/src/protocol";
import { HiveClient } from "./hive-client";
import { FileLock } from "./registry-lock";
import { isPidAlive } from "../../../hive-agent/src/util/process";
import { loopbackTransport, type Transport } from "./transport";
import { rbeeHome } from "./registry";

export interface LocalHiveOptions {
  /** Folder of the local hive: token, hive.json, log, models. Default ~/.rbee/hive. */
  home?: string;
  /** The hive-agent bundle to run. Default: hive-agent.js next to this bundle. */
  agentScript?: string;
  /** Extra daemon flags (settings such as the idle timeout); RBEE_HIVE_ARGS comes after them and wins. */
  daemonArgs?: string[];
  startTimeoutMs?: number;
}

export interface LocalHiveStatus {
  running: boolean;
  pid?: number;
  port?: number;
  version?: string;
  home: string;
  logFile: string;
}

/** The hive flag for an idle timeout in seconds (0 = never); none when undefined. */
export function idleTimeoutDaemonArgs(seconds: number | undefined): string[] {
  return seconds === undefined ? [] : ["--idle-timeout-ms", String(seconds * 1000)];
}

export function defaultAgentScript(): string {
  return process.env.RBEE_AGENT_SCRIPT ?? path.join(__dirname, "hive-agent.js");
}

export class LocalHive {
  readonly home: string;
  readonly tokenFile: string;
  readonly infoFile: string;
  readonly logFile: string;
  private readonly transport: Transport = loopbackTransport({ connectTimeoutMs: 2000 });

  constructor(private readonly opts: LocalHiveOptions = {}) {
    this.home = opts.home ?? path.join(rbeeHome(), "hive");
    this.tokenFile = path.join(this.home, "token");
    this.infoFile = path.join(this.home, "hive.json");
    this.logFile = path.join(this.home, "hive.log");
  }

  /** The hive's token, created (0600) on first use. */
  token(): string {
    mkdirSync(this.home, { recursive: true, mode: 0o700 });
    if (!existsSync(this.tokenFile)) writeFileSync(this.tokenFile, randomBytes(24).toString("base64url"), { mode: 0o600, flag: "wx" });
    return readFileSync(this.tokenFile, "utf8").trim();
  }

  private readInfo(): { pid: number; port: number; version: string } | undefined {
    try {
      return JSON.parse(readFileSync(this.infoFile, "utf8"));
    } catch {
      return undefined;
    }
  }

  private clientFor(port: number, retries = 1): HiveClient {
    return new HiveClient({ transport: this.transport, baseUrl: `http://127.0.0.1:${port}`, token: this.token(), nodeName: "localhost", retry: { attempts: retries } });
  }

  /** A client to the running hive, or undefined when none answers. */
  async connectExisting(): Promise<HiveClient | undefined> {
    const info = this.readInfo();
    if (!info) return undefined;
    const client = this.clientFor(info.port);
    try {
      await client.health();
      return this.clientFor(info.port, 3);
    } catch (e) {
      // A hive that answers but refuses our token is a real problem, not a missing hive.
      if (e instanceof RbeeError && e.code === "INVALID_API_KEY") throw e;
      return undefined;
    }
  }

  /** Connects to the local hive, starting it first if none answers. `started` tells which happened. */
  async ensure(onStart?: () => void): Promise<{ client: HiveClient; started: boolean }> {
    const existing = await this.connectExisting();
    if (existing) return { client: existing, started: false };
    mkdirSync(this.home, { recursive: true, mode: 0o700 });
    // Two CLI runs (or windows) starting at once must start one hive, not two.
    return new FileLock(path.join(this.home, "start.lock"), { timeoutMs: 30_000, staleMs: 30_000 }).withLock(async () => {
      const again = await this.connectExisting();
      if (again) return { client: again, started: false };
      onStart?.();
      const port = await this.start();
      return { client: this.clientFor(port, 3), started: true };
    });
  }

  private async start(): Promise<number> {
    const agent = this.opts.agentScript ?? defaultAgentScript();
    if (!existsSync(agent)) throw new RbeeError("NODE_UNREACHABLE", `the hive-agent program is missing at ${agent}; reinstall rbee (or run npm run build)`);
    this.token(); // created on first start
    rmSync(this.infoFile, { force: true });
    const log = openSync(this.logFile, "a");
    const child = spawn(
      process.execPath,
      [agent, "daemon", "--bind", "127.0.0.1", "--port", "0", "--token-file", this.tokenFile, "--home", this.home, ...this.daemonArgs()],
      // Detached in its own session: it serves later runs after this process exits.
      { detached: true, stdio: ["ignore", log, log], env: { ...process.env, ELECTRON_RUN_AS_NODE: "1" } },
    );
    closeSync(log);
    child.unref();
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 20_000);
    let exited: number | null = null;
    child.once("exit", (code) => (exited = code ?? -1));
    while (Date.now() < deadline) {
      if (exited !== null) throw new RbeeError("NODE_UNREACHABLE", `the local hive exited with code ${exited} at start; see ${this.logFile}`);
      const info = this.readInfo();
      if (info && info.pid === child.pid) {
        try {
          await this.clientFor(info.port).health();
          return info.port;
        } catch {
          // not answering yet
        }
      }
      await sleep(50);
    }
    throw new RbeeError("CONNECTION_TIMEOUT", `the local hive did not start within ${(this.opts.startTimeoutMs ?? 20_000) / 1000} s; see ${this.logFile}`);
  }

  /** Extra daemon flags: the option's, then RBEE_HIVE_ARGS (e.g. "--idle-timeout-ms 600000"; a later flag wins). */
  private daemonArgs(): string[] {
    return [...(this.opts.daemonArgs ?? []), ...(process.env.RBEE_HIVE_ARGS ?? "").split(/\s+/).filter(Boolean)];
  }

  async status(): Promise<LocalHiveStatus> {
    const info = this.readInfo();
    const client = await this.connectExisting();
    if (!client || !info) return { running: false, home: this.home, logFile: this.logFile };
    const h = await client.health();
    return { running: true, pid: info.pid, port: info.port, version: h.version, home: this.home, logFile: this.logFile };
  }

  /** SIGTERM to the hive (it stops its workers first); resolves once it is gone. */
  async stop(timeoutMs = 60_000): Promise<boolean> {
    const info = this.readInfo();
    if (!info || !(await this.connectExisting())) return false;
    process.kill(info.pid, "SIGTERM");
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!isPidAlive(info.pid)) return true;
      await sleep(50);
    }
    process.kill(info.pid, "SIGKILL");
    return true;
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}
