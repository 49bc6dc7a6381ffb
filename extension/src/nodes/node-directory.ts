// Every node rbee knows: `localhost` (always) and each concrete Host of ~/.ssh/config. It routes the
// keeper's connections to the local hive or over SSH, and creates the SSH side only when an SSH node
// is first used, so a localhost-only run never loads ssh2 or reads the ssh config.

import type { KeeperEvent, NodeConnector, NodeHandle } from "../keeper/keeper";
import { LocalConnector, LOCALHOST } from "../keeper/local-connector";
import type { LocalHive } from "../keeper/local-hive";
import type { Registry } from "../keeper/registry";
import type { SshConnectOptions, SshPool } from "./connection";
import type { DeployOptions } from "./deploy";
import type { SshConfigIndex, SshNodeSpec } from "./ssh-config";
import type { SshConnector } from "./ssh-connector";
import { NodeRouter } from "./node-router";

export interface NodeDirectoryOptions {
  registry: Registry;
  local: LocalHive;
  /** Start the local hive when none answers (default true). */
  autoStart?: boolean;
  /** Deploy the hive to an SSH node on first use (default true). */
  autoDeploy?: boolean;
  sshConfigPath?: string;
  ssh?: SshConnectOptions;
  deploy?: Omit<DeployOptions, "onProgress">;
}

export class NodeDirectory implements NodeConnector {
  readonly local: LocalConnector;
  private readonly router: NodeRouter;
  private sshState?: { config: SshConfigIndex; pool: SshPool; connector: SshConnector };

  constructor(private readonly opts: NodeDirectoryOptions) {
    this.local = new LocalConnector(opts.local, opts.registry, { autoStart: opts.autoStart ?? true });
    this.router = new NodeRouter(this.local, () => this.ssh().connector);
  }

  /** The parsed ssh config, pool and connector, made on first use. */
  ssh() {
    if (!this.sshState) {
      const { loadSshConfig } = require("./ssh-config") as typeof import("./ssh-config");
      const { SshPool } = require("./connection") as typeof import("./connection");
      const { SshConnector } = require("./ssh-connector") as typeof import("./ssh-connector");
      const config = loadSshConfig({ configPath: this.opts.sshConfigPath });
      const pool = new SshPool((alias) => config.node(alias), this.opts.ssh);
      const connector = new SshConnector(pool, { autoDeploy: this.opts.autoDeploy ?? true, deploy: this.deployOptions(), registry: this.opts.registry });
      this.sshState = { config, pool, connector };
    }
    return this.sshState;
  }

  /**
   * Deploy options; RBEE_RUNTIME_INSTALL (pinned | copy) picks how node-llama-cpp reaches a node and
   * RBEE_NODE_RUNTIME (pinned | system) which Node.js runs the hive there.
   */
  deployOptions(): Omit<DeployOptions, "onProgress"> {
    const runtime = process.env.RBEE_RUNTIME_INSTALL;
    const node = process.env.RBEE_NODE_RUNTIME;
    return {
      ...(runtime === "pinned" || runtime === "copy" ? { runtimeInstall: runtime } : {}),
      ...(node === "pinned" || node === "system" ? { nodeRuntime: node } : {}),
      ...this.opts.deploy,
    };
  }

  /** The SSH hosts in config order. */
  listSshNodes(): SshNodeSpec[] {
    return this.ssh().config.nodes();
  }

  connect(node: string, onEvent: (e: KeeperEvent) => void): Promise<NodeHandle> {
    return this.router.connect(node, onEvent);
  }

  invalidate(node: string): void {
    // An SSH node not yet connected has nothing to drop (and ssh2 need not load for it).
    if (node === LOCALHOST || this.sshState) this.router.invalidate(node);
  }

  async close(): Promise<void> {
    await this.sshState?.connector.close();
  }
}
