// What the Remote Nodes view and the commands can do with one node, whatever its transport.
// localhost has LocalNodeController; SSH nodes get their own controller over the nodes/ module.

import type { HiveClient } from "../../keeper/hive-client";
import type { KeeperEvent } from "../../keeper/keeper";
import type { NodeEntry } from "./node-list";
import type { NodeSnapshot } from "./node-snapshot";

export interface NodeController {
  readonly entry: NodeEntry;
  /** The node's state, learnt without starting or deploying anything. Never throws: failures are in the snapshot. */
  probe(): Promise<NodeSnapshot>;
  /**
   * Makes the hive run (localhost: start it; SSH: deploy and start). `signal` cancels an SSH deploy
   * before the new version is swapped in (the running one stays).
   */
  deploy(onEvent: (e: KeeperEvent) => void, onLine: (line: string) => void, signal?: AbortSignal): Promise<void>;
  /** A client to the running hive; starts it when `start` is true. */
  hive(start: boolean): Promise<HiveClient>;
  /** The hive's log, as a local file to open. */
  logFile(): Promise<string>;
}
