// The keeper's connector for localhost with the runtime step in front: before the local hive is
// started for the first time, its node-llama-cpp is made available (see local-runtime.ts), and the
// caller is told so, since that one-time install can take a while.

import type { KeeperEvent, NodeConnector, NodeHandle } from "../keeper/keeper";
import { LOCALHOST } from "../keeper/local-connector";
import type { LocalHive } from "../keeper/local-hive";
import type { LocalRuntime } from "./local-runtime";

export class LocalNodeConnector implements NodeConnector {
  constructor(
    private readonly inner: NodeConnector,
    private readonly local: LocalHive,
    private readonly runtime: LocalRuntime,
    private readonly onLine: (line: string) => void,
  ) {}

  async connect(node: string, onEvent: (e: KeeperEvent) => void, signal?: AbortSignal): Promise<NodeHandle> {
    if (node === LOCALHOST && !this.runtime.ready() && !(await this.local.connectExisting())) {
      onEvent({
        kind: "phase",
        phase: "node",
        status: "started",
        message: "installing the llama.cpp runtime for the local hive (once)",
      });
      await this.runtime.prepare(this.onLine);
    }
    return this.inner.connect(node, onEvent, signal);
  }

  invalidate(node: string): void {
    this.inner.invalidate?.(node);
  }
}
