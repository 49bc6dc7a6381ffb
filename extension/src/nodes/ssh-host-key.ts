// Host key verification, as OpenSSH does it: the key the node presents is checked against
// known_hosts before any credential is sent; an unknown key is accepted only by the caller's policy
// (flag, StrictHostKeyChecking, or a person asked), a changed or revoked one never.

import { NodeError } from "./errors";
import { checkHostKey, knownHostName, knownKeyTypes, recordHostKey, type HostKeyCheck } from "./known-hosts";
import type { SshNodeSpec } from "./ssh-config";
import type { SshConnectOptions, UnknownHostKey } from "./ssh-options";

/** Host key algorithms ssh2 supports, in its default preference. */
const HOST_KEY_ALGORITHMS = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
] as const;

export async function verifyHostKey(spec: SshNodeSpec, opts: SshConnectOptions, key: Buffer): Promise<void> {
  const name = spec.hostKeyAlias ?? spec.hostname;
  // With HostKeyAlias, OpenSSH records the alias without a port.
  const port = spec.hostKeyAlias ? 22 : spec.port;
  const files = [...spec.userKnownHostsFiles, ...spec.globalKnownHostsFiles];
  let check: HostKeyCheck;
  try {
    check = checkHostKey(files, name, port, key);
  } catch (err) {
    throw new NodeError(
      "SSH_FAILED",
      `cannot check the host key of ${spec.alias}: ${(err as Error).message}`,
      { alias: spec.alias },
      { cause: err },
    );
  }
  const where = knownHostName(name, port);
  switch (check.status) {
    case "match":
      return;
    case "revoked":
      throw new NodeError(
        "SSH_HOST_KEY_REVOKED",
        `the host key of ${spec.alias} (${check.keyType} ${check.fingerprint}) is marked @revoked in ${check.file}:${check.line}; refusing to connect`,
        { alias: spec.alias, fingerprint: check.fingerprint },
      );
    case "changed":
      throw new NodeError(
        "SSH_HOST_KEY_CHANGED",
        `HOST KEY CHANGED for ${spec.alias} (${where}): it now presents ${check.keyType} ${check.fingerprint}, but ${check.file}:${check.line} ` +
          `records ${check.knownFingerprints.join(", ")}. Someone may be intercepting the connection, or the host was reinstalled. ` +
          `If you trust the change, remove the old key with: ssh-keygen -R '${where}' -f ${check.file}`,
        {
          alias: spec.alias,
          fingerprint: check.fingerprint,
          known_fingerprints: check.knownFingerprints,
          file: check.file,
          line: check.line,
        },
      );
    case "unknown": {
      const recordTo = spec.userKnownHostsFiles[0];
      const question: UnknownHostKey = {
        alias: spec.alias,
        host: name,
        port,
        keyType: check.keyType,
        fingerprint: check.fingerprint,
        otherKeyTypes: check.otherKeyTypes,
        knownHostsFile: recordTo,
      };
      const policy = spec.strictHostKeyChecking;
      // A host known by other key types that now offers only a new one is not "new": it may be
      // someone in the middle who cannot present the recorded key. No blanket policy (the flag,
      // accept-new, "no") accepts that; only a person asked with the known types shown can.
      if (check.otherKeyTypes.length && opts.onUnknownHostKey === undefined)
        throw new NodeError(
          "SSH_HOST_KEY_CHANGED",
          `the host key of ${spec.alias} (${where}) is ${check.keyType} ${check.fingerprint}, but known_hosts records it only with ${check.otherKeyTypes.join(", ")} keys; ` +
            `refusing to connect: an attacker who cannot present the recorded key may offer another type. If the node really changed its keys, verify the new fingerprint on it and record it with: ssh ${spec.alias}`,
          {
            alias: spec.alias,
            fingerprint: check.fingerprint,
            key_type: check.keyType,
            known_key_types: check.otherKeyTypes,
          },
        );
      const accepted = check.otherKeyTypes.length
        ? policy !== "yes" && (await opts.onUnknownHostKey!(question))
        : opts.acceptNewHostKey === true ||
          policy === "accept-new" ||
          policy === "no" ||
          (opts.onUnknownHostKey !== undefined && policy !== "yes" && (await opts.onUnknownHostKey(question)));
      if (!accepted) {
        throw new NodeError(
          "SSH_HOST_KEY_UNKNOWN",
          `the host key of ${spec.alias} (${where}) is not in known_hosts: ${check.keyType} ${check.fingerprint}. ` +
            `Verify the fingerprint on the node (ssh-keygen -lf /etc/ssh/ssh_host_${check.keyType.replace(/^ssh-|-.*$/g, "")}_key.pub), ` +
            `then connect once with --accept-new-host-key (or ssh ${spec.alias}) to record it`,
          { alias: spec.alias, fingerprint: check.fingerprint, key_type: check.keyType },
        );
      }
      if (recordTo) {
        try {
          recordHostKey(recordTo, name, port, key, { hashed: spec.hashKnownHosts });
        } catch (err) {
          throw new NodeError(
            "SSH_FAILED",
            `cannot record the host key of ${spec.alias} in ${recordTo}: ${(err as Error).message}`,
            { alias: spec.alias },
            { cause: err },
          );
        }
      }
      opts.log?.(`ssh ${spec.alias}: recorded new host key ${check.keyType} ${check.fingerprint} in ${recordTo}`);
      return;
    }
  }
}

export function knownHostKeyTypes(spec: SshNodeSpec): string[] {
  const name = spec.hostKeyAlias ?? spec.hostname;
  return knownKeyTypes(
    [...spec.userKnownHostsFiles, ...spec.globalKnownHostsFiles],
    name,
    spec.hostKeyAlias ? 22 : spec.port,
  );
}

/** Prefers the host key types known_hosts has for this host, so a known host verifies (as OpenSSH does). */
export function hostKeyPreference(knownTypes: string[]): string[] {
  const preferred: string[] = [];
  for (const t of knownTypes) {
    const algos = t === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [t];
    for (const a of algos)
      if ((HOST_KEY_ALGORITHMS as readonly string[]).includes(a) && !preferred.includes(a)) preferred.push(a);
  }
  return [...preferred, ...HOST_KEY_ALGORITHMS.filter((a) => !preferred.includes(a))];
}
