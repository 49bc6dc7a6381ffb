// The keeper stack, assembled in one place for the `rbee` CLI and the extension (and through the
// extension's services, the plain-Node tests and benches): the registry, the local hive with the
// runtime it runs on, the connectors to localhost and to SSH nodes, and the keeper over them. What
// differs between the two programs is an option here, never a second assembly.
//
// The SSH side (ssh2, the ssh config, the runtime cache's npm settings) is built on the first SSH
// use, so a localhost-only run never loads it.

import path from "node:path";
import { Keeper, type KeeperOptions, type NodeConnector } from "../keeper/keeper";
import { LocalConnector, LOCALHOST } from "../keeper/local-connector";
import { LocalHive } from "../keeper/local-hive";
import { Registry, rbeeHome, type RegistryOptions } from "../keeper/registry";
import type { SshConnectOptions, SshPool } from "../nodes/connection";
import type { DeployOptions } from "../nodes/deploy";
import { NodeRouter } from "../nodes/node-router";
import type { RuntimeCache } from "../nodes/runtime-cache";
import type { SshConfigIndex, SshNodeSpec } from "../nodes/ssh-config";
import type { SshConnector } from "../nodes/ssh-connector";
import { LocalNodeConnector } from "./local-node-connector";
import { LocalRuntime } from "./local-runtime";

export interface LocalHiveSetup {
  /** ~/.rbee or $RBEE_HOME: the local hive's home is `<home>/hive`, an unpacked runtime `<home>/agent/<version>`. Default rbeeHome(). */
  home?: string;
  /**
   * Run the hive on the runtime that goes with this bundle (unpacked once per version from the runtime
   * cache when no node-llama-cpp sits next to it), and replace a running hive of another version.
   * Undefined: run the agent script as it is (a checkout, or RBEE_AGENT_SCRIPT), whatever version runs.
   */
  runtime?: {
    /** Folder of the running bundles (dist/), holding hive-agent.js and runtime-pins.json. */
    bundleDir: string;
    version: string;
  };
  /** Where the runtime tarballs are kept; default ~/.rbee/cache/runtime. */
  runtimeCache?: { dir: string; fallbackDirs?: string[] };
  /** Extra hive daemon flags (the idle timeout), read at each start; they go to SSH deploys too. */
  daemonArgs?: () => string[];
  /** Narration of the one-time runtime install. */
  onRuntimeLine?: (line: string) => void;
}

export interface KeeperStackOptions extends LocalHiveSetup {
  /** The registry file and its warnings. */
  registry: { path: string } & Pick<RegistryOptions, "logger" | "onCorruption">;
  /** Start the local hive when none answers; deploy the hive to an SSH node on first use. */
  autoStart: boolean;
  ssh: {
    /** The ssh config file; undefined: ~/.ssh/config. Asked each time the config is read. */
    configPath?: () => string | undefined;
    /**
     * Read the config again at each use (a long-lived editor whose user edits the file) instead of
     * once for the stack's life (one CLI run).
     */
    rereadConfig?: boolean;
    /** How connections that act for the user handle unknown host keys and key passphrases. */
    connect?: SshConnectOptions;
    /** Deploy settings (how node-llama-cpp and Node.js reach a node); the runtime cache and daemon flags are added. */
    deploy?: () => Omit<DeployOptions, "onProgress">;
    log?: (line: string) => void;
  };
  keeper?: Omit<KeeperOptions, "registry" | "nodes">;
}

export interface SshSide {
  /** Connections that may ask the user (or act on --accept-new-host-key). */
  pool: SshPool;
  connector: SshConnector;
}

export interface KeeperStack {
  registry: Registry;
  keeper: Keeper;
  /** The keeper's connector to every node: localhost, or a Host of the ssh config. */
  nodes: NodeConnector;
  local: LocalHive;
  /** Knows whether this process started the local hive (an ephemeral run stops it again). */
  localConnector: LocalConnector;
  /** The local hive's runtime, when the stack runs the bundle's (see LocalHiveSetup.runtime). */
  runtime: LocalRuntime | undefined;
  /** The SSH pool and connector, built on first use. */
  ssh(): SshSide;
  /** Connections for looking only: an unknown host key is refused and no passphrase asked. Built on first use. */
  probePool(): SshPool;
  /** The concrete Hosts of the ssh config, in file order. */
  listSshNodes(): SshNodeSpec[];
  /** What a deploy to an SSH node uses: the shared runtime cache, the deploy settings, the daemon flags. */
  deployOptions(): Omit<DeployOptions, "onProgress">;
  close(): Promise<void>;
}

/** The local hive (and its runtime), for commands that need nothing else (`rbee hive`, `rbee logs`). */
export function createLocalHive(
  setup: LocalHiveSetup,
  cache: () => RuntimeCache = runtimeCacheOf(setup),
): { local: LocalHive; runtime: LocalRuntime | undefined } {
  const home = setup.home ?? rbeeHome();
  const daemonArgs = setup.daemonArgs ?? (() => []);
  const hiveHome = path.join(home, "hive");
  if (!setup.runtime) {
    return {
      local: new LocalHive({
        home: hiveHome,
        get daemonArgs() {
          return daemonArgs();
        },
      }),
      runtime: undefined,
    };
  }
  const { bundleDir, version } = setup.runtime;
  const runtime = new LocalRuntime({ bundleDir, home, version, cache: cache() });
  const onLine = setup.onRuntimeLine ?? (() => {});
  // The hive reads its script when it starts, after the runtime step may have installed it; a hive
  // left by an older install is upgraded to this version on first use.
  const local = new LocalHive({
    home: hiveHome,
    prepareAgent: () => runtime.prepare(onLine),
    expectedVersion: version,
    get daemonArgs() {
      return daemonArgs();
    },
  });
  return { local, runtime };
}

/** One RuntimeCache per stack, made when first needed (it reads the npm settings). */
function runtimeCacheOf(setup: LocalHiveSetup): () => RuntimeCache {
  let cache: RuntimeCache | undefined;
  return () => {
    if (!cache) {
      const { RuntimeCache, defaultRuntimeCacheDir } =
        require("../nodes/runtime-cache") as typeof import("../nodes/runtime-cache");
      cache = setup.runtimeCache
        ? new RuntimeCache(setup.runtimeCache.dir, { fallbackDirs: setup.runtimeCache.fallbackDirs })
        : new RuntimeCache(defaultRuntimeCacheDir());
    }
    return cache;
  };
}

export async function openKeeperStack(opts: KeeperStackOptions): Promise<KeeperStack> {
  const registry = await Registry.open(opts.registry.path, {
    logger: opts.registry.logger,
    onCorruption: opts.registry.onCorruption,
  });
  const runtimeCache = runtimeCacheOf(opts);
  const { local, runtime } = createLocalHive(opts, runtimeCache);
  const localConnector = new LocalConnector(local, registry, { autoStart: opts.autoStart });
  const localNodes: NodeConnector = runtime
    ? new LocalNodeConnector(localConnector, local, runtime, opts.onRuntimeLine ?? (() => {}))
    : localConnector;

  let config: SshConfigIndex | undefined;
  const sshConfig = (): SshConfigIndex => {
    if (config && !opts.ssh.rereadConfig) return config;
    const { loadSshConfig } = require("../nodes/ssh-config") as typeof import("../nodes/ssh-config");
    return (config = loadSshConfig({ configPath: opts.ssh.configPath?.() }));
  };
  const deployOptions = (): Omit<DeployOptions, "onProgress"> => {
    const base = { cache: runtimeCache(), ...opts.ssh.deploy?.() };
    const extra = opts.daemonArgs?.() ?? [];
    return extra.length ? { ...base, daemonArgs: [...(base.daemonArgs ?? []), ...extra] } : base;
  };
  let ssh: SshSide | undefined;
  let probe: SshPool | undefined;
  const sshSide = (): SshSide => {
    if (!ssh) {
      const { SshPool } = require("../nodes/connection") as typeof import("../nodes/connection");
      const { SshConnector } = require("../nodes/ssh-connector") as typeof import("../nodes/ssh-connector");
      const pool = new SshPool((alias) => sshConfig().node(alias), { log: opts.ssh.log, ...opts.ssh.connect });
      ssh = {
        pool,
        connector: new SshConnector(pool, { registry, autoDeploy: opts.autoStart, deploy: deployOptions() }),
      };
    }
    return ssh;
  };
  const router = new NodeRouter(localNodes, () => sshSide().connector);
  const nodes: NodeConnector = {
    connect: (node, onEvent, signal) => router.connect(node, onEvent, signal),
    // An SSH node not yet connected has nothing to drop (and ssh2 need not load for it).
    invalidate: (node) => (node === LOCALHOST || ssh ? router.invalidate(node) : undefined),
  };
  const keeper = new Keeper({ ...opts.keeper, registry, nodes });
  return {
    registry,
    keeper,
    nodes,
    local,
    localConnector,
    runtime,
    ssh: sshSide,
    probePool() {
      if (!probe) {
        const { SshPool } = require("../nodes/connection") as typeof import("../nodes/connection");
        probe = new SshPool((alias) => sshConfig().node(alias), {
          log: opts.ssh.log,
          onUnknownHostKey: async () => false,
          askPassphrase: async () => undefined,
        });
      }
      return probe;
    },
    listSshNodes: () => sshConfig().nodes(),
    deployOptions,
    async close() {
      await keeper.close();
      await ssh?.connector.close(); // closes its pool
      probe?.close();
      registry.close();
      await local.close();
    },
  };
}
