// Connects the keeper to `localhost`, the node every install has: no SSH, the local hive is started
// on demand (unless told not to) and reached over loopback.

import { RbeeError } from "@rbee/hive-agent/protocol";
import { HiveClient } from "./hive-client";
import type { KeeperEvent, NodeConnector, NodeHandle } from "./keeper";
import type { LocalHive } from "./local-hive";
import type { Registry } from "./registry";
import { loopbackTransport } from "./transport";

export const LOCALHOST = "localhost";

export class LocalConnector implements NodeConnector {
  /** Set when this process started the local hive (an ephemeral run stops it again). */
  startedHive = false;

  constructor(
    private readonly local: LocalHive,
    private readonly registry: Registry,
    private readonly opts: { autoStart: boolean } = { autoStart: true },
  ) {}

  async connect(node: string, onEvent: (e: KeeperEvent) => void): Promise<NodeHandle> {
    if (node !== LOCALHOST)
      throw new RbeeError(
        "NODE_UNREACHABLE",
        `unknown node "${node}"; use "localhost" or a Host from your ~/.ssh/config ("rbee nodes list" shows them)`,
      );
    // A registry write costs an fsync: only the first run records the node.
    if (!(await this.registry.getNode(LOCALHOST)))
      await this.registry.upsertNode({ alias: LOCALHOST, host: "127.0.0.1", transport: "loopback" });
    if (this.opts.autoStart) {
      const { client, started } = await this.local.ensure(() =>
        onEvent({ kind: "phase", phase: "node", status: "started", message: "no local hive is running: starting one" }),
      );
      this.startedHive ||= started;
      return { name: LOCALHOST, hive: client };
    }
    // Without auto-start, a hive that does not answer is an error after the client's 3 tries (docs/edge-cases.md, EC1).
    const address = this.local.address();
    if (!address)
      throw new RbeeError(
        "NODE_UNREACHABLE",
        `no local hive is running (${this.local.infoFile} is missing); start it with "rbee hive start"`,
      );
    const hive = new HiveClient({
      transport: loopbackTransport(),
      baseUrl: address,
      token: this.local.token(),
      nodeName: LOCALHOST,
    });
    try {
      await hive.health();
    } catch (e) {
      if (e instanceof RbeeError && (e.code === "NODE_UNREACHABLE" || e.code === "CONNECTION_TIMEOUT"))
        throw new RbeeError(
          e.code,
          `${e.message}. Check that the local hive runs ("rbee hive status"; its log is ${this.local.logFile}) or start it with "rbee hive start"`,
          e.details,
        );
      throw e;
    }
    return { name: LOCALHOST, hive };
  }
}
