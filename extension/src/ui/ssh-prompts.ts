// The questions an SSH connection may need answered, asked in VS Code: trust a host key that
// known_hosts does not have yet (a modal with its fingerprint), and the passphrase of an encrypted key.
// Only connections made for a user action ask (see nodes/ssh-node.ts).

import * as vscode from "vscode";
import type { PassphraseRequest, SshConnectOptions, UnknownHostKey } from "../nodes/connection";

export const sshPrompts: Pick<SshConnectOptions, "onUnknownHostKey" | "askPassphrase"> = {
  async onUnknownHostKey(k: UnknownHostKey): Promise<boolean> {
    const trust = "Trust and Connect";
    const other = k.otherKeyTypes.length
      ? `\nknown_hosts has other key types for this host: ${k.otherKeyTypes.join(", ")}.`
      : "";
    const choice = await vscode.window.showWarningMessage(
      `rbee: the host key of ${k.alias} (${k.host}:${k.port}) is not known.`,
      {
        modal: true,
        detail: `${k.keyType} key fingerprint ${k.fingerprint}.${other}\nCheck it with the machine's owner. If trusted, it is added to ${k.knownHostsFile}.`,
      },
      trust,
    );
    return choice === trust;
  },
  async askPassphrase(r: PassphraseRequest): Promise<string | undefined> {
    return vscode.window.showInputBox({
      title: `rbee: SSH key for ${r.alias}`,
      prompt: `${r.attempt > 1 ? "Wrong passphrase. " : ""}Passphrase for ${r.keyPath}`,
      password: true,
      ignoreFocusOut: true,
    });
  },
};
