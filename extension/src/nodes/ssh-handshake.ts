// One SSH connect attempt, as three steps under one deadline: a byte stream to the node's SSH port
// (TCP, or a channel through the ProxyJump hop), the ssh2 handshake with the host key checked and
// the user authenticated, and the first pty session that makes sshd treat the connection as
// interactive. Every failure becomes a NodeError that says what to check.

import { lookup } from "node:dns/promises";
import net from "node:net";
import type { Duplex } from "node:stream";
import { Client, type AnyAuthMethod } from "ssh2";
import { errorCode } from "@rbee/hive-agent/util/coded-error";
import { NodeError, isNodeError } from "./errors";
import { AuthSequence } from "./ssh-auth";
import type { SshNodeSpec } from "./ssh-config";
import { Deadline } from "./deadline";
import { hostKeyPreference, knownHostKeyTypes, verifyHostKey } from "./ssh-host-key";
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_KEEPALIVE_COUNT,
  DEFAULT_KEEPALIVE_MS,
  describeSpec,
  type SshConnectOptions,
} from "./ssh-options";

/** What a connect attempt needs from the pooled connection: its hop's connection, when behind a ProxyJump. */
export interface JumpHop {
  readonly alias: string;
  forwardOut(host: string, port: number): Promise<Duplex>;
}

/**
 * One connect attempt: socket, handshake with host key check, authentication, all within the
 * connect timeout (paused while a callback waits for a person). On failure nothing is left open.
 */
export async function connectOnce(spec: SshNodeSpec, opts: SshConnectOptions, jump?: JumpHop): Promise<Client> {
  const timeoutMs = opts.connectTimeoutMs ?? spec.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const client = new Client();
  let sock: Duplex | undefined;
  let finished = false;
  // The deadline rejects `expired`, which every step below races against.
  let expire!: (err: NodeError) => void;
  const expired = new Promise<never>((_, reject) => (expire = reject));
  expired.catch(() => {}); // only ever observed through the races
  const deadline = new Deadline(timeoutMs, () =>
    expire(
      new NodeError(
        "SSH_TIMEOUT",
        `SSH to ${spec.alias} (${describeSpec(spec)}) timed out after ${timeoutMs / 1000} s; check that the host is up and reachable, or raise ConnectTimeout`,
        { alias: spec.alias, timeout_ms: timeoutMs },
      ),
    ),
  );
  try {
    const opening = openSocket(spec, opts, timeoutMs, jump);
    // A socket that arrives after the attempt failed is closed at once.
    opening.then(
      (s) => finished && s.destroy(),
      () => {},
    );
    sock = await Promise.race([opening, expired]);
    await Promise.race([handshake(client, sock, spec, opts, deadline), expired]);
    return client;
  } catch (err) {
    client.removeAllListeners("ready");
    client.on("error", () => {}); // late errors of an abandoned attempt
    client.destroy();
    sock?.destroy();
    throw err;
  } finally {
    finished = true;
    deadline.clear();
  }
}

/** The ssh2 handshake on an open socket; resolves when the client is ready. */
function handshake(
  client: Client,
  sock: Duplex,
  spec: SshNodeSpec,
  opts: SshConnectOptions,
  deadline: Deadline,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    // Why the server side ended the handshake, as found by our host key check or authentication;
    // ssh2's own error for it says less.
    let verdict: NodeError | undefined;
    client.once("ready", () => resolve());
    client.on("error", (err: Error & { level?: string; code?: string }) =>
      reject(verdict ?? mapClientError(spec, err)),
    );
    client.on("close", () =>
      reject(
        verdict ??
          new NodeError(
            "SSH_FAILED",
            `${spec.alias} closed the SSH connection during the handshake; see the node's sshd log`,
            { alias: spec.alias },
          ),
      ),
    );

    const auth = new AuthSequence(spec, opts, deadline);
    const hostVerifier = (key: Buffer, verify: (ok: boolean) => void) => {
      deadline.pause();
      verifyHostKey(spec, opts, key)
        .then(
          () => true,
          (err: NodeError) => ((verdict = err), false),
        )
        .then((ok) => {
          deadline.resume();
          verify(ok);
        });
    };
    const authHandler = (_methodsLeft: unknown, _partial: unknown, next: (m: AnyAuthMethod | false) => void) => {
      auth.next().then(
        (method) => {
          if (method === false) verdict = auth.failure();
          next(method);
        },
        (err: unknown) => {
          verdict = isNodeError(err) ? err : new NodeError("SSH_AUTH_FAILED", String(err), { alias: spec.alias });
          next(false);
        },
      );
    };
    try {
      client.connect({
        sock,
        username: spec.user,
        readyTimeout: 0, // our own deadline, which pauses while a callback waits for the user
        keepaliveInterval: opts.keepaliveIntervalMs ?? spec.serverAliveIntervalMs ?? DEFAULT_KEEPALIVE_MS,
        keepaliveCountMax: opts.keepaliveCountMax ?? spec.serverAliveCountMax ?? DEFAULT_KEEPALIVE_COUNT,
        algorithms: { serverHostKey: hostKeyPreference(knownHostKeyTypes(spec)) as any },
        hostVerifier,
        authHandler: authHandler as any,
      });
    } catch (err) {
      reject(
        new NodeError(
          "SSH_FAILED",
          `SSH to ${spec.alias} could not start: ${(err as Error).message}`,
          { alias: spec.alias },
          { cause: err },
        ),
      );
    }
  });
}

/** A connected byte stream to the node's SSH port: TCP, or a channel through the jump host. */
async function openSocket(
  spec: SshNodeSpec,
  opts: SshConnectOptions,
  timeoutMs: number,
  jump?: JumpHop,
): Promise<Duplex> {
  if (jump) {
    try {
      return await jump.forwardOut(spec.hostname, spec.port);
    } catch (err) {
      if (isNodeError(err, "SSH_CHANNEL_FAILED")) {
        throw new NodeError(
          "SSH_CONNECTION_REFUSED",
          `jump host ${jump.alias} could not reach ${spec.hostname}:${spec.port} for ${spec.alias}: ${err.message}`,
          { alias: spec.alias, jump: jump.alias },
          { cause: err },
        );
      }
      throw err;
    }
  }
  let address: string;
  try {
    const resolveHost = opts.resolveHost ?? (async (h: string) => (await lookup(h)).address);
    address = net.isIP(spec.hostname) ? spec.hostname : await resolveHost(spec.hostname);
  } catch (err) {
    throw new NodeError(
      "SSH_DNS_FAILED",
      `cannot resolve host name "${spec.hostname}" of ${spec.alias} (${errorCode(err) ?? err}); check HostName in ~/.ssh/config and your DNS`,
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

/**
 * Runs `true` on a pty as the connection's first session, so sshd marks the connection
 * interactive (TCP_NODELAY, low-delay QoS). Best effort: a node that refuses ptys (PermitTTY no)
 * just keeps Nagle on.
 */
export function requestInteractive(client: Client): Promise<void> {
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

function mapClientError(spec: SshNodeSpec, err: Error & { level?: string; code?: string | number }): NodeError {
  if (err.level === "client-authentication") {
    return new NodeError(
      "SSH_AUTH_FAILED",
      `SSH authentication to ${spec.alias} (${describeSpec(spec)}) failed: ${err.message}`,
      { alias: spec.alias },
    );
  }
  if (err.level === "client-timeout") {
    return new NodeError("SSH_TIMEOUT", `SSH to ${spec.alias} timed out: ${err.message}`, { alias: spec.alias });
  }
  if (err.level === "client-socket" && typeof err.code === "string") {
    return socketError(spec, spec.hostname, err as NodeJS.ErrnoException);
  }
  return new NodeError(
    "SSH_FAILED",
    `SSH to ${spec.alias} (${describeSpec(spec)}) failed: ${err.message}`,
    { alias: spec.alias },
    { cause: err },
  );
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
      return new NodeError(
        "SSH_TIMEOUT",
        `TCP connect to ${spec.alias} (${at}) timed out; check that the host is up`,
        { alias: spec.alias },
        { cause: err },
      );
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return new NodeError(
        "SSH_CONNECTION_REFUSED",
        `${spec.alias} (${at}) is unreachable (${err.code}); check the network route to it`,
        { alias: spec.alias },
        { cause: err },
      );
    case "ECONNRESET":
    case "EPIPE":
      return new NodeError(
        "SSH_FAILED",
        `${spec.alias} (${at}) reset the connection during the SSH handshake`,
        { alias: spec.alias },
        { cause: err },
      );
    default:
      return new NodeError(
        "SSH_FAILED",
        `connection to ${spec.alias} (${at}) failed: ${err.message}`,
        { alias: spec.alias },
        { cause: err },
      );
  }
}
