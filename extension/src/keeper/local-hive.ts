// The embedded default: `localhost` is always a node. When no local hive answers, the keeper starts
// one itself (detached, so it outlives this CLI run or window and serves the next one warm) and
// stops it again only when asked (`rbee hive stop`, or an ephemeral run). The hive listens on a Unix
// socket in its 0700 home: whatever answers there is ours, and hive.json names nothing else.

import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { randomBytes } from "node:crypto";
import { existsSync, linkSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import path from "node:path";
import { RbeeError, socketPathOf } from "@rbee/hive-agent/protocol";
import { childEnv, HIVE_ENV_EXTRA } from "@rbee/hive-agent/util/env";
import { HiveClient } from "./hive-client";
import { FileLock } from "./registry-lock";
import { isPidAlive } from "@rbee/hive-agent/util/process";
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
  /**
   * Makes the agent's runtime available before a start and returns the script to run (a .vsix
   * install unpacks node-llama-cpp from the runtime cache once per version); default agentScript.
   */
  prepareAgent?: () => Promise<string>;
  /**
   * The version this install runs. A running hive of another version (left by an older install) is
   * replaced on the next ensure(): stopped, and this version started in its place; should that
   * fail, the previous program is started again. Unset: any running hive is used.
   */
  expectedVersion?: string;
}

export interface LocalHiveStatus {
  running: boolean;
  pid?: number;
  /** Where it listens: `unix:<socket>` (or loopback TCP on Windows). */
  address?: string;
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
    if (!existsSync(this.tokenFile)) {
      // Two first runs at once: one creates it, the other reads what the first wrote. The token is
      // written whole to a private temporary file and linked in, so no reader sees it half-written.
      const tmp = `${this.tokenFile}.${process.pid}.${randomBytes(4).toString("hex")}`;
      writeFileSync(tmp, randomBytes(24).toString("base64url"), { mode: 0o600, flag: "wx" });
      try {
        linkSync(tmp, this.tokenFile);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      } finally {
        rmSync(tmp, { force: true });
      }
    }
    return readFileSync(this.tokenFile, "utf8").trim();
  }

  /** hive.json, when it names a hive of ours: a `unix:` address inside this home (or loopback TCP on Windows). */
  private readInfo(): { pid: number; address: string; version: string } | undefined {
    try {
      const j = JSON.parse(readFileSync(this.infoFile, "utf8"));
      if (!Number.isInteger(j.pid) || typeof j.address !== "string") return undefined;
      const socket = socketPathOf(j.address);
      if (
        socket !== undefined
          ? path.dirname(socket) !== path.resolve(this.home)
          : !(process.platform === "win32" && /^http:\/\/127\.0\.0\.1:\d+$/.test(j.address))
      )
        return undefined;
      return j;
    } catch {
      return undefined;
    }
  }

  /** The address hive.json names, when it is one of ours. */
  address(): string | undefined {
    return this.readInfo()?.address;
  }

  private clientFor(address: string, retries = 1): HiveClient {
    return new HiveClient({
      transport: this.transport,
      baseUrl: address,
      token: this.token(),
      nodeName: "localhost",
      retry: { attempts: retries },
    });
  }

  /** A client to the running hive, or undefined when none answers. */
  async connectExisting(): Promise<HiveClient | undefined> {
    return (await this.running())?.client;
  }

  /** The running hive's client and version, or undefined when none answers. */
  private async running(): Promise<{ client: HiveClient; version: string } | undefined> {
    const info = this.readInfo();
    if (!info) return undefined;
    const client = this.clientFor(info.address);
    try {
      const h = await client.health();
      return { client: this.clientFor(info.address, 3), version: h.version };
    } catch (e) {
      // A hive that answers but refuses our token is a real problem, not a missing hive.
      if (e instanceof RbeeError && e.code === "INVALID_API_KEY") throw e;
      return undefined;
    }
  }

  private current(r: { version: string } | undefined): boolean {
    return r !== undefined && (this.opts.expectedVersion === undefined || r.version === this.opts.expectedVersion);
  }

  /**
   * Connects to the local hive, starting it first if none answers (or upgrading one of another
   * version). `started` tells whether a hive was started.
   */
  async ensure(onStart?: (message?: string) => void): Promise<{ client: HiveClient; started: boolean }> {
    const existing = await this.running();
    if (existing && this.current(existing)) return { client: existing.client, started: false };
    mkdirSync(this.home, { recursive: true, mode: 0o700 });
    // Two CLI runs (or windows) starting at once must start one hive, not two.
    return new FileLock(path.join(this.home, "start.lock"), { timeoutMs: 120_000, staleMs: 120_000 }).withLock(
      async () => {
        const again = await this.running();
        if (again && this.current(again)) return { client: again.client, started: false };
        if (again) {
          // An older install's hive: its models stay in this home; only the program changes.
          onStart?.(`upgrading the local hive from ${again.version} to ${this.opts.expectedVersion}`);
          const previous = this.readStartedScript();
          await this.stop();
          try {
            return { client: this.clientFor(await this.start(), 3), started: true };
          } catch (e) {
            if (previous && existsSync(previous)) {
              await this.start(previous).catch(() => {});
              throw new RbeeError(
                "NODE_UNREACHABLE",
                `${(e as Error).message}; the previous local hive (${again.version}) was started again`,
              );
            }
            throw e;
          }
        }
        onStart?.();
        const address = await this.start();
        return { client: this.clientFor(address, 3), started: true };
      },
    );
  }

  /** The script the running hive was started from (recorded at start), for a rollback. */
  private readStartedScript(): string | undefined {
    try {
      return readFileSync(path.join(this.home, "hive.agent"), "utf8").trim() || undefined;
    } catch {
      return undefined;
    }
  }

  private async start(script?: string): Promise<string> {
    const agent =
      script ??
      (this.opts.prepareAgent ? await this.opts.prepareAgent() : (this.opts.agentScript ?? defaultAgentScript()));
    if (!existsSync(agent))
      throw new RbeeError(
        "NODE_UNREACHABLE",
        `the hive-agent program is missing at ${agent}; reinstall rbee (or run npm run build)`,
      );
    this.token(); // created on first start
    rmSync(this.infoFile, { force: true });
    const log = openSync(this.logFile, "a");
    const child = spawn(
      process.execPath,
      [agent, "daemon", "--token-file", this.tokenFile, "--home", this.home, ...this.daemonArgs()],
      // Detached in its own session: it serves later runs after this process exits. Its environment
      // is the basics plus HF settings, not every secret of the editor's (util/env.ts).
      {
        detached: true,
        stdio: ["ignore", log, log],
        env: childEnv(process.env, { ELECTRON_RUN_AS_NODE: "1" }, HIVE_ENV_EXTRA),
      },
    );
    closeSync(log);
    child.unref();
    writeFileSync(path.join(this.home, "hive.agent"), agent + "\n", { mode: 0o600 });
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 20_000);
    let exited: number | null = null;
    child.once("exit", (code) => (exited = code ?? -1));
    while (Date.now() < deadline) {
      if (exited !== null)
        throw new RbeeError(
          "NODE_UNREACHABLE",
          `the local hive exited with code ${exited} at start; see ${this.logFile}`,
        );
      const info = this.readInfo();
      if (info && info.pid === child.pid) {
        try {
          await this.clientFor(info.address).health();
          return info.address;
        } catch {
          // not answering yet
        }
      }
      await sleep(50);
    }
    throw new RbeeError(
      "CONNECTION_TIMEOUT",
      `the local hive did not start within ${(this.opts.startTimeoutMs ?? 20_000) / 1000} s; see ${this.logFile}`,
    );
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
    return {
      running: true,
      pid: h.pid ?? info.pid,
      address: info.address,
      version: h.version,
      home: this.home,
      logFile: this.logFile,
    };
  }

  /**
   * SIGTERM to the hive (it stops its workers first); resolves once it is gone. Only the process
   * that answers on our socket with its own pid is signalled, never just what hive.json names.
   */
  async stop(timeoutMs = 60_000): Promise<boolean> {
    const info = this.readInfo();
    const client = info && (await this.connectExisting());
    if (!info || !client) return false;
    const h = await client.health();
    if (h.pid !== info.pid)
      throw new RbeeError(
        "INTERNAL",
        `${this.infoFile} names pid ${info.pid} but the hive answering on ${info.address} is pid ${h.pid ?? "unknown"}; nothing was signalled. Stop that hive by hand if it is yours`,
      );
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
