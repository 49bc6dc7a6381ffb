// The SSH config's concrete Host aliases as nodes. The file is read again at every listing, so an
// edit to ~/.ssh/config shows at the next refresh; a broken file is reported by the directory
// without hiding localhost.

import type { NodeEntry, NodeSource } from "./node-list";

export class SshConfigSource implements NodeSource {
  constructor(
    /** The config file; undefined: ~/.ssh/config. */
    private readonly configPath: () => string | undefined,
  ) {}

  get description(): string {
    return this.configPath() ?? "~/.ssh/config";
  }

  async list(): Promise<NodeEntry[]> {
    const { loadSshConfig } = require("../../nodes/ssh-config") as typeof import("../../nodes/ssh-config");
    return loadSshConfig({ configPath: this.configPath() })
      .nodes()
      .map((spec) => ({ name: spec.alias, host: spec.hostname, transport: "ssh" as const }));
  }
}
