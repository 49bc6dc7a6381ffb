// The extension's keeper stack, built on first use: activation loads none of it, so sql.js,
// undici and the registry file are touched only when a command, a view or a completion needs them.
// No `vscode` import: the benchmarks and plain-node tests build the same stack.

import { readFileSync } from "node:fs";
import path from "node:path";
import type { Keeper, NodeConnector } from "../keeper/keeper";
import type { LocalHive } from "../keeper/local-hive";
import type { Registry } from "../keeper/registry";
import type { SshConnectOptions, SshPool } from "../nodes/connection";
import type { SshConnector } from "../nodes/ssh-connector";
import type { DeployOptions } from "../nodes/deploy";
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
    const { Registry, rbeeHome } = require("../keeper/registry") as typeof import("../keeper/registry");
    const { Keeper } = require("../keeper/keeper") as typeof import("../keeper/keeper");
    const { LocalHive } = require("../keeper/local-hive") as typeof import("../keeper/local-hive");
    const { LocalConnector } = require("../keeper/local-connector") as typeof import("../keeper/local-connector");
    const { LocalRuntime } = require("./nodes/local-runtime") as typeof import("./nodes/local-runtime");
    const { LocalNodeController, LocalNodeConnector } = require("./nodes/local-node") as typeof import("./nodes/local-node");
    const { NodeRouter } = require("../nodes/node-router") as typeof import("../nodes/node-router");
    const { log } = this.opts;
    const registry = await Registry.open(path.join(this.opts.storageDir, "registry.sqlite"), {
      logger: (level, message) => (level === "warn" ? log.warn(message) : log.info(message)),
      onCorruption: (info) => log.warn(`the registry was unreadable (${info.reason}); started a fresh one and re-learning the nodes`),
    });
    const manifest = JSON.parse(readFileSync(path.join(this.opts.extensionDir, "package.json"), "utf8")) as { version: string; dependencies?: Record<string, string> };
    const { RuntimeCache, defaultRuntimeCacheDir } = require("../nodes/runtime-cache") as typeof import("../nodes/runtime-cache");
    // The runtime tarballs live in the extension's global storage, shared by the local hive and
    // every SSH deploy from this editor; what `rbee runtime import` put in ~/.rbee is used too.
    const runtimeCache = new RuntimeCache(path.join(this.opts.storageDir, "runtime-cache"), { fallbackDirs: [defaultRuntimeCacheDir()] });
    const runtime = new LocalRuntime({ bundleDir: this.opts.bundleDir, home: rbeeHome(), version: manifest.version, cache: runtimeCache });
    const onLine = (line: string) => log.info(`[runtime] ${line}`);
    // The hive reads its script when it starts, after the runtime step may have installed it; a hive
    // left by an older install is upgraded to this version on first use.
    const idle = this.opts.idleTimeoutSeconds;
    const local = new LocalHive({
      get agentScript() {
        return runtime.agentScript;
      },
      prepareAgent: () => runtime.prepare(onLine),
      expectedVersion: manifest.version,
      get daemonArgs() {
        return idleTimeoutDaemonArgs(idle?.());
      },
    });
    const localConnector = new LocalNodeConnector(new LocalConnector(local, registry, { autoStart: true }), local, runtime, onLine);
    const localController = new LocalNodeController(local, runtime, registry);
    const ssh = new SshStack(this.opts, registry);
    // The setting reaches workers through keep_alive on each spawn, so a change applies to the next worker
    // without restarting a hive; hives rbee starts get it as their default too.
    const nodes = new NodeRouter(localConnector, () => ssh.connector());
    const keeper = new Keeper({ registry, nodes, keepAliveS: idle });
    const nodeList = this.nodeList;
    const stack: KeeperStack = {
      registry,
      keeper,
      nodes,
      local,
      async controller(node) {
        if (node === LOCALHOST_ENTRY.name) return localController;
        const entry = (await nodeList.list()).nodes.find((n) => n.name === node);
        if (!entry) throw new RbeeError("NODE_UNREACHABLE", `unknown node "${node}": use "localhost" or a Host of your ssh config (${nodeList.describeSources()})`);
        return ssh.controller(entry);
      },
      async close() {
        await keeper.close();
        await ssh.close();
        registry.close();
        await local.close();
      },
    };
    log.info(`keeper ready in ${(performance.now() - t0).toFixed(0)} ms (registry ${registry.path})`);
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

/** The SSH side of the stack, built on the first SSH node used (ssh2 loads then). */
class SshStack {
  private pools: { probe: SshPool; action: SshPool; connector: SshConnector } | undefined;
  private readonly controllers = new Map<string, SshNodeController>();
  private runtimeCache: import("../nodes/runtime-cache").RuntimeCache | undefined;

  constructor(
    private readonly opts: ServicesOptions,
    private readonly registry: Registry,
  ) {}

  private build() {
    if (this.pools) return this.pools;
    const { SshPool } = require("../nodes/connection") as typeof import("../nodes/connection");
    const { SshConnector } = require("../nodes/ssh-connector") as typeof import("../nodes/ssh-connector");
    const { loadSshConfig } = require("../nodes/ssh-config") as typeof import("../nodes/ssh-config");
    const resolve = (alias: string) => loadSshConfig({ configPath: this.opts.ssh?.configPath?.() }).node(alias);
    const log = (line: string) => this.opts.log.trace(`[ssh] ${line}`);
    const probe = new SshPool(resolve, { log, onUnknownHostKey: async () => false, askPassphrase: async () => undefined });
    const action = new SshPool(resolve, { log, ...this.opts.ssh?.prompts });
    const connector = new SshConnector(action, { registry: this.registry, autoDeploy: true, deploy: this.deployOptions() });
    this.pools = { probe, action, connector };
    return this.pools;
  }

  connector(): NodeConnector {
    return this.build().connector;
  }

  /**
   * Deploys take the runtime from the extension's global storage (the local hive's cache too), with
   * the node idle timeout setting as the hive's default.
   */
  private deployOptions(): Omit<DeployOptions, "onProgress"> {
    const { RuntimeCache, defaultRuntimeCacheDir } = require("../nodes/runtime-cache") as typeof import("../nodes/runtime-cache");
    this.runtimeCache ??= new RuntimeCache(path.join(this.opts.storageDir, "runtime-cache"), { fallbackDirs: [defaultRuntimeCacheDir()] });
    const base = { cache: this.runtimeCache, ...this.opts.ssh?.deploy };
    const idle = this.opts.idleTimeoutSeconds?.();
    if (idle === undefined) return base;
    return { ...base, daemonArgs: [...(base.daemonArgs ?? []), ...idleTimeoutDaemonArgs(idle)] };
  }

  controller(entry: NodeEntry): NodeController {
    let c = this.controllers.get(entry.name);
    if (!c) {
      const { SshNodeController } = require("./nodes/ssh-node") as typeof import("./nodes/ssh-node");
      const { probe, action, connector } = this.build();
      c = new SshNodeController(entry, {
        probePool: probe,
        actionPool: action,
        connector,
        registry: this.registry,
        tokens: this.opts.ssh?.tokens,
        deploy: this.deployOptions(),
        logDir: path.join(this.opts.storageDir, "logs"),
      });
      this.controllers.set(entry.name, c);
    }
    return c;
  }

  async close(): Promise<void> {
    for (const c of this.controllers.values()) await c.close();
    if (!this.pools) return;
    await this.pools.connector.close(); // closes the action pool
    this.pools.probe.close();
  }
}
