// An SSH host as a node of the Remote Nodes view, over the nodes/ module: status without deploying
// anything, deploy (install or upgrade the hive-agent and start it), the hive's client, its log.
//
// Two SSH connections per node, on purpose: the view's periodic probes use one that never asks the
// user anything (an unknown host key or an encrypted key fails the probe and the reason shows on
// the node), while deploys and generations use one that may ask (a modal for a new host key, an
// input box for a passphrase) — so an open view can never pop up a question every few seconds.

import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { RbeeError } from "@rbee/hive-agent/protocol";
import { HiveClient } from "../../keeper/hive-client";
import type { KeeperEvent, NodeConnector } from "../../keeper/keeper";
import type { Registry } from "../../keeper/registry";
import type { Transport } from "../../keeper/transport";
import type { SshPool } from "../../nodes/connection";
import { deployHive, hiveLogs, hiveStatus, readHiveToken, type DeployOptions } from "../../nodes/deploy";
import { sshTransport } from "../../nodes/ssh-transport";
import type { NodeController } from "./node-controller";
import type { NodeEntry } from "./node-list";
import type { NodeSnapshot } from "./node-snapshot";
import { probeRunningHive } from "./registry-sync";

/** Where node tokens are kept between sessions (VS Code's SecretStorage in the extension). */
export interface TokenCache {
  get(node: string): Promise<string | undefined>;
  set(node: string, token: string): Promise<void>;
}

export interface SshNodeDeps {
  /** Connections that never prompt: for probes. */
  probePool: SshPool;
  /** Connections that may prompt: for deploys, and the keeper's connector built on it. */
  actionPool: SshPool;
  connector: NodeConnector;
  registry: Registry;
  tokens?: TokenCache;
  /** A folder for fetched hive logs. */
  logDir: string;
  deploy?: Omit<DeployOptions, "onProgress">;
}

export class SshNodeController implements NodeController {
  private status: { address: string; hive: HiveClient; transport: Transport } | undefined;

  constructor(
    readonly entry: NodeEntry,
    private readonly deps: SshNodeDeps,
  ) {}

  async probe(): Promise<NodeSnapshot> {
    const base = { node: this.entry, backends: [], devices: [], workers: [], models: [], checkedAt: Date.now() };
    try {
      const conn = this.deps.probePool.get(this.entry.name);
      const status = await hiveStatus(conn);
      if (!status.running || status.address === undefined) {
        await this.dropStatusClient();
        const reason = status.installedVersions.length
          ? `hive stopped (installed: ${status.installedVersions.join(", ")}); Deploy (▶) starts it`
          : "rbee is not installed there; Deploy (▶) installs it";
        return { ...base, status: "not-deployed", reason };
      }
      const hive = await this.statusClient(status.address);
      return await probeRunningHive(hive, this.deps.registry, this.entry, base);
    } catch (e) {
      await this.dropStatusClient();
      const err = e as { message: string; code?: string };
      const hint = err.code === "SSH_HOST_KEY_UNKNOWN" ? " (Deploy (▶) asks whether to trust it)" : "";
      return { ...base, status: "unreachable", reason: `${err.message}${hint}` };
    }
  }

  async deploy(onEvent: (e: KeeperEvent) => void, onLine: (line: string) => void, signal?: AbortSignal): Promise<void> {
    let lastPercent = -1;
    const result = await deployHive(this.deps.actionPool.get(this.entry.name), {
      ...this.deps.deploy,
      signal,
      onProgress: (e) => {
        if (e.status === "progress") {
          // Bytes sent / total per step, every 5 %: the notification shows it, the log keeps a trace.
          const percent = e.totalBytes ? Math.floor((100 * e.bytes) / e.totalBytes) : 0;
          if (percent === lastPercent || (percent < 100 && percent - lastPercent < 5)) return;
          lastPercent = percent;
          onLine(`${e.step}: ${percent}% (${e.message})`);
          return;
        }
        lastPercent = -1;
        onLine(e.message);
        if (e.status === "started") onEvent({ kind: "phase", phase: "node", status: "started", message: e.message });
      },
    });
    await this.deps.tokens?.set(this.entry.name, result.token);
    await this.dropStatusClient();
    // The keeper's handle may point at the hive that was just replaced.
    this.deps.connector.invalidate?.(this.entry.name);
  }

  async hive(start: boolean): Promise<HiveClient> {
    if (start) return (await this.deps.connector.connect(this.entry.name, () => {})).hive;
    const status = await hiveStatus(this.deps.probePool.get(this.entry.name));
    if (!status.running || status.address === undefined)
      throw new RbeeError(
        "NODE_UNREACHABLE",
        `no hive runs on ${this.entry.name}: deploy it from the Remote Nodes view (▶)`,
      );
    return this.statusClient(status.address);
  }

  async logFile(): Promise<string> {
    let text = "";
    for await (const chunk of hiveLogs(this.deps.probePool.get(this.entry.name), { lines: 1000 })) text += chunk;
    mkdirSync(this.deps.logDir, { recursive: true });
    const file = path.join(this.deps.logDir, `${this.entry.name.replace(/[^\w.-]/g, "_")}.hive.log`);
    writeFileSync(file, text);
    return file;
  }

  /** A hive client through the probe connection, with the stored token (read from the node when missing or refused). */
  private async statusClient(address: string): Promise<HiveClient> {
    if (this.status?.address === address) return this.status.hive;
    await this.dropStatusClient();
    const conn = this.deps.probePool.get(this.entry.name);
    const make = (token: string) => {
      const transport = sshTransport(conn);
      return {
        address,
        transport,
        hive: new HiveClient({ transport, baseUrl: address, token, nodeName: this.entry.name }),
      };
    };
    const stored = await this.deps.tokens?.get(this.entry.name).catch(() => undefined);
    if (stored) {
      const candidate = make(stored);
      try {
        await candidate.hive.workers();
        this.status = candidate;
        return candidate.hive;
      } catch (e) {
        await candidate.transport.close();
        if (!(e instanceof RbeeError && e.code === "INVALID_API_KEY")) throw e;
      }
    }
    const token = await readHiveToken(conn);
    if (!token)
      throw new RbeeError(
        "INVALID_API_KEY",
        `${this.entry.name} has no hive token; deploy again from the Remote Nodes view (▶)`,
      );
    await this.deps.tokens?.set(this.entry.name, token).catch(() => undefined);
    this.status = make(token);
    return this.status.hive;
  }

  private async dropStatusClient() {
    const s = this.status;
    this.status = undefined;
    await s?.transport.close().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.dropStatusClient();
  }
}
