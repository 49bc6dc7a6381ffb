// Host key verification against OpenSSH known_hosts files, with OpenSSH's rules:
// plain and hashed (`|1|salt|hash`) host fields, `[host]:port` for ports other than 22,
// comma-separated patterns with `*`/`?` wildcards and `!` negation, `@revoked` markers.
// A key that matches any line is trusted; a host with a line of the same key type but another
// key has a *changed* key; otherwise the key is unknown.

import { createHash, createHmac, randomBytes } from "node:crypto";
import { appendFileSync, closeSync, mkdirSync, openSync, readFileSync, readSync, fstatSync } from "node:fs";
import path from "node:path";
import { errorCode } from "@rbee/hive-agent/util/coded-error";

export type HostKeyCheck =
  | { status: "match"; keyType: string; fingerprint: string; file: string; line: number }
  | {
      status: "unknown";
      keyType: string;
      fingerprint: string;
      /** key types this host is known by */ otherKeyTypes: string[];
    }
  | { status: "changed"; keyType: string; fingerprint: string; knownFingerprints: string[]; file: string; line: number }
  | { status: "revoked"; keyType: string; fingerprint: string; file: string; line: number };

/** The name a host is recorded under: `host` on port 22, `[host]:port` otherwise. */
export function knownHostName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** OpenSSH's fingerprint format: `SHA256:` + unpadded base64 of the SHA-256 of the key blob. */
export function fingerprintSha256(keyBlob: Buffer): string {
  return "SHA256:" + createHash("sha256").update(keyBlob).digest("base64").replace(/=+$/, "");
}

/** The key type named inside an SSH public key blob ("ssh-ed25519", "ssh-rsa", …). */
export function keyTypeOf(keyBlob: Buffer): string {
  if (keyBlob.length < 4) throw new Error("host key blob too short");
  const len = keyBlob.readUInt32BE(0);
  if (len > keyBlob.length - 4 || len > 64) throw new Error("host key blob malformed");
  return keyBlob.subarray(4, 4 + len).toString("latin1");
}

interface Entry {
  marker?: "@revoked" | "@cert-authority";
  hosts: string;
  keyType: string;
  key: Buffer;
  line: number;
}

function parseLines(text: string): Entry[] {
  const out: Entry[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line || line.startsWith("#")) continue;
    const fields = line.split(/\s+/);
    let marker: Entry["marker"];
    if (fields[0].startsWith("@")) {
      if (fields[0] !== "@revoked" && fields[0] !== "@cert-authority") continue; // unknown marker: OpenSSH skips the line
      marker = fields.shift() as Entry["marker"];
    }
    if (fields.length < 3) continue;
    const key = Buffer.from(fields[2], "base64");
    if (key.length === 0) continue;
    out.push({ marker, hosts: fields[0], keyType: fields[1], key, line: i + 1 });
  }
  return out;
}

/** Does a known_hosts host field (hashed, or a pattern list) name this host? */
export function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith("|1|")) {
    const [, , salt, hash] = field.split("|");
    if (!salt || !hash) return false;
    // OpenSSH hashes the lowercased name (it lowercases host names before every lookup).
    const mac = createHmac("sha1", Buffer.from(salt, "base64")).update(name.toLowerCase()).digest("base64");
    return mac === hash;
  }
  const lower = name.toLowerCase();
  let matched = false;
  for (const raw of field.split(",")) {
    const negated = raw.startsWith("!");
    const pattern = (negated ? raw.slice(1) : raw).toLowerCase();
    if (wildcardMatch(pattern, lower)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

/**
 * `*` and `?` wildcard matching without a regular expression: one pass with a single backtrack
 * point (the last `*`), so a pattern like `*a*a*a*…b` costs O(pattern × text), never exponential.
 */
export function wildcardMatch(pattern: string, text: string): boolean {
  let p = 0;
  let t = 0;
  let star = -1;
  let mark = 0;
  while (t < text.length) {
    if (p < pattern.length && (pattern[p] === "?" || pattern[p] === text[t])) {
      p++;
      t++;
    } else if (p < pattern.length && pattern[p] === "*") {
      star = p++;
      mark = t;
    } else if (star >= 0) {
      p = star + 1;
      t = ++mark;
    } else return false;
  }
  while (p < pattern.length && pattern[p] === "*") p++;
  return p === pattern.length;
}

/** Checks a host key against known_hosts text (pure: the unit under test). */
export function checkHostKeyText(files: { path: string; text: string }[], name: string, keyBlob: Buffer): HostKeyCheck {
  const keyType = keyTypeOf(keyBlob);
  const fingerprint = fingerprintSha256(keyBlob);
  let match: HostKeyCheck | undefined;
  let changed: { file: string; line: number; fps: string[] } | undefined;
  const otherKeyTypes = new Set<string>();
  for (const f of files) {
    for (const e of parseLines(f.text)) {
      if (!hostFieldMatches(e.hosts, name)) continue;
      const sameKey = e.key.equals(keyBlob);
      if (e.marker === "@revoked") {
        if (sameKey) return { status: "revoked", keyType, fingerprint, file: f.path, line: e.line };
        continue;
      }
      if (e.marker === "@cert-authority") continue; // host certificates are not used here
      let entryType: string;
      try {
        entryType = keyTypeOf(e.key);
      } catch {
        continue;
      }
      if (sameKey) match ??= { status: "match", keyType, fingerprint, file: f.path, line: e.line };
      else if (entryType === keyType) {
        changed ??= { file: f.path, line: e.line, fps: [] };
        changed.fps.push(fingerprintSha256(e.key));
      } else otherKeyTypes.add(entryType);
    }
  }
  if (match) return match;
  if (changed)
    return {
      status: "changed",
      keyType,
      fingerprint,
      knownFingerprints: changed.fps,
      file: changed.file,
      line: changed.line,
    };
  return { status: "unknown", keyType, fingerprint, otherKeyTypes: [...otherKeyTypes] };
}

/** Checks a host key against known_hosts files on disk (missing files count as empty). */
export function checkHostKey(files: string[], host: string, port: number, keyBlob: Buffer): HostKeyCheck {
  return checkHostKeyText(
    files.map((p) => ({ path: p, text: readIfExists(p) })),
    knownHostName(host, port),
    keyBlob,
  );
}

/** The key types known for a host, so the handshake can prefer a key type we can verify. */
export function knownKeyTypes(files: string[], host: string, port: number): string[] {
  const name = knownHostName(host, port);
  const types: string[] = [];
  for (const p of files) {
    for (const e of parseLines(readIfExists(p))) {
      if (e.marker || !hostFieldMatches(e.hosts, name)) continue;
      try {
        const t = keyTypeOf(e.key);
        if (!types.includes(t)) types.push(t);
      } catch {
        // a malformed key blob verifies nothing; skip it
      }
    }
  }
  return types;
}

/** The known_hosts line for a key; hashed as OpenSSH's HashKnownHosts writes it when asked. */
export function knownHostsLine(host: string, port: number, keyBlob: Buffer, hashed: boolean): string {
  const name = knownHostName(host.toLowerCase(), port);
  let field = name;
  if (hashed) {
    const salt = randomBytes(20);
    field = `|1|${salt.toString("base64")}|${createHmac("sha1", salt).update(name).digest("base64")}`;
  }
  return `${field} ${keyTypeOf(keyBlob)} ${keyBlob.toString("base64")}`;
}

/** Appends a host key to a known_hosts file (creating it and its folder as OpenSSH would). */
export function recordHostKey(
  file: string,
  host: string,
  port: number,
  keyBlob: Buffer,
  opts: { hashed?: boolean } = {},
): void {
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const prefix = endsWithoutNewline(file) ? "\n" : "";
  appendFileSync(file, prefix + knownHostsLine(host, port, keyBlob, opts.hashed ?? false) + "\n", { mode: 0o644 });
}

function endsWithoutNewline(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch {
    return false;
  }
  try {
    const size = fstatSync(fd).size;
    if (size === 0) return false;
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, size - 1);
    return b[0] !== 0x0a;
  } finally {
    closeSync(fd);
  }
}

function readIfExists(p: string): string {
  try {
    return readFileSync(p, "utf8");
  } catch (err) {
    const code = errorCode(err);
    if (code === "ENOENT" || code === "ENOTDIR") return "";
    throw err;
  }
}
