// The registry's file on disk: read with an identity, written atomically, moved aside when corrupt.
//
// Atomic write = write a temp file in the same folder, fsync it, rename it over the registry, fsync the
// folder. A reader (or a process killed mid-write) therefore only ever sees a whole old file or a whole
// new one. Because every write is a rename, the file's identity (device, inode, size, mtime) changes
// on every write: comparing identities tells a process whether another one has written since it read.
// The inode alone would not do if it could be freed and reused by a later write within one mtime tick,
// so a process keeps the file it loaded open ("pinned"): a pinned inode cannot be reused.

import {
  closeSync,
  fstatSync,
  fsyncSync,
  openSync,
  readFileSync,
  readdirSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { randomBytes } from "node:crypto";
import path from "node:path";

export type FileIdentity = string;

function identityOf(st: { dev: bigint; ino: bigint; size: bigint; mtimeNs: bigint }): FileIdentity {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}`;
}

/** The identity of the file now at `file`, or null when there is none. */
export function fileIdentity(file: string): FileIdentity | null {
  try {
    return identityOf(statSync(file, { bigint: true }));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
}

/** A file held open so that its identity stays unique while a process relies on it. */
export interface PinnedFile {
  fd: number;
  identity: FileIdentity;
}

/** Opens and pins `file`; null when there is none. */
export function pinFile(file: string): PinnedFile | null {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  try {
    return { fd, identity: identityOf(fstatSync(fd, { bigint: true })) };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** Pins `file` and reads it: the bytes are exactly those of the pinned identity. */
export function pinAndRead(file: string): { pin: PinnedFile; bytes: Uint8Array } | null {
  const pin = pinFile(file);
  if (!pin) return null;
  try {
    return { pin, bytes: readFileSync(pin.fd) };
  } catch (e) {
    unpin(pin);
    throw e;
  }
}

export function unpin(pin: PinnedFile | null): void {
  if (pin) closeSync(pin.fd);
}

const TEMP_INFIX = ".tmp-";

/** Replaces `file` with `bytes` so that a crash at any instant leaves either the old or the new file. */
export function writeFileAtomic(file: string, bytes: Uint8Array, mode = 0o600): void {
  const temp = `${file}${TEMP_INFIX}${process.pid}-${randomBytes(4).toString("hex")}`;
  const fd = openSync(temp, "wx", mode);
  try {
    try {
      let offset = 0;
      while (offset < bytes.length) offset += writeSync(fd, bytes, offset, bytes.length - offset);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameWithRetry(temp, file);
  } catch (e) {
    try {
      unlinkSync(temp);
    } catch {
      // already renamed or never created: nothing to clean
    }
    throw e;
  }
  fsyncDirectory(path.dirname(file));
}

/** Windows refuses a rename over a file another process is reading at that instant; it clears in ms. */
function renameWithRetry(from: string, to: string): void {
  for (let attempt = 0; ; attempt++) {
    try {
      renameSync(from, to);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (process.platform !== "win32" || attempt >= 20 || !(code === "EPERM" || code === "EACCES" || code === "EBUSY"))
        throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
}

/** Makes the rename itself durable. Windows cannot open a folder for fsync; NTFS journals renames. */
function fsyncDirectory(dir: string): void {
  if (process.platform === "win32") return;
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Renames a bad file to `<file>.corrupt-<timestamp>` and returns the new name. */
export function moveAside(file: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[:.]/g, "-");
  let target = `${file}.corrupt-${stamp}`;
  for (let n = 2; fileIdentity(target) !== null; n++) target = `${file}.corrupt-${stamp}-${n}`;
  renameSync(file, target);
  return target;
}

/**
 * Deletes temp files left by writers that were killed between creating and renaming them.
 * Only safe while holding the registry lock, since writes happen only under it.
 */
export function removeOrphanTempFiles(file: string): number {
  const dir = path.dirname(file);
  const prefix = path.basename(file) + TEMP_INFIX;
  let removed = 0;
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(prefix)) continue;
    try {
      unlinkSync(path.join(dir, name));
      removed++;
    } catch {
      // another process cleaned it first
    }
  }
  return removed;
}
