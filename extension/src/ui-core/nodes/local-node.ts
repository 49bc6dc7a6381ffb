// localhost as a node of the Remote Nodes view: its hive is a local process started on demand.

import { RbeeError } from "@rbee/hive-agent/protocol";
import type { HiveClient } from "../../keeper/hive-client";
import type { KeeperEvent } from "../../keeper/keeper";
import type { LocalHive } from "../../keeper/local-hive";
import type { Registry } from "../../keeper/registry";
import type { LocalRuntime } from "../../stack/local-runtime";
import type { NodeController } from "./node-controller";
import { LOCALHOST_ENTRY } from "./node-list";
import type { NodeSnapshot } from "./node-snapshot";
import { probeRunningHive } from "./registry-sync";

export class LocalNodeController implements NodeController {
  readonly entry = LOCALHOST_ENTRY;

  constructor(
    private readonly local: LocalHive,
    private readonly runtime: LocalRuntime,
    private readonly registry: Registry,
  ) {}

  async probe(): Promise<NodeSnapshot> {
    const base = { node: this.entry, backends: [], devices: [], workers: [], models: [], checkedAt: Date.now() };
    let hive: HiveClient | undefined;
    try {
      hive = await this.local.connectExisting();
    } catch (e) {
      return { ...base, status: "unreachable", reason: (e as Error).message };
    }
    if (!hive) return { ...base, status: "not-deployed", reason: "start it with the ▶ button (or run “rbee: Infer”)" };
    try {
      return await probeRunningHive(hive, this.registry, this.entry, base);
    } catch (e) {
      return { ...base, status: "unreachable", reason: (e as Error).message };
    }
  }

  async deploy(onEvent: (e: KeeperEvent) => void, onLine: (line: string) => void): Promise<void> {
    await this.hive(true, onEvent, onLine);
  }

  async hive(
    start: boolean,
    onEvent: (e: KeeperEvent) => void = () => {},
    onLine: (line: string) => void = () => {},
  ): Promise<HiveClient> {
    if (!start) {
      const existing = await this.local.connectExisting();
      if (!existing)
        throw new RbeeError(
          "NODE_UNREACHABLE",
          "the local hive is not running: start it from the Remote Nodes view (▶ on localhost)",
        );
      return existing;
    }
    await this.runtime.prepare(onLine);
    const { client } = await this.local.ensure(() =>
      onEvent({ kind: "phase", phase: "node", status: "started", message: "starting the local hive" }),
    );
    return client;
  }

  async logFile(): Promise<string> {
    return this.local.logFile;
  }
}
