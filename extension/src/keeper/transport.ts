// How the keeper reaches a node's hive and workers. Loopback for localhost; an SSH channel
// (ssh2 forwardOut) for remote nodes. Every HTTP call goes through a transport's dispatcher, so
// the client code is the same for both and no local port is ever opened for a remote node.

import { Agent, type Dispatcher } from "undici";
import type { Duplex } from "node:stream";

export interface Transport {
  /** undici dispatcher whose connections reach 127.0.0.1:<port> on the node. */
  readonly dispatcher: Dispatcher;
  /** A short name for messages ("localhost", "ssh gpu1"). */
  readonly description: string;
  close(): Promise<void>;
}

export interface TransportOptions {
  connectTimeoutMs?: number;
  /** Keep-alive: how long an idle connection is kept for the next request. */
  keepAliveTimeoutMs?: number;
}

/** Plain TCP on this machine. */
export function loopbackTransport(opts: TransportOptions = {}): Transport {
  const dispatcher = new Agent({
    connect: { timeout: opts.connectTimeoutMs ?? 5000 },
    keepAliveTimeout: opts.keepAliveTimeoutMs ?? 30_000,
    pipelining: 0,
  });
  return { dispatcher, description: "localhost", close: () => dispatcher.close() };
}

/**
 * A transport whose sockets come from a function (an SSH channel to host:port on the node).
 * undici's `connect` option accepts any Duplex in place of a TCP socket.
 */
export function streamTransport(
  description: string,
  openStream: (host: string, port: number) => Promise<Duplex>,
  opts: TransportOptions = {},
): Transport {
  const dispatcher = new Agent({
    keepAliveTimeout: opts.keepAliveTimeoutMs ?? 30_000,
    pipelining: 0,
    connect: (options, callback) => {
      openStream(options.hostname, Number(options.port) || 80).then(
        (stream) => callback(null, stream as any),
        (err) => callback(err, null),
      );
    },
  });
  return { dispatcher, description, close: () => dispatcher.close() };
}
