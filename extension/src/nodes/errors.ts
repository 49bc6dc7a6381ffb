// Errors of the SSH side (discovery, connection, deploy). The hive protocol has its own codes
// (hive-agent/src/protocol.ts); these are the ones that happen before any HTTP reaches a node,
// so each says what went wrong and what the user can do about it.

import { CodedError, type CodedErrorOptions } from "@rbee/hive-agent/util/coded-error";

export const NODE_ERROR_CODES = [
  /** ~/.ssh/config cannot be read or has a value we cannot use. */
  "SSH_CONFIG_INVALID",
  /** The alias is not a concrete Host in the ssh config. */
  "NODE_UNKNOWN",
  /** The host name does not resolve. */
  "SSH_DNS_FAILED",
  /** Nothing listens on the SSH port (or the jump host could not reach it). */
  "SSH_CONNECTION_REFUSED",
  /** TCP connect, handshake or authentication took longer than the connect timeout. */
  "SSH_TIMEOUT",
  /** Every key (agent, identity files) was refused. */
  "SSH_AUTH_FAILED",
  /** The node's host key is not in known_hosts and nobody accepted it. */
  "SSH_HOST_KEY_UNKNOWN",
  /** The node's host key differs from the one in known_hosts (possible man-in-the-middle). */
  "SSH_HOST_KEY_CHANGED",
  /** The node's host key is marked @revoked in known_hosts. */
  "SSH_HOST_KEY_REVOKED",
  /** An established SSH connection dropped; work in flight on it failed. */
  "SSH_CONNECTION_LOST",
  /** The node refused a channel (exec, sftp or a port forward). */
  "SSH_CHANNEL_FAILED",
  /** Any other SSH protocol failure. */
  "SSH_FAILED",
  /** A remote command exited non-zero where success was required. */
  "REMOTE_COMMAND_FAILED",
  /** The node has no `node` on PATH, or one older than 20. */
  "NODE_JS_MISSING",
  /** The node's OS/CPU has no node-llama-cpp prebuilt we can install. */
  "UNSUPPORTED_PLATFORM",
  /** This machine lacks the files to deploy (bundle not built, node-llama-cpp not installed). */
  "DEPLOY_BUNDLE_MISSING",
  /** node-llama-cpp could not be installed on the node. */
  "RUNTIME_INSTALL_FAILED",
  /** The hive did not start or did not answer /v1/health. */
  "HIVE_START_FAILED",
  /** The hive is not deployed on the node. */
  "HIVE_NOT_DEPLOYED",
] as const;
export type NodeErrorCode = (typeof NODE_ERROR_CODES)[number];

/**
 * Whether trying again may help: the node was not reachable or the connection dropped for a moment.
 * Configuration, authentication, host keys and a deploy's own failures repeat until someone acts.
 */
export const NODE_ERROR_RETRIABLE: Record<NodeErrorCode, boolean> = {
  SSH_CONFIG_INVALID: false,
  NODE_UNKNOWN: false,
  SSH_DNS_FAILED: false,
  SSH_CONNECTION_REFUSED: true,
  SSH_TIMEOUT: true,
  SSH_AUTH_FAILED: false,
  SSH_HOST_KEY_UNKNOWN: false,
  SSH_HOST_KEY_CHANGED: false,
  SSH_HOST_KEY_REVOKED: false,
  SSH_CONNECTION_LOST: true,
  SSH_CHANNEL_FAILED: true,
  SSH_FAILED: true,
  REMOTE_COMMAND_FAILED: false,
  NODE_JS_MISSING: false,
  UNSUPPORTED_PLATFORM: false,
  DEPLOY_BUNDLE_MISSING: false,
  RUNTIME_INSTALL_FAILED: false,
  HIVE_START_FAILED: false,
  HIVE_NOT_DEPLOYED: false,
};

export class NodeError extends CodedError<NodeErrorCode> {
  constructor(code: NodeErrorCode, message: string, details?: Record<string, unknown>, options?: CodedErrorOptions) {
    super(code, message, details, options);
    this.name = "NodeError";
  }
  get retriable(): boolean {
    return NODE_ERROR_RETRIABLE[this.code];
  }
}

export function isNodeError(x: unknown, code?: NodeErrorCode): x is NodeError {
  return x instanceof NodeError && (code === undefined || x.code === code);
}
