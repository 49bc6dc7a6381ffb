// SSH client authentication in OpenSSH's order: ssh-agent keys (only the configured identities'
// with IdentitiesOnly), then each identity file, encrypted ones through the passphrase callback.
// The passphrase never leaves this module: the decrypted key is what ssh2 gets.

import { readFileSync } from "node:fs";
import { OpenSSHAgent, utils, type AnyAuthMethod, type IdentityCallback, type ParsedKey } from "ssh2";
import { errorCode } from "@rbee/hive-agent/util/coded-error";
import { NodeError } from "./errors";
import type { Deadline } from "./deadline";
import type { SshNodeSpec } from "./ssh-config";
import { describeSpec, type SshConnectOptions } from "./ssh-options";

/**
 * The authentication methods to offer, in OpenSSH's order: the agent's keys (only those matching
 * an IdentityFile when IdentitiesOnly is set), then each identity file. Encrypted files are
 * decrypted with a passphrase from the callback (up to three tries). Notes explain a failure.
 */
export class AuthSequence {
  private readonly steps: (() => Promise<AnyAuthMethod | undefined>)[] = [];
  private readonly tried: string[] = [];
  private readonly notes: string[] = [];

  constructor(
    private readonly spec: SshNodeSpec,
    private readonly opts: SshConnectOptions,
    private readonly deadline: Deadline,
  ) {
    const agentPath =
      spec.identityAgent === null ? undefined : (spec.identityAgent ?? opts.agentSocket ?? process.env.SSH_AUTH_SOCK);
    if (agentPath) this.steps.push(() => this.agentStep(agentPath));
    for (const file of spec.identityFiles) this.steps.push(() => this.keyStep(file));
  }

  async next(): Promise<AnyAuthMethod | false> {
    while (this.steps.length) {
      const m = await this.steps.shift()!();
      if (m) return m;
    }
    return false;
  }

  failure(): NodeError {
    const spec = this.spec;
    const tried = this.tried.length ? `tried ${this.tried.join(", ")}` : "no key to try";
    const notes = this.notes.length ? ` (${this.notes.join("; ")})` : "";
    return new NodeError(
      "SSH_AUTH_FAILED",
      `SSH authentication to ${spec.alias} (${describeSpec(spec)}) failed: ${tried}${notes}. ` +
        `Add your public key to ~${spec.user}/.ssh/authorized_keys on the node (ssh-copy-id ${spec.alias}), ` +
        `or point IdentityFile for Host ${spec.alias} in ~/.ssh/config at a key the node accepts`,
      { alias: spec.alias, tried: this.tried },
    );
  }

  private async agentStep(agentPath: string): Promise<AnyAuthMethod | undefined> {
    let agent: OpenSSHAgent = new OpenSSHAgent(agentPath);
    if (this.spec.identitiesOnly) {
      const allowed = this.spec.identityFiles.map(publicBlobOf).filter((b): b is Buffer => b !== undefined);
      if (!allowed.length) return undefined;
      agent = new FilteredAgent(agentPath, allowed);
    }
    this.tried.push(`ssh-agent (${agentPath})`);
    return { type: "agent", username: this.spec.user, agent };
  }

  private async keyStep(file: string): Promise<AnyAuthMethod | undefined> {
    let data: Buffer;
    try {
      data = readFileSync(file);
    } catch (err) {
      if (this.spec.identityFilesConfigured)
        this.notes.push(`${file}: ${errorCode(err) === "ENOENT" ? "no such file" : (err as Error).message}`);
      return undefined;
    }
    const parsed = utils.parseKey(data);
    if (!(parsed instanceof Error)) {
      this.tried.push(file);
      return { type: "publickey", username: this.spec.user, key: data };
    }
    if (!/no passphrase given/i.test(parsed.message)) {
      this.notes.push(`${file}: ${parsed.message}`);
      return undefined;
    }
    if (!this.opts.askPassphrase) {
      this.notes.push(
        `${file} is encrypted and no passphrase can be asked here; load it into ssh-agent (ssh-add ${file})`,
      );
      return undefined;
    }
    for (let attempt = 1; attempt <= 3; attempt++) {
      this.deadline.pause();
      let passphrase: string | undefined;
      try {
        passphrase = await this.opts.askPassphrase({ alias: this.spec.alias, keyPath: file, attempt });
      } finally {
        this.deadline.resume();
      }
      if (passphrase === undefined) {
        this.notes.push(`${file}: no passphrase given`);
        return undefined;
      }
      const key = utils.parseKey(data, passphrase);
      if (!(key instanceof Error)) {
        this.tried.push(file);
        // Hand over the decrypted key, so the passphrase itself goes no further.
        return { type: "publickey", username: this.spec.user, key: Array.isArray(key) ? key[0] : key };
      }
    }
    this.notes.push(`${file}: wrong passphrase three times`);
    return undefined;
  }
}

/** The public key blob of an identity file: from <file>.pub, or from the file if unencrypted. */
function publicBlobOf(file: string): Buffer | undefined {
  for (const candidate of [file + ".pub", file]) {
    try {
      const k = utils.parseKey(readFileSync(candidate));
      const key = Array.isArray(k) ? k[0] : k;
      if (!(key instanceof Error)) return (key as ParsedKey).getPublicSSH();
    } catch {
      // missing or unreadable: try the next
    }
  }
  return undefined;
}

/** An agent that offers only the keys of the configured identity files (IdentitiesOnly yes). */
class FilteredAgent extends OpenSSHAgent {
  constructor(
    socketPath: string,
    private readonly allowed: Buffer[],
  ) {
    super(socketPath);
  }
  override getIdentities(cb: IdentityCallback<ParsedKey>): void {
    super.getIdentities((err, keys) => {
      if (err || !keys) return cb(err, keys);
      cb(
        err,
        keys.filter((k) => "getPublicSSH" in k && this.allowed.some((b) => b.equals(k.getPublicSSH()))),
      );
    });
  }
}
