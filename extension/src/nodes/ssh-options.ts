// What callers can set on an SSH connection (callbacks for host keys and passphrases, timeouts,
// retries, keep-alive) and what a remote command returns: the types every SSH module shares.

import type { SshNodeSpec } from "./ssh-config";

export interface UnknownHostKey {
  alias: string;
  host: string;
  port: number;
  keyType: string;
  /** `SHA256:…`, as `ssh` prints it. */
  fingerprint: string;
  /** Key types already known for this host (the server offered another one). */
  otherKeyTypes: string[];
  /** Where the key will be recorded if accepted. */
  knownHostsFile: string;
}

export interface PassphraseRequest {
  alias: string;
  keyPath: string;
  /** 1 for the first ask, 2+ after a wrong passphrase. */
  attempt: number;
}

export interface SshConnectOptions {
  /** Accept and record a host key that known_hosts does not have (the CLI's --accept-new-host-key). */
  acceptNewHostKey?: boolean;
  /** Asked when a host key is unknown and not accepted by flag; true accepts and records it. */
  onUnknownHostKey?: (key: UnknownHostKey) => Promise<boolean>;
  /** Asked for the passphrase of an encrypted identity file; undefined skips the key. */
  askPassphrase?: (req: PassphraseRequest) => Promise<string | undefined>;
  /** ssh-agent socket; default $SSH_AUTH_SOCK (an IdentityAgent in the config wins). */
  agentSocket?: string;
  /** TCP connect + handshake + authentication, not counting time spent in the callbacks above. */
  connectTimeoutMs?: number;
  /** Delay before each connect attempt; its length is the number of attempts. */
  retryDelaysMs?: number[];
  keepaliveIntervalMs?: number;
  keepaliveCountMax?: number;
  /**
   * Open one short pty session right after connecting (default true). OpenSSH's sshd decides at
   * a connection's first session whether it is interactive, and only then turns Nagle off; without
   * it, small response writes (SSE tokens) wait ~40 ms for our delayed ACK. Measured here: first
   * token over a forwarded channel 48 ms → 7 ms.
   */
  lowLatency?: boolean;
  /** Host name to address; default the system resolver (dns.lookup). */
  resolveHost?: (hostname: string) => Promise<string>;
  /** Diagnostics (never secrets). */
  log?: (line: string) => void;
}

export interface ExecResult {
  /** Exit status; null when the command died of a signal. */
  code: number | null;
  signal?: string;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Written to the command's stdin, which is then closed. */
  stdin?: string | Buffer;
  timeoutMs?: number;
  /** Each of stdout and stderr is cut beyond this (default 16 MiB). */
  maxOutputBytes?: number;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_RETRY_DELAYS_MS = [0, 200, 400];
export const DEFAULT_KEEPALIVE_MS = 15_000;
export const DEFAULT_KEEPALIVE_COUNT = 3;

/** "user@host:port (via jump)" for messages. */
export function describeSpec(spec: SshNodeSpec): string {
  const via = spec.proxyJump ? ` via ${spec.proxyJump.alias}` : "";
  return `${spec.user}@${spec.hostname}:${spec.port}${via}`;
}
