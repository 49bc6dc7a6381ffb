// The keeper's NodeConnector for every node the extension knows: localhost goes to the local
// connector, any other name to the SSH connector (built on first use, so ssh2 loads only then).

import type { KeeperEvent, NodeConnector, NodeHandle } from "../../keeper/keeper";
import { LOCALHOST_ENTRY } from "./node-list";

export class NodeRouter implements NodeConnector {
  constructor(
    private readonly local: NodeConnector,
    private readonly remote: () => NodeConnector,
  ) {}

  connect(node: string, onEvent: (e: KeeperEvent) => void, signal?: AbortSignal): Promise<NodeHandle> {
    return node === LOCALHOST_ENTRY.name ? this.local.connect(node, onEvent, signal) : this.remote().connect(node, onEvent, signal);
  }

  invalidate(node: string): void {
    if (node === LOCALHOST_ENTRY.name) this.local.invalidate?.(node);
    else this.remote().invalidate?.(node);
  }
}
