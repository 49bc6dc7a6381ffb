// One shared SSH connection per node (ssh2), opened lazily and reopened on the next use after
// it drops, and the pool that hands them out (one per node alias, one per ProxyJump hop). The
// steps of a connect are in ssh-handshake.ts (socket, host key check in ssh-host-key.ts,
// authentication in ssh-auth.ts); channels on a connection in ssh-channels.ts. Every failure is a
// NodeError whose code tells auth, timeout, DNS, refusal, unknown and changed host keys apart.

import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import type { Client, ClientChannel, SFTPWrapper } from "ssh2";
import { retry, sleep } from "@rbee/hive-agent/util/retry";
import { NodeError, isNodeError } from "./errors";
import type { SshNodeSpec } from "./ssh-config";
import { ChannelStream, collectExec, failChannel, short } from "./ssh-channels";
import { connectOnce, requestInteractive } from "./ssh-handshake";
import {
  DEFAULT_RETRY_DELAYS_MS,
  describeSpec,
  type ExecOptions,
  type ExecResult,
  type SshConnectOptions,
} from "./ssh-options";

export type { ExecOptions, ExecResult, PassphraseRequest, SshConnectOptions, UnknownHostKey } from "./ssh-options";

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
    return collectExec(channel, command, this.alias, opts, (during) => this.lostError(during));
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
        client.forwardOut("127.0.0.1", 0, host, port, (err, ch) =>
          err ? reject(this.channelError(err, `a connection to ${host}:${port}`)) : resolve(ch),
        );
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
        client.openssh_forwardOutStreamLocal(socketPath, (err, ch) =>
          err ? reject(this.channelError(err, `a connection to ${socketPath}`)) : resolve(ch),
        );
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
    return new NodeError("SSH_CHANNEL_FAILED", `${this.alias} refused ${what}: ${err.message}${hint}`, {
      alias: this.alias,
      reason: err.reason,
    });
  }

  private async connectWithRetries(): Promise<Client> {
    const delays = this.opts.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
    // delays[i] is the wait before try i: the first one before any try, the rest between tries.
    await sleep(delays[0] ?? 0);
    return retry(
      async () => {
        try {
          const client = await connectOnce(this.spec, this.opts, this.jumpConnection);
          let closed = false;
          client.once("close", () => (closed = true));
          if (this.opts.lowLatency ?? true) await requestInteractive(client);
          if (closed) throw this.lostError("right after connecting");
          this.adopt(client);
          return client;
        } catch (err) {
          throw isNodeError(err)
            ? err
            : new NodeError(
                "SSH_FAILED",
                `SSH to ${this.alias} failed: ${(err as Error)?.message ?? err}`,
                { alias: this.alias },
                { cause: err },
              );
        }
      },
      { delaysMs: delays.slice(1) },
      {
        onRetry: (err, attempt) =>
          this.opts.log?.(
            `ssh ${this.alias}: attempt ${attempt} of ${delays.length} failed (${(err as NodeError).code}): ${(err as NodeError).message}`,
          ),
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
