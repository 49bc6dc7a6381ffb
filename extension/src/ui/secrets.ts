// Node tokens (the bearer token of each SSH node's hive, created at deploy) live in VS Code's
// SecretStorage — the OS keychain — never in settings, the registry or the log. localhost's token is
// the local hive's own 0600 file (~/.rbee/hive/token) and is not stored here.

import type * as vscode from "vscode";

const KEY_PREFIX = "rbee.nodeToken/";

export class NodeTokenStore {
  constructor(private readonly secrets: vscode.SecretStorage) {}

  private key(node: string): string {
    if (!node || node === "localhost")
      throw new Error(`no stored token for "${node}": localhost uses the local hive's token file`);
    return KEY_PREFIX + node;
  }

  get(node: string): Promise<string | undefined> {
    return Promise.resolve(this.secrets.get(this.key(node)));
  }

  async set(node: string, token: string): Promise<void> {
    if (!/^[A-Za-z0-9._~+/=-]{16,512}$/.test(token))
      throw new Error(`refusing to store a malformed token for ${node} (expected 16–512 token characters)`);
    await this.secrets.store(this.key(node), token);
  }

  async delete(node: string): Promise<void> {
    await this.secrets.delete(this.key(node));
  }
}
