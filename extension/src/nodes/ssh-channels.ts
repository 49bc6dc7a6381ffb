// Channels on an SSH connection as Node sees them: a command's output collected into an ExecResult,
// a forwarded connection as a Duplex that fails with the connection's error (not a clean end) when
// the connection drops.

import { Duplex } from "node:stream";
import type { ClientChannel } from "ssh2";
import { NodeError } from "./errors";
import type { ExecOptions, ExecResult } from "./ssh-options";

/** Runs an opened exec channel to its end: stdout and stderr (each cut at maxOutputBytes), exit status or signal. */
export function collectExec(
  channel: ClientChannel,
  command: string,
  alias: string,
  opts: ExecOptions,
  lost: (during: string) => Error,
): Promise<ExecResult> {
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
        failChannel(
          channel,
          new NodeError(
            "REMOTE_COMMAND_FAILED",
            `command on ${alias} did not finish in ${opts.timeoutMs} ms: ${short(command)}`,
          ),
        );
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
        reject(lost(`while running: ${short(command)}`));
        return;
      }
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      });
    });
    if (opts.stdin !== undefined) channel.end(opts.stdin);
    else channel.end();
  });
}

/**
 * A forwarded TCP connection as a plain Node Duplex. ssh2 emits 'close' on its channels
 * synchronously when the connection dies, before any error could reach their users, so an HTTP
 * client on a bare channel would see a clean close mid-response. Over this wrapper it sees the
 * error SshConnection fails it with (SSH_CONNECTION_LOST). Chunks are passed on, not copied.
 */
export class ChannelStream extends Duplex {
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
export function failChannel(channel: Duplex, err: Error): void {
  if (channel.destroyed) return;
  const close = (channel as Partial<ClientChannel>).close;
  if (typeof close === "function") close.call(channel);
  Duplex.prototype.destroy.call(channel, err);
}

export function short(command: string): string {
  return command.length > 120 ? command.slice(0, 117) + "..." : command;
}
