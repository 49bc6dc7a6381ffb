// One deploy at a time per node, across processes and machines: a lock folder under ~/.rbee (mkdir
// is atomic everywhere; flock is not on macOS) holding the owner's random token. The holder touches
// it every 20 s; a lock not touched for 2 minutes is a crashed deploy's and is broken. Only the
// owner removes it.

import { randomBytes } from "node:crypto";
import type { SshConnection } from "./connection";
import type { DeployContext } from "./deploy-types";
import { NodeError } from "./errors";
import { runScript } from "./remote-scripts";

/** A held deploy lock: its owner token (also names this deployer's temp folders). */
export interface DeployLock {
  owner: string;
  /** Set when another deployer broke the lock (we stopped refreshing it): stop before touching anything live. */
  lost: boolean;
}

export const LOCK_REFRESH_MS = 20_000;
/** A lock whose owner file was not refreshed for this long belongs to a crashed deploy. */
export const LOCK_STALE_MINUTES = 2;

/** Runs fn while holding the node's deploy lock; this deployer's temp folders go with the lock. */
export async function withDeployLock<T>(ctx: DeployContext, fn: (lock: DeployLock) => Promise<T>): Promise<T> {
  const { conn, emit } = ctx;
  const lock: DeployLock = { owner: randomBytes(12).toString("hex"), lost: false };
  const r = await runScript(conn, "lock-acquire", [lock.owner, LOCK_STALE_MINUTES], { timeoutMs: 11 * 60_000 });
  if (r.code !== 0) {
    throw new NodeError(
      "REMOTE_COMMAND_FAILED",
      `another deploy to ${conn.alias} has held ~/.rbee/deploy.lock for 10 minutes; if none runs, remove that folder on the node`,
      { alias: conn.alias },
    );
  }
  if (r.stdout.includes("waiting"))
    emit({ step: "probe", status: "warning", message: `waited for another deploy to ${conn.alias} to finish` });
  if (r.stdout.includes("broke=stale"))
    emit({
      step: "probe",
      status: "warning",
      message: `removed a deploy lock on ${conn.alias} left by a deploy that stopped`,
    });
  const refresh = setInterval(() => {
    runScript(conn, "lock-refresh", [lock.owner])
      .then((x) => {
        if (x.stdout.includes("lost")) lock.lost = true;
      })
      .catch(() => {});
  }, LOCK_REFRESH_MS);
  refresh.unref?.();
  try {
    ctx.opts.signal?.throwIfAborted();
    return await fn(lock);
  } finally {
    clearInterval(refresh);
    await runScript(conn, "lock-release", [lock.owner]).catch(() => {});
  }
}

export function assertLockHeld(conn: SshConnection, lock: DeployLock): void {
  if (lock.lost) {
    throw new NodeError(
      "REMOTE_COMMAND_FAILED",
      `another deploy took over ~/.rbee/deploy.lock on ${conn.alias} while this one ran; nothing was changed, deploy again`,
      { alias: conn.alias },
    );
  }
}
