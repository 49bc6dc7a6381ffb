// The extension's keeper stack, built on first use: activation loads none of it, so sql.js,
// undici and the registry file are touched only when a command, a view or a completion needs them.
// No `vscode` import: the benchmarks and plain-node tests build the same stack.

import { readFileSync } from "node:fs";
import path from "node:path";
import type { Keeper, NodeConnector } from "../keeper/keeper";
import type { LocalHive } from "../keeper/local-hive";
import type { Registry } from "../keeper/registry";
import type { SshConnectOptions } from "../nodes/connection";
import type { DeployOptions } from "../nodes/deploy";
import type { KeeperStack as CoreStack } from "../stack/keeper-stack";
import type { NodeController } from "./nodes/node-controller";
import { NodeList, LOCALHOST_ENTRY } from "./nodes/node-list";
import { SshConfigSource } from "./nodes/ssh-source";
import type { SshNodeController, TokenCache } from "./nodes/ssh-node";
import type { NodeEntry } from "./nodes/node-list";
import { RbeeError } from "@rbee/hive-agent/protocol";
import { idleTimeoutDaemonArgs } from "../keeper/local-hive";

export interface Logger {
  trace(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export interface ServicesOptions {
  /** The extension's global storage folder: the registry lives there. */
  storageDir: string;
  /** The folder of the running bundle (dist/): hive-agent.js sits next to it. */
  bundleDir: string;
  /** The extension's root, holding package.json. */
  extensionDir: string;
  log: Logger;
  ssh?: {
    /** The ssh config file; undefined: ~/.ssh/config. */
    configPath?: () => string | undefined;
    /** Questions for the user (unknown host key, key passphrase), asked only for user actions. */
    prompts?: Pick<SshConnectOptions, "onUnknownHostKey" | "askPassphrase">;
    /** Where node tokens are kept (SecretStorage). */
    tokens?: TokenCache;
    /** How deploys install the hive-agent (tests may copy this machine's runtime instead of the pinned tarballs). */
    deploy?: Omit<DeployOptions, "onProgress">;
  };
  /** rbee.nodes.idleTimeout: idle seconds before a node stops a worker (0 = never), read at each use. */
  idleTimeoutSeconds?: () => number;
}

export interface KeeperStack {
  registry: Registry;
  keeper: Keeper;
  /** The keeper's connector to every node (the gateway places new workers with it). */
  nodes: NodeConnector;
  local: LocalHive;
  /** The controller of a node the node list holds (localhost, or an SSH host). */
  controller(node: string): Promise<NodeController>;
  close(): Promise<void>;
}

export class RbeeServices {
  readonly nodeList: NodeList;
  private stack: Promise<KeeperStack> | undefined;
  private disposed = false;

  constructor(readonly opts: ServicesOptions) {
    this.nodeList = new NodeList([new SshConfigSource(opts.ssh?.configPath ?? (() => undefined))]);
  }

  /** Whether the keeper stack has been asked for (activation must leave this false). */
  get loaded(): boolean {
    return this.stack !== undefined;
  }

  /** The keeper stack, loaded and opened on the first call. */
  get(): Promise<KeeperStack> {
    if (this.disposed) return Promise.reject(new Error("rbee is shutting down"));
    this.stack ??= this.load().catch((e) => {
      this.stack = undefined; // let the next call try again (e.g. after a lock timeout)
      throw e;
    });
    return this.stack;
  }

  async keeper(): Promise<Keeper> {
    return (await this.get()).keeper;
  }

  async controller(node: string): Promise<NodeController> {
    return (await this.get()).controller(node);
  }

  private async load(): Promise<KeeperStack> {
    const t0 = performance.now();
    // require, not import: these modules (sql.js, undici) are evaluated here, on first use; esbuild
    // keeps a required module's body lazy inside the bundle.
    const { openKeeperStack } = require("../stack/keeper-stack") as typeof import("../stack/keeper-stack");
    const { defaultRuntimeCacheDir } = require("../nodes/runtime-cache") as typeof import("../nodes/runtime-cache");
    const { LocalNodeController } = require("./nodes/local-node") as typeof import("./nodes/local-node");
    const { log } = this.opts;
    const manifest = JSON.parse(readFileSync(path.join(this.opts.extensionDir, "package.json"), "utf8")) as {
      version: string;
    };
    const idle = this.opts.idleTimeoutSeconds;
    const core = await openKeeperStack({
      registry: {
        path: path.join(this.opts.storageDir, "registry.sqlite"),
        logger: (level, message) => (level === "warn" ? log.warn(message) : log.info(message)),
        onCorruption: (info) =>
          log.warn(`the registry was unreadable (${info.reason}); started a fresh one and re-learning the nodes`),
      },
      autoStart: true,
      runtime: { bundleDir: this.opts.bundleDir, version: manifest.version },
      // The runtime tarballs live in the extension's global storage, shared by the local hive and
      // every SSH deploy from this editor; what `rbee runtime import` put in ~/.rbee is used too.
      runtimeCache: { dir: path.join(this.opts.storageDir, "runtime-cache"), fallbackDirs: [defaultRuntimeCacheDir()] },
      // rbee.nodes.idleTimeout: the default of hives rbee starts or deploys.
      daemonArgs: () => idleTimeoutDaemonArgs(idle?.()),
      onRuntimeLine: (line) => log.info(`[runtime] ${line}`),
      ssh: {
        configPath: this.opts.ssh?.configPath,
        rereadConfig: true,
        connect: this.opts.ssh?.prompts,
        deploy: () => ({ ...this.opts.ssh?.deploy }),
        log: (line) => log.trace(`[ssh] ${line}`),
      },
      // The setting reaches workers through keep_alive on each spawn, so a change applies to the next
      // worker without restarting a hive.
      keeper: { keepAliveS: idle },
    });
    const localController = new LocalNodeController(core.local, core.runtime!, core.registry);
    const ssh = new SshControllers(this.opts, core);
    const nodeList = this.nodeList;
    const stack: KeeperStack = {
      registry: core.registry,
      keeper: core.keeper,
      nodes: core.nodes,
      local: core.local,
      async controller(node) {
        if (node === LOCALHOST_ENTRY.name) return localController;
        const entry = (await nodeList.list()).nodes.find((n) => n.name === node);
        if (!entry)
          throw new RbeeError(
            "NODE_UNREACHABLE",
            `unknown node "${node}": use "localhost" or a Host of your ssh config (${nodeList.describeSources()})`,
          );
        return ssh.controller(entry);
      },
      async close() {
        await ssh.close();
        await core.close();
      },
    };
    log.info(`keeper ready in ${(performance.now() - t0).toFixed(0)} ms (registry ${core.registry.path})`);
    if (this.disposed) {
      await stack.close();
      throw new Error("rbee is shutting down");
    }
    return stack;
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    const stack = await this.stack?.catch(() => undefined);
    await stack?.close();
  }
}

/** The Remote Nodes view's controllers of SSH nodes, over the stack's pools (ssh2 loads on the first one). */
class SshControllers {
  private readonly controllers = new Map<string, SshNodeController>();

  constructor(
    private readonly opts: ServicesOptions,
    private readonly core: CoreStack,
  ) {}

  controller(entry: NodeEntry): NodeController {
    let c = this.controllers.get(entry.name);
    if (!c) {
      const { SshNodeController } = require("./nodes/ssh-node") as typeof import("./nodes/ssh-node");
      const { pool, connector } = this.core.ssh();
      c = new SshNodeController(entry, {
        probePool: this.core.probePool(),
        actionPool: pool,
        connector,
        registry: this.core.registry,
        tokens: this.opts.ssh?.tokens,
        deploy: this.core.deployOptions(),
        logDir: path.join(this.opts.storageDir, "logs"),
      });
      this.controllers.set(entry.name, c);
    }
    return c;
  }

  async close(): Promise<void> {
    for (const c of this.controllers.values()) await c.close();
  }
}
