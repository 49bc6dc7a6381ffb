// A lock file shared by every process that writes the registry (VS Code windows, CLI runs).
//
// Taking the lock = creating `<registry>.lock` with O_EXCL; the file holds the owner's pid, host, start
// time and a random token. A lock is stale when its pid is gone (same host) or when it is older than
// `staleMs` (a registry write takes milliseconds, so an old lock means a hung or pid-reused owner).
// Breaking a stale lock happens under a second, short-lived `<registry>.lock.break` file, and only if the
// lock still carries the token judged stale, so two waiters can never both break it and one of them
// delete the fresh lock the other has just taken.

import { closeSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { RegistryError, type RegistryLogger } from "./registry-types";
import { isPidAlive } from "@rbee/hive-agent/util/process";

export interface FileLockOptions {
  /** How long to wait for a live owner before giving up with REGISTRY_LOCK_TIMEOUT. */
  timeoutMs?: number;
  /** Age past which a lock is broken even though its pid exists. */
  staleMs?: number;
  /** Mean delay between two attempts while another process holds the lock. */
  pollMs?: number;
  logger?: RegistryLogger;
}

export const DEFAULT_LOCK_TIMEOUT_MS = 20_000;
export const DEFAULT_LOCK_STALE_MS = 10_000;
const DEFAULT_POLL_MS = 10;
/** An unreadable lock (its writer died between create and write) is broken after this long. */
const EMPTY_LOCK_GRACE_MS = 2_000;
/** The break file is held for microseconds; one older than this was left by a killed process. */
const BREAK_LOCK_STALE_MS = 5_000;

export interface LockOwner {
  pid: number;
  host: string;
  created_at: number;
  token: string;
}

interface LockSnapshot {
  owner: LockOwner | undefined;
  ino: number;
  mtimeMs: number;
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text);
    if (
      Number.isInteger(o?.pid) &&
      typeof o.host === "string" &&
      Number.isFinite(o.created_at) &&
      typeof o.token === "string"
    )
      return o as LockOwner;
  } catch {
    // empty or half-written: judged by the file's age instead
  }
  return undefined;
}

function ioError(action: string, file: string, e: unknown): RegistryError {
  const err = e as NodeJS.ErrnoException;
  return new RegistryError(
    "REGISTRY_IO",
    `cannot ${action} the registry lock ${file}: ${err.message}. Check that its folder exists and is writable.`,
    { path: file, errno: err.code },
  );
}

export class FileLock {
  private readonly timeoutMs: number;
  private readonly staleMs: number;
  private readonly pollMs: number;
  private readonly host = hostname();
  /** Serialises this process's own callers, so they queue here instead of polling the file. */
  private tail: Promise<void> = Promise.resolve();

  constructor(
    readonly lockPath: string,
    private readonly opts: FileLockOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS;
    this.staleMs = opts.staleMs ?? DEFAULT_LOCK_STALE_MS;
    this.pollMs = opts.pollMs ?? DEFAULT_POLL_MS;
  }

  /** Runs `fn` while holding the lock; the lock is released even when `fn` throws. */
  async withLock<T>(fn: () => T | Promise<T>): Promise<T> {
    const previous = this.tail;
    let done!: () => void;
    this.tail = new Promise<void>((resolve) => (done = resolve));
    await previous;
    try {
      const token = await this.acquire();
      try {
        return await fn();
      } finally {
        this.release(token);
      }
    } finally {
      done();
    }
  }

  /** Takes the lock, waiting up to timeoutMs; resolves to the token that proves ownership. */
  async acquire(): Promise<string> {
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const token = this.tryCreate();
      if (token) return token;
      const held = this.snapshot();
      if (held) {
        const staleBecause = this.staleReason(held);
        if (staleBecause && this.breakStale(held, staleBecause)) continue;
        if (Date.now() >= deadline) throw this.timeoutError(held);
        await sleep(this.pollMs * (0.5 + Math.random()));
      } else if (Date.now() >= deadline) {
        throw this.timeoutError(undefined); // released and retaken faster than we could ever get in
      }
    }
  }

  release(token: string): void {
    const held = this.snapshot();
    if (held?.owner?.token !== token) {
      this.opts.logger?.(
        "warn",
        `registry lock ${this.lockPath} was broken by another process while this one held it (held longer than ${this.staleMs} ms?)`,
      );
      return;
    }
    try {
      unlinkSync(this.lockPath);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw ioError("remove", this.lockPath, e);
    }
  }

  /** O_EXCL create; undefined when someone else holds the lock. */
  private tryCreate(): string | undefined {
    const owner: LockOwner = {
      pid: process.pid,
      host: this.host,
      created_at: Date.now(),
      token: randomBytes(12).toString("hex"),
    };
    let fd: number;
    try {
      fd = openSync(this.lockPath, "wx", 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") return undefined;
      throw ioError("create", this.lockPath, e);
    }
    try {
      writeSync(fd, JSON.stringify(owner));
    } finally {
      closeSync(fd);
    }
    return owner.token;
  }

  private snapshot(): LockSnapshot | undefined {
    try {
      const st = statSync(this.lockPath);
      const text = readFileSync(this.lockPath, "utf8");
      return { owner: parseOwner(text), ino: st.ino, mtimeMs: st.mtimeMs };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw ioError("read", this.lockPath, e);
    }
  }

  private staleReason(held: LockSnapshot): string | undefined {
    const now = Date.now();
    const { owner } = held;
    if (!owner)
      return now - held.mtimeMs > Math.min(EMPTY_LOCK_GRACE_MS, this.staleMs)
        ? "it is unreadable (its writer died)"
        : undefined;
    if (owner.host === this.host && owner.pid !== process.pid && !isPidAlive(owner.pid))
      return `its process ${owner.pid} is gone`;
    if (now - owner.created_at > this.staleMs)
      return `it is ${Math.round((now - owner.created_at) / 1000)} s old (limit ${this.staleMs / 1000} s)`;
    return undefined;
  }

  /** Removes the lock if it is still the one judged stale; false if another process got there first. */
  private breakStale(judged: LockSnapshot, reason: string): boolean {
    const breakPath = `${this.lockPath}.break`;
    let fd: number;
    try {
      fd = openSync(breakPath, "wx", 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw ioError("create", breakPath, e);
      try {
        if (Date.now() - statSync(breakPath).mtimeMs > BREAK_LOCK_STALE_MS) unlinkSync(breakPath);
      } catch {
        // gone already: the next attempt will see
      }
      return false;
    }
    try {
      const now = this.snapshot();
      const same =
        now !== undefined &&
        (judged.owner
          ? now.owner?.token === judged.owner.token
          : !now.owner && now.ino === judged.ino && now.mtimeMs === judged.mtimeMs);
      if (!same) return false;
      unlinkSync(this.lockPath);
      const who = judged.owner ? `pid ${judged.owner.pid} on ${judged.owner.host}` : "an unknown process";
      this.opts.logger?.("warn", `broke the stale registry lock ${this.lockPath} held by ${who}: ${reason}`);
      return true;
    } finally {
      closeSync(fd);
      try {
        unlinkSync(breakPath);
      } catch {
        // removed as stale by a waiter that judged us dead; nothing left to clean
      }
    }
  }

  private timeoutError(held: LockSnapshot | undefined): RegistryError {
    const o = held?.owner;
    const holder = o
      ? `process ${o.pid} on ${o.host} (for ${Math.round((Date.now() - o.created_at) / 1000)} s)`
      : "other processes";
    return new RegistryError(
      "REGISTRY_LOCK_TIMEOUT",
      `the registry is locked by ${holder}; gave up after ${this.timeoutMs / 1000} s. ` +
        `If no rbee process or VS Code window is running, delete ${this.lockPath} and retry.`,
      { lock: this.lockPath, pid: o?.pid, host: o?.host },
    );
  }
}
