// One shared SSH connection per node (ssh2), opened lazily and reopened on the next use after
// it drops. Authentication follows OpenSSH: ssh-agent keys, then the identity files (encrypted
// ones through a passphrase callback). Host keys are verified against known_hosts before any
// credential is sent. Every failure is a NodeError whose code tells auth, timeout, DNS, refusal,
// unknown and changed host keys apart, with a message that says what to do.

import { EventEmitter } from "node:events";
import { lookup } from "node:dns/promises";
import net from "node:net";
import { Duplex } from "node:stream";
import { readFileSync } from "node:fs";
import { Client, OpenSSHAgent, utils, type AnyAuthMethod, type ClientChannel, type IdentityCallback, type ParsedKey, type SFTPWrapper } from "ssh2";
import { retry, sleep } from "@rbee/hive-agent/util/retry";
import { NodeError, isNodeError } from "./errors";
import { checkHostKey, knownHostName, knownKeyTypes, recordHostKey, type HostKeyCheck } from "./known-hosts";
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
const DEFAULT_KEEPALIVE_MS = 15_000;
const DEFAULT_KEEPALIVE_COUNT = 3;

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

/**
 * Runs `true` on a pty as the connection's first session, so sshd marks the connection
 * interactive (TCP_NODELAY, low-delay QoS). Best effort: a node that refuses ptys (PermitTTY no)
 * just keeps Nagle on.
 */
function requestInteractive(client: Client): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 5000);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    try {
      client.exec("true", { pty: true }, (err, ch) => {
        if (err) return done();
        ch.on("close", done);
        ch.resume();
        ch.stderr.resume();
      });
    } catch {
      done();
    }
  });
}

/** "user@host:port (via jump)" for messages. */
export function describeSpec(spec: SshNodeSpec): string {
  const via = spec.proxyJump ? ` via ${spec.proxyJump.alias}` : "";
  return `${spec.user}@${spec.hostname}:${spec.port}${via}`;
}

export class SshConnection extends EventEmitter {
  private client?: Client;
  private connecting?: Promise<Client>;
  private readonly channels = new Set<Duplex>();
  private closedByUs = false;

  constructor(
    readonly spec: SshNodeSpec,
    private readonly opts: SshConnectOptions,
    /** The connection to the previous ProxyJump hop (shared through the pool). */
    private readonly jumpConnection?: SshConnection,
  ) {
    super();
  }

  get alias(): string {
    return this.spec.alias;
  }

  get isConnected(): boolean {
    return this.client !== undefined;
  }

  /** The live ssh2 client, connecting (with retries) when there is none. */
  connect(): Promise<Client> {
    if (this.client) return Promise.resolve(this.client);
    this.connecting ??= this.connectWithRetries().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** Runs a command through the remote user's shell and collects its output. */
  async exec(command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const channel = await this.openExec(command);
    const max = opts.maxOutputBytes ?? 16 * 1024 * 1024;
    return new Promise<ExecResult>((resolve, reject) => {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let outLen = 0;
      let errLen = 0;
      let code: number | null | undefined;
      let signal: string | undefined;
      let timer: NodeJS.Timeout | undefined;
      if (opts.timeoutMs) {
        timer = setTimeout(() => {
          failChannel(channel, new NodeError("REMOTE_COMMAND_FAILED", `command on ${this.alias} did not finish in ${opts.timeoutMs} ms: ${short(command)}`));
        }, opts.timeoutMs);
      }
      channel.on("exit", (c: number | null, s?: string) => {
        code = c;
        signal = s ?? undefined;
      });
      channel.on("error", (e: Error) => {
        clearTimeout(timer);
        reject(e);
      });
      channel.on("data", (d: Buffer) => {
        if (outLen < max) out.push(d);
        outLen += d.length;
      });
      channel.stderr.on("data", (d: Buffer) => {
        if (errLen < max) err.push(d);
        errLen += d.length;
      });
      // ssh2 passes the exit status to 'close' as well; 'exit' may have fired before we listened.
      channel.on("close", (c?: number | null, s?: string) => {
        clearTimeout(timer);
        if (c !== undefined) {
          code = c;
          signal = s ?? undefined;
        }
        if (code === undefined) {
          reject(this.lostError(`while running: ${short(command)}`));
          return;
        }
        resolve({ code, signal, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") });
      });
      if (opts.stdin !== undefined) channel.end(opts.stdin);
      else channel.end();
    });
  }

  /** Like exec(), but a non-zero exit is a REMOTE_COMMAND_FAILED naming what was being done. */
  async execChecked(command: string, what: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const r = await this.exec(command, opts);
    if (r.code !== 0) {
      const tail = (r.stderr.trim() || r.stdout.trim()).split("\n").slice(-10).join("\n");
      throw new NodeError(
        "REMOTE_COMMAND_FAILED",
        `${what} on ${this.alias} failed (exit ${r.code ?? r.signal}): ${tail || "no output"}`,
        { alias: this.alias, exit_code: r.code, stderr: r.stderr.slice(-4000) },
      );
    }
    return r;
  }

  /** A command's live channel (stdout is the stream; for `tail -f` and the like). */
  async execStream(command: string): Promise<ClientChannel> {
    return this.openExec(command);
  }

  /** A TCP connection from the node to host:port on the node's side (ssh2 direct-tcpip). */
  async forwardOut(host: string, port: number): Promise<Duplex> {
    const client = await this.connect();
    const channel = await new Promise<ClientChannel>((resolve, reject) => {
      try {
        client.forwardOut("127.0.0.1", 0, host, port, (err, ch) => (err ? reject(this.channelError(err, `a connection to ${host}:${port}`)) : resolve(ch)));
      } catch (err) {
        reject(this.lostError(`opening a connection to ${host}:${port}`, err));
      }
    });
    const stream = new ChannelStream(channel, () => this.lostError(`(connection to ${host}:${port} on the node)`));
    this.track(stream);
    return stream;
  }

  /** A connection to a Unix socket on the node (OpenSSH's direct-streamlocal@openssh.com). */
  async forwardOutSocket(socketPath: string): Promise<Duplex> {
    const client = await this.connect();
    const channel = await new Promise<ClientChannel>((resolve, reject) => {
      try {
        client.openssh_forwardOutStreamLocal(socketPath, (err, ch) => (err ? reject(this.channelError(err, `a connection to ${socketPath}`)) : resolve(ch)));
      } catch (err) {
        reject(this.lostError(`opening a connection to ${socketPath}`, err));
      }
    });
    const stream = new ChannelStream(channel, () => this.lostError(`(connection to ${socketPath} on the node)`));
    this.track(stream);
    return stream;
  }

  async sftp(): Promise<SFTPWrapper> {
    const client = await this.connect();
    const sftp = await new Promise<SFTPWrapper>((resolve, reject) => {
      try {
        client.sftp((err, s) => (err ? reject(this.channelError(err, "an SFTP session")) : resolve(s)));
      } catch (err) {
        reject(this.lostError("opening SFTP", err));
      }
    });
    return sftp;
  }

  /** Closes the connection; a later call reconnects. */
  close(): void {
    const c = this.client;
    if (!c) return;
    this.closedByUs = true;
    c.end();
  }

  // -------------------------------------------------------------------------------------------

  private async openExec(command: string): Promise<ClientChannel> {
    const client = await this.connect();
    const channel = await new Promise<ClientChannel>((resolve, reject) => {
      try {
        client.exec(command, (err, ch) => (err ? reject(this.channelError(err, "a command session")) : resolve(ch)));
      } catch (err) {
        reject(this.lostError(`running: ${short(command)}`, err));
      }
    });
    this.track(channel);
    return channel;
  }

  private track(channel: Duplex): void {
    this.channels.add(channel);
    channel.once("close", () => this.channels.delete(channel));
  }

  private lostError(during?: string, cause?: unknown): NodeError {
    return new NodeError(
      "SSH_CONNECTION_LOST",
      `the SSH connection to ${this.alias} (${describeSpec(this.spec)}) was lost${during ? " " + during : ""}; the next request reconnects`,
      { alias: this.alias },
      { cause },
    );
  }

  private channelError(err: Error & { reason?: number }, what: string): NodeError {
    const hint =
      err.reason === 1
        ? "; the node's sshd does not allow it (rbee needs AllowStreamLocalForwarding yes, OpenSSH's default, in its sshd_config; AllowTcpForwarding yes for raw port forwarding)"
        : err.reason === 2
          ? "; nothing answered at that address on the node"
          : "";
    return new NodeError("SSH_CHANNEL_FAILED", `${this.alias} refused ${what}: ${err.message}${hint}`, { alias: this.alias, reason: err.reason });
  }

  private async connectWithRetries(): Promise<Client> {
    const delays = this.opts.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
    // delays[i] is the wait before try i: the first one before any try, the rest between tries.
    await sleep(delays[0] ?? 0);
    return retry(
      async () => {
        try {
          const client = await this.attempt();
          let closed = false;
          client.once("close", () => (closed = true));
          if (this.opts.lowLatency ?? true) await requestInteractive(client);
          if (closed) throw this.lostError("right after connecting");
          this.adopt(client);
          return client;
        } catch (err) {
          throw isNodeError(err) ? err : new NodeError("SSH_FAILED", `SSH to ${this.alias} failed: ${(err as Error)?.message ?? err}`, { alias: this.alias }, { cause: err });
        }
      },
      { delaysMs: delays.slice(1) },
      {
        onRetry: (err, attempt) => this.opts.log?.(`ssh ${this.alias}: attempt ${attempt} of ${delays.length} failed (${(err as NodeError).code}): ${(err as NodeError).message}`),
      },
    );
  }

  /** A ready client becomes the shared one; its loss fails the channels still open on it. */
  private adopt(client: Client): void {
    this.client = client;
    this.closedByUs = false;
    let lastError: Error | undefined;
    client.on("error", (err: Error) => {
      lastError = err;
    });
    client.once("close", () => {
      if (this.client === client) this.client = undefined;
      const err = this.lostError(this.closedByUs ? "(closed by rbee)" : undefined, lastError);
      for (const ch of this.channels) failChannel(ch, err);
      this.channels.clear();
      this.emit("close", this.closedByUs ? undefined : err);
    });
  }

  /** One connect attempt: socket, handshake with host key check, authentication. */
  private attempt(): Promise<Client> {
    const spec = this.spec;
    const timeoutMs = this.opts.connectTimeoutMs ?? spec.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    return new Promise<Client>((resolve, reject) => {
      const client = new Client();
      let sock: Duplex | undefined;
      let settled = false;
      let verdict: NodeError | undefined; // set by the host key check or the auth handler
      const fail = (err: NodeError) => {
        if (settled) return;
        settled = true;
        deadline.clear();
        client.removeAllListeners("ready");
        client.on("error", () => {}); // late errors of an abandoned attempt
        client.destroy();
        sock?.destroy();
        reject(err);
      };
      const deadline = new Deadline(timeoutMs, () =>
        fail(
          new NodeError(
            "SSH_TIMEOUT",
            `SSH to ${spec.alias} (${describeSpec(spec)}) timed out after ${timeoutMs / 1000} s; check that the host is up and reachable, or raise ConnectTimeout`,
            { alias: spec.alias, timeout_ms: timeoutMs },
          ),
        ),
      );

      client.once("ready", () => {
        if (settled) return;
        settled = true;
        deadline.clear();
        resolve(client);
      });
      client.on("error", (err: Error & { level?: string; code?: string }) => fail(verdict ?? this.mapClientError(err)));
      client.on("close", () =>
        fail(verdict ?? new NodeError("SSH_FAILED", `${spec.alias} closed the SSH connection during the handshake; see the node's sshd log`, { alias: spec.alias })),
      );

      this.openSocket(timeoutMs).then(
        (s) => {
          if (settled) {
            s.destroy();
            return;
          }
          sock = s;
          const auth = new AuthSequence(spec, this.opts, deadline);
          const knownTypes = knownHostKeyTypes(spec);
          try {
            client.connect({
              sock: s,
              username: spec.user,
              readyTimeout: 0, // our own deadline, which pauses while a callback waits for the user
              keepaliveInterval: this.opts.keepaliveIntervalMs ?? spec.serverAliveIntervalMs ?? DEFAULT_KEEPALIVE_MS,
              keepaliveCountMax: this.opts.keepaliveCountMax ?? spec.serverAliveCountMax ?? DEFAULT_KEEPALIVE_COUNT,
              algorithms: { serverHostKey: hostKeyPreference(knownTypes) as any },
              hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
                deadline.pause();
                this.verifyHostKey(key).then(
                  () => {
                    deadline.resume();
                    verify(true);
                  },
                  (err: NodeError) => {
                    deadline.resume();
                    verdict = err;
                    verify(false);
                  },
                );
              },
              authHandler: (_methodsLeft, _partial, next) => {
                auth.next().then(
                  (method) => {
                    if (method === false) verdict = auth.failure();
                    (next as unknown as (m: AnyAuthMethod | false) => void)(method);
                  },
                  (err: unknown) => {
                    verdict = isNodeError(err) ? err : new NodeError("SSH_AUTH_FAILED", String(err), { alias: spec.alias });
                    (next as unknown as (m: false) => void)(false);
                  },
                );
              },
            });
          } catch (err) {
            fail(new NodeError("SSH_FAILED", `SSH to ${spec.alias} could not start: ${(err as Error).message}`, { alias: spec.alias }, { cause: err }));
          }
        },
        (err: NodeError) => fail(err),
      );
    });
  }

  /** A connected byte stream to the node's SSH port: TCP, or a channel through the jump host. */
  private async openSocket(timeoutMs: number): Promise<Duplex> {
    const spec = this.spec;
    if (this.jumpConnection) {
      try {
        return await this.jumpConnection.forwardOut(spec.hostname, spec.port);
      } catch (err) {
        if (isNodeError(err, "SSH_CHANNEL_FAILED")) {
          throw new NodeError(
            "SSH_CONNECTION_REFUSED",
            `jump host ${this.jumpConnection.alias} could not reach ${spec.hostname}:${spec.port} for ${spec.alias}: ${err.message}`,
            { alias: spec.alias, jump: this.jumpConnection.alias },
            { cause: err },
          );
        }
        throw err;
      }
    }
    let address: string;
    try {
      const resolveHost = this.opts.resolveHost ?? (async (h: string) => (await lookup(h)).address);
      address = net.isIP(spec.hostname) ? spec.hostname : await resolveHost(spec.hostname);
    } catch (err: any) {
      throw new NodeError(
        "SSH_DNS_FAILED",
        `cannot resolve host name "${spec.hostname}" of ${spec.alias} (${err?.code ?? err}); check HostName in ~/.ssh/config and your DNS`,
        { alias: spec.alias, hostname: spec.hostname },
        { cause: err },
      );
    }
    return new Promise<Duplex>((resolve, reject) => {
      const sock = net.connect({ host: address, port: spec.port });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(
          new NodeError(
            "SSH_TIMEOUT",
            `TCP connect to ${spec.alias} (${address}:${spec.port}) timed out after ${timeoutMs / 1000} s; check that the host is up and the port is right`,
            { alias: spec.alias, timeout_ms: timeoutMs },
          ),
        );
      }, timeoutMs);
      sock.once("connect", () => {
        clearTimeout(timer);
        sock.removeAllListeners("error");
        sock.setNoDelay(true);
        resolve(sock);
      });
      sock.once("error", (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(socketError(spec, address, err));
      });
    });
  }

  private async verifyHostKey(key: Buffer): Promise<void> {
    const spec = this.spec;
    const name = spec.hostKeyAlias ?? spec.hostname;
    // With HostKeyAlias, OpenSSH records the alias without a port.
    const port = spec.hostKeyAlias ? 22 : spec.port;
    const files = [...spec.userKnownHostsFiles, ...spec.globalKnownHostsFiles];
    let check: HostKeyCheck;
    try {
      check = checkHostKey(files, name, port, key);
    } catch (err) {
      throw new NodeError("SSH_FAILED", `cannot check the host key of ${spec.alias}: ${(err as Error).message}`, { alias: spec.alias }, { cause: err });
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
          { alias: spec.alias, fingerprint: check.fingerprint, known_fingerprints: check.knownFingerprints, file: check.file, line: check.line },
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
        if (check.otherKeyTypes.length && this.opts.onUnknownHostKey === undefined)
          throw new NodeError(
            "SSH_HOST_KEY_CHANGED",
            `the host key of ${spec.alias} (${where}) is ${check.keyType} ${check.fingerprint}, but known_hosts records it only with ${check.otherKeyTypes.join(", ")} keys; ` +
              `refusing to connect: an attacker who cannot present the recorded key may offer another type. If the node really changed its keys, verify the new fingerprint on it and record it with: ssh ${spec.alias}`,
            { alias: spec.alias, fingerprint: check.fingerprint, key_type: check.keyType, known_key_types: check.otherKeyTypes },
          );
        const accepted = check.otherKeyTypes.length
          ? policy !== "yes" && (await this.opts.onUnknownHostKey!(question))
          : this.opts.acceptNewHostKey === true ||
            policy === "accept-new" ||
            policy === "no" ||
            (this.opts.onUnknownHostKey !== undefined && policy !== "yes" && (await this.opts.onUnknownHostKey(question)));
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
            throw new NodeError("SSH_FAILED", `cannot record the host key of ${spec.alias} in ${recordTo}: ${(err as Error).message}`, { alias: spec.alias }, { cause: err });
          }
        }
        this.opts.log?.(`ssh ${spec.alias}: recorded new host key ${check.keyType} ${check.fingerprint} in ${recordTo}`);
        return;
      }
    }
  }

  private mapClientError(err: Error & { level?: string; code?: string | number }): NodeError {
    const spec = this.spec;
    if (err.level === "client-authentication") {
      return new NodeError("SSH_AUTH_FAILED", `SSH authentication to ${spec.alias} (${describeSpec(spec)}) failed: ${err.message}`, { alias: spec.alias });
    }
    if (err.level === "client-timeout") {
      return new NodeError("SSH_TIMEOUT", `SSH to ${spec.alias} timed out: ${err.message}`, { alias: spec.alias });
    }
    if (err.level === "client-socket" && typeof err.code === "string") {
      return socketError(spec, spec.hostname, err as NodeJS.ErrnoException);
    }
    return new NodeError("SSH_FAILED", `SSH to ${spec.alias} (${describeSpec(spec)}) failed: ${err.message}`, { alias: spec.alias }, { cause: err });
  }
}

function socketError(spec: SshNodeSpec, address: string, err: NodeJS.ErrnoException): NodeError {
  const at = `${address}:${spec.port}`;
  switch (err.code) {
    case "ECONNREFUSED":
      return new NodeError(
        "SSH_CONNECTION_REFUSED",
        `connection to ${spec.alias} (${at}) refused: no SSH server listens there; check Port in ~/.ssh/config and that sshd runs on the node`,
        { alias: spec.alias },
        { cause: err },
      );
    case "ETIMEDOUT":
      return new NodeError("SSH_TIMEOUT", `TCP connect to ${spec.alias} (${at}) timed out; check that the host is up`, { alias: spec.alias }, { cause: err });
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return new NodeError("SSH_CONNECTION_REFUSED", `${spec.alias} (${at}) is unreachable (${err.code}); check the network route to it`, { alias: spec.alias }, { cause: err });
    case "ECONNRESET":
    case "EPIPE":
      return new NodeError("SSH_FAILED", `${spec.alias} (${at}) reset the connection during the SSH handshake`, { alias: spec.alias }, { cause: err });
    default:
      return new NodeError("SSH_FAILED", `connection to ${spec.alias} (${at}) failed: ${err.message}`, { alias: spec.alias }, { cause: err });
  }
}

function knownHostKeyTypes(spec: SshNodeSpec): string[] {
  const name = spec.hostKeyAlias ?? spec.hostname;
  return knownKeyTypes([...spec.userKnownHostsFiles, ...spec.globalKnownHostsFiles], name, spec.hostKeyAlias ? 22 : spec.port);
}

/** Prefers the host key types known_hosts has for this host, so a known host verifies (as OpenSSH does). */
function hostKeyPreference(knownTypes: string[]): string[] {
  const preferred: string[] = [];
  for (const t of knownTypes) {
    const algos = t === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [t];
    for (const a of algos) if ((HOST_KEY_ALGORITHMS as readonly string[]).includes(a) && !preferred.includes(a)) preferred.push(a);
  }
  return [...preferred, ...HOST_KEY_ALGORITHMS.filter((a) => !preferred.includes(a))];
}

/**
 * The authentication methods to offer, in OpenSSH's order: the agent's keys (only those matching
 * an IdentityFile when IdentitiesOnly is set), then each identity file. Encrypted files are
 * decrypted with a passphrase from the callback (up to three tries). Notes explain a failure.
 */
class AuthSequence {
  private readonly steps: (() => Promise<AnyAuthMethod | undefined>)[] = [];
  private readonly tried: string[] = [];
  private readonly notes: string[] = [];

  constructor(
    private readonly spec: SshNodeSpec,
    private readonly opts: SshConnectOptions,
    private readonly deadline: Deadline,
  ) {
    const agentPath = spec.identityAgent === null ? undefined : (spec.identityAgent ?? opts.agentSocket ?? process.env.SSH_AUTH_SOCK);
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
    } catch (err: any) {
      if (this.spec.identityFilesConfigured) this.notes.push(`${file}: ${err?.code === "ENOENT" ? "no such file" : err?.message}`);
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
      this.notes.push(`${file} is encrypted and no passphrase can be asked here; load it into ssh-agent (ssh-add ${file})`);
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
      cb(err, keys.filter((k) => "getPublicSSH" in k && this.allowed.some((b) => b.equals(k.getPublicSSH()))));
    });
  }
}

/** A timeout that can be paused while we wait for a person. */
class Deadline {
  private timer?: NodeJS.Timeout;
  private remaining: number;
  private startedAt = 0;
  private done = false;

  constructor(
    ms: number,
    private readonly onExpire: () => void,
  ) {
    this.remaining = ms;
    this.resume();
  }
  pause(): void {
    if (!this.timer) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.remaining -= Date.now() - this.startedAt;
  }
  resume(): void {
    if (this.done || this.timer) return;
    this.startedAt = Date.now();
    this.timer = setTimeout(() => {
      this.done = true;
      this.onExpire();
    }, Math.max(0, this.remaining));
  }
  clear(): void {
    this.done = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * A forwarded TCP connection as a plain Node Duplex. ssh2 emits 'close' on its channels
 * synchronously when the connection dies, before any error could reach their users, so an HTTP
 * client on a bare channel would see a clean close mid-response. Over this wrapper it sees the
 * error SshConnection fails it with (SSH_CONNECTION_LOST). Chunks are passed on, not copied.
 */
class ChannelStream extends Duplex {
  constructor(
    private readonly channel: ClientChannel,
    lost: () => Error,
  ) {
    super({ allowHalfOpen: false });
    channel.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) channel.pause();
    });
    let ended = false;
    channel.on("end", () => {
      ended = true;
      this.push(null);
    });
    channel.on("error", (err: Error) => this.destroy(err));
    channel.on("close", () => {
      // A close without a clean end of data means the channel was cut.
      if (!ended && !this.destroyed) this.destroy(lost());
    });
  }
  override _read(): void {
    this.channel.resume();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.channel.write(chunk, cb);
  }
  override _final(cb: (err?: Error | null) => void): void {
    this.channel.end();
    cb();
  }
  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.channel.close();
    cb(err);
  }
}

/**
 * Ends a channel with an error its users see. ssh2's Channel.destroy() ignores its argument and
 * just closes, so a dropped connection would look like a clean end of stream; Node's own
 * destroy() emits the error (after ssh2's close() tells the node, if it can still hear).
 */
function failChannel(channel: Duplex, err: Error): void {
  if (channel.destroyed) return;
  const close = (channel as Partial<ClientChannel>).close;
  if (typeof close === "function") close.call(channel);
  Duplex.prototype.destroy.call(channel, err);
}


function short(command: string): string {
  return command.length > 120 ? command.slice(0, 117) + "..." : command;
}

/**
 * The shared connections: one per node alias, plus one per ProxyJump hop (keyed by where it
 * goes, so two nodes behind the same jump host share it).
 */
export class SshPool {
  private readonly byAlias = new Map<string, SshConnection>();
  private readonly hops = new Map<string, SshConnection>();

  constructor(
    /** Resolves an alias to its spec (normally SshConfigIndex.node). */
    private readonly resolve: (alias: string) => SshNodeSpec,
    private readonly opts: SshConnectOptions = {},
  ) {}

  /** The node's shared connection (not yet connected: it connects on first use). */
  get(alias: string): SshConnection {
    let conn = this.byAlias.get(alias);
    if (!conn) {
      const spec = this.resolve(alias);
      conn = new SshConnection(spec, this.opts, spec.proxyJump ? this.hop(spec.proxyJump) : undefined);
      this.byAlias.set(alias, conn);
    }
    return conn;
  }

  /** Closes every connection (hops last, so nothing is cut from under a node). */
  close(): void {
    for (const c of this.byAlias.values()) c.close();
    for (const c of this.hops.values()) c.close();
    this.byAlias.clear();
    this.hops.clear();
  }

  private hop(spec: SshNodeSpec): SshConnection {
    const key = hopKey(spec);
    let conn = this.hops.get(key);
    if (!conn) {
      conn = new SshConnection(spec, this.opts, spec.proxyJump ? this.hop(spec.proxyJump) : undefined);
      this.hops.set(key, conn);
    }
    return conn;
  }
}

function hopKey(spec: SshNodeSpec): string {
  return `${spec.user}@${spec.hostname}:${spec.port}` + (spec.proxyJump ? ` via ${hopKey(spec.proxyJump)}` : "");
}
