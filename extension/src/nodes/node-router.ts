// The keeper's NodeConnector for every node rbee knows (the CLI's and the extension's): localhost goes to the local
// connector, any other name to the SSH connector (built on first use, so ssh2 loads only then).

import type { KeeperEvent, NodeConnector, NodeHandle } from "../keeper/keeper";
import { LOCALHOST } from "../keeper/local-connector";

export class NodeRouter implements NodeConnector {
  constructor(
    private readonly local: NodeConnector,
    private readonly remote: () => NodeConnector,
  ) {}

  connect(node: string, onEvent: (e: KeeperEvent) => void, signal?: AbortSignal): Promise<NodeHandle> {
    return node === LOCALHOST
      ? this.local.connect(node, onEvent, signal)
      : this.remote().connect(node, onEvent, signal);
  }

  invalidate(node: string): void {
    if (node === LOCALHOST) this.local.invalidate?.(node);
    else this.remote().invalidate?.(node);
  }
}
