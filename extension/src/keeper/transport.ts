// How the keeper reaches a node's hive and workers. They listen on Unix sockets inside the node's
// 0700 hive home: locally the keeper connects to the socket path, and for remote nodes it opens an
// SSH stream-local channel (ssh2 openssh_forwardOutStreamLocal) to it. Every HTTP call goes through
// a transport's dispatcher, so the client code is the same for both and no port is ever opened.
// Loopback TCP is only used where Unix sockets do not exist (a Windows local hive), and then the
// server proves it holds the key before anything is sent (hive-agent/src/util/server-proof.ts).

import { Agent, type Dispatcher } from "undici";
import type { Duplex } from "node:stream";
import { RbeeError, socketPathOf } from "@rbee/hive-agent/protocol";
import { provenSocket } from "@rbee/hive-agent/util/server-proof";

export interface Endpoint {
  /** The origin to put in request URLs (the host part is ignored on a socket). */
  origin: string;
  dispatcher: Dispatcher;
}

export interface Transport {
  /** undici dispatcher whose connections reach host:port on the node over TCP (raw use only). */
  readonly dispatcher: Dispatcher;
  /**
   * Where requests to `address` (`unix:<path>`, or `http://127.0.0.1:<port>` on a node without
   * sockets) go; `key` is what the server must prove it holds on a TCP connection.
   */
  endpoint(address: string, key: string): Endpoint;
  /** A short name for messages ("localhost", "ssh gpu1"). */
  readonly description: string;
  close(): Promise<void>;
}

export interface TransportOptions {
  connectTimeoutMs?: number;
  /** Keep-alive: how long an idle connection is kept for the next request. */
  keepAliveTimeoutMs?: number;
}

const SOCKET_ORIGIN = "http://localhost";

/** One dispatcher per address, made on first use, all closed together. */
function endpoints(make: (address: string, key: string) => Endpoint) {
  const cache = new Map<string, Endpoint>();
  return {
    endpoint(address: string, key: string): Endpoint {
      const id = `${address}\0${key}`;
      let e = cache.get(id);
      if (!e) cache.set(id, (e = make(address, key)));
      return e;
    },
    close: () => Promise.all([...cache.values()].map((e) => e.dispatcher.close())).then(() => cache.clear()),
  };
}

/** This machine: Unix sockets, or proven loopback TCP where there are none. */
export function loopbackTransport(opts: TransportOptions = {}): Transport {
  const timeout = opts.connectTimeoutMs ?? 5000;
  const keepAliveTimeout = opts.keepAliveTimeoutMs ?? 30_000;
  const dispatcher = new Agent({ connect: { timeout }, keepAliveTimeout, pipelining: 0 });
  const eps = endpoints((address, key) => {
    const socketPath = socketPathOf(address);
    if (socketPath !== undefined)
      return {
        origin: SOCKET_ORIGIN,
        dispatcher: new Agent({ connect: { socketPath, timeout }, keepAliveTimeout, pipelining: 0 }),
      };
    const u = tcpAddress(address);
    return {
      origin: u.origin,
      dispatcher: new Agent({
        keepAliveTimeout,
        pipelining: 0,
        connect: (_o, callback) => {
          provenSocket(Number(u.port), key, timeout).then(
            (s) => callback(null, s),
            (e) => callback(e, null),
          );
        },
      }),
    };
  });
  return {
    dispatcher,
    description: "localhost",
    endpoint: eps.endpoint,
    close: async () => void (await Promise.all([dispatcher.close(), eps.close()])),
  };
}

/**
 * A transport whose sockets come from functions (SSH channels on the node): `openTcp` for raw
 * TCP use, `openSocket` for the hive's and workers' Unix sockets. undici's `connect` option accepts
 * any Duplex in place of a TCP socket. A remote node's hive is always on a socket: TCP addresses are
 * refused (nodes reached over SSH are POSIX).
 */
export function streamTransport(
  description: string,
  openTcp: (host: string, port: number) => Promise<Duplex>,
  opts: TransportOptions & { openSocket?: (socketPath: string) => Promise<Duplex> } = {},
): Transport {
  const keepAliveTimeout = opts.keepAliveTimeoutMs ?? 30_000;
  const agent = (open: () => Promise<Duplex>) =>
    new Agent({
      keepAliveTimeout,
      pipelining: 0,
      connect: (_o, callback) => {
        open().then(
          (stream) => callback(null, stream as any),
          (err) => callback(err, null),
        );
      },
    });
  const dispatcher = new Agent({
    keepAliveTimeout,
    pipelining: 0,
    connect: (options, callback) => {
      openTcp(options.hostname, Number(options.port) || 80).then(
        (stream) => callback(null, stream as any),
        (err) => callback(err, null),
      );
    },
  });
  const eps = endpoints((address) => {
    const socketPath = socketPathOf(address);
    if (socketPath === undefined || !opts.openSocket)
      throw new RbeeError(
        "INVALID_REQUEST",
        `${description}: refusing to connect to ${address}; a node's hive and workers are reached on their Unix sockets only`,
      );
    const open = opts.openSocket;
    return { origin: SOCKET_ORIGIN, dispatcher: agent(() => open(socketPath)) };
  });
  return {
    dispatcher,
    description,
    endpoint: eps.endpoint,
    close: async () => void (await Promise.all([dispatcher.close(), eps.close()])),
  };
}

function tcpAddress(address: string): URL {
  let u: URL;
  try {
    u = new URL(address);
  } catch {
    throw new RbeeError("INVALID_REQUEST", `not an rbee address: ${address.slice(0, 200)}`);
  }
  if (u.protocol !== "http:" || u.hostname !== "127.0.0.1" || !u.port || u.pathname !== "/")
    throw new RbeeError(
      "INVALID_REQUEST",
      `refusing to connect to ${address.slice(0, 200)}: only unix:<path> or http://127.0.0.1:<port> are rbee addresses`,
    );
  return u;
}
