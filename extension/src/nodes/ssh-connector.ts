// Connects the keeper to SSH nodes: the node's shared SSH connection, the hive deployed (or found
// up to date) on first use, and a HiveClient whose HTTP runs through stream-local channels to the
// hive's Unix socket on the node.

import { HiveClient } from "../keeper/hive-client";
import type { KeeperEvent, NodeConnector, NodeHandle } from "../keeper/keeper";
import type { Registry } from "../keeper/registry";
import type { Transport } from "../keeper/transport";
import type { SshPool } from "./connection";
import { deployHive, hiveStatus, readHiveToken, type DeployEvent, type DeployOptions } from "./deploy";
import { NodeError } from "./errors";
import { sshTransport } from "./ssh-transport";

export interface SshConnectorOptions {
  /** Deploy (or upgrade) the hive when it is missing or another version; default true. */
  autoDeploy?: boolean;
  deploy?: Omit<DeployOptions, "onProgress">;
  /** Records each node it connects (alias, HostName, transport ssh), as the local connector does. */
  registry?: Registry;
}

interface Open {
  handle: NodeHandle;
  transport: Transport;
}

export class SshConnector implements NodeConnector {
  private readonly open = new Map<string, Promise<Open>>();

  constructor(
    private readonly pool: SshPool,
    private readonly opts: SshConnectorOptions = {},
  ) {}

  connect(node: string, onEvent: (e: KeeperEvent) => void): Promise<NodeHandle> {
    let p = this.open.get(node);
    if (!p) {
      // Concurrent calls for one node share one connect (and at most one deploy).
      p = this.openNode(node, onEvent);
      this.open.set(node, p);
      p.catch(() => this.open.delete(node));
    }
    return p.then((o) => o.handle);
  }

  invalidate(node: string): void {
    const p = this.open.get(node);
    this.open.delete(node);
    p?.then((o) => o.transport.close()).catch(() => {});
  }

  /** Closes every transport and SSH connection. */
  async close(): Promise<void> {
    const all = [...this.open.values()];
    this.open.clear();
    await Promise.all(all.map((p) => p.then((o) => o.transport.close()).catch(() => {})));
    this.pool.close();
  }

  private async openNode(node: string, onEvent: (e: KeeperEvent) => void): Promise<Open> {
    const conn = this.pool.get(node);
    const narrate = (e: DeployEvent) => {
      if (e.status === "started" || e.status === "warning")
        onEvent({ kind: "phase", phase: "node", status: "started", message: e.message });
    };
    let address: string;
    let token: string;
    if (this.opts.autoDeploy ?? true) {
      const r = await deployHive(conn, { ...this.opts.deploy, onProgress: narrate });
      address = r.address;
      token = r.token;
    } else {
      const s = await hiveStatus(conn, { nodeCommand: this.opts.deploy?.nodeCommand });
      const t = s.running ? await readHiveToken(conn) : undefined;
      if (!s.running || s.address === undefined || !t) {
        throw new NodeError("HIVE_NOT_DEPLOYED", `no hive runs on ${node}; deploy it with: rbee nodes deploy ${node}`, {
          alias: node,
        });
      }
      address = s.address;
      token = t;
    }
    await this.opts.registry?.upsertNode({ alias: node, host: conn.spec.hostname, transport: "ssh" }).catch(() => {});
    const transport = sshTransport(conn);
    const hive = new HiveClient({ transport, baseUrl: address, token, nodeName: node });
    return { handle: { name: node, hive }, transport };
  }
}
