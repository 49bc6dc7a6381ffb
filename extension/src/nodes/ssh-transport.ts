// The keeper's Transport for a remote node: every HTTP connection undici opens is an ssh2 channel,
// carried by the node's one shared SSH connection: a stream-local channel
// (openssh_forwardOutStreamLocal) to the hive's or a worker's Unix socket in the node's hive home,
// or (raw use only) a direct-tcpip one. No local port is listened on and the node opens none.
//
// When the SSH connection drops, SshConnection destroys the channels in flight with an
// SSH_CONNECTION_LOST error, which undici hands to the requests and response streams using them;
// the next request opens a new channel, which reconnects.

import { streamTransport, type Transport, type TransportOptions } from "../keeper/transport";
import type { SshConnection } from "./connection";

export function sshTransport(connection: SshConnection, opts: TransportOptions = {}): Transport {
  return streamTransport(`ssh ${connection.alias}`, (host, port) => connection.forwardOut(host, port), {
    ...opts,
    openSocket: (socketPath) => connection.forwardOutSocket(socketPath),
  });
}
