// The extension's keeper stack, built on first use: activation loads none of it, so sql.js,
// undici and the registry file are touched only when a command, a view or a completion needs them.
// No `vscode` import: the benchmarks and plain-node tests build the same stack.

import { readFileSync } from "node:fs";
import path from "node:path";
import type { Keeper } from "../keeper/keeper";
import type { LocalHive } from "../keeper/local-hive";
import type { Registry } from "../keeper/registry";
import type { NodeController } from "./nodes/node-controller";
import { NodeDirectory, type NodeSource } from "./nodes/node-directory";
import { RbeeError } from "../../../hive-agent/src/protocol";

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
  /** Node sources beyond localhost (the SSH config's hosts). */
  nodeSources?: NodeSource[];
}

export interface KeeperStack {
  registry: Registry;
  keeper: Keeper;
  local: LocalHive;
  controllers: Map<string, NodeController>;
}

export class RbeeServices {
  readonly directory: NodeDirectory;
  private stack: Promise<KeeperStack> | undefined;
  private disposed = false;

  constructor(readonly opts: ServicesOptions) {
    this.directory = new NodeDirectory(opts.nodeSources ?? []);
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
    const c = (await this.get()).controllers.get(node);
    if (!c) throw new RbeeError("NODE_UNREACHABLE", `unknown node "${node}": rbee knows ${[...(await this.get()).controllers.keys()].join(", ")}`);
    return c;
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
    const { log } = this.opts;
    const registry = await Registry.open(path.join(this.opts.storageDir, "registry.sqlite"), {
      logger: (level, message) => (level === "warn" ? log.warn(message) : log.info(message)),
      onCorruption: (info) => log.warn(`the registry was unreadable (${info.reason}); started a fresh one and re-learning the nodes`),
    });
    const manifest = JSON.parse(readFileSync(path.join(this.opts.extensionDir, "package.json"), "utf8")) as { version: string; dependencies?: Record<string, string> };
    const runtime = new LocalRuntime({
      bundleDir: this.opts.bundleDir,
      home: rbeeHome(),
      version: manifest.version,
      llamaVersion: manifest.dependencies?.["node-llama-cpp"] ?? "3.21.1",
    });
    // The hive reads its script when it starts, after the runtime step may have installed it.
    const local = new LocalHive({
      get agentScript() {
        return runtime.agentScript;
      },
    });
    const onLine = (line: string) => log.info(`[runtime] ${line}`);
    const connector = new LocalNodeConnector(new LocalConnector(local, registry, { autoStart: true }), local, runtime, onLine);
    const keeper = new Keeper({ registry, nodes: connector });
    const controllers = new Map<string, NodeController>([["localhost", new LocalNodeController(local, runtime, registry)]]);
    log.info(`keeper ready in ${(performance.now() - t0).toFixed(0)} ms (registry ${registry.path})`);
    if (this.disposed) {
      registry.close();
      await local.close();
      throw new Error("rbee is shutting down");
    }
    return { registry, keeper, local, controllers };
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    const stack = await this.stack?.catch(() => undefined);
    if (!stack) return;
    await stack.keeper.close();
    stack.registry.close();
    await stack.local.close();
  }
}
