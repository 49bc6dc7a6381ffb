// known_hosts verification: plain, hashed, [host]:port, patterns, changed and revoked keys,
// OpenSSH-format fingerprints, and recording. Checked against ssh-keygen where it has an answer.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  checkHostKey,
  checkHostKeyText,
  fingerprintSha256,
  hostFieldMatches,
  keyTypeOf,
  knownHostName,
  recordHostKey,
} from "../../extension/src/nodes/known-hosts";
import { keygen, readPublicKey } from "../helpers/sshd";

function tmp(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "rbee-kh-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function makeKey(
  dir: string,
  name: string,
  type: "ed25519" | "ecdsa" = "ed25519",
): { line: string; blob: Buffer; pub: string } {
  const file = path.join(dir, name);
  if (type === "ed25519") keygen(file, name);
  else execFileSync("ssh-keygen", ["-q", "-t", "ecdsa", "-N", "", "-f", file], { stdio: "ignore" });
  return { ...readPublicKey(file + ".pub"), pub: file + ".pub" };
}

test("fingerprint is OpenSSH's SHA256:base64-without-padding (same as ssh-keygen -lf)", (t) => {
  const dir = tmp(t);
  const k = makeKey(dir, "k");
  const fromKeygen = execFileSync("ssh-keygen", ["-lf", k.pub], { encoding: "utf8" }).split(/\s+/)[1];
  assert.equal(fingerprintSha256(k.blob), fromKeygen);
  assert.match(fromKeygen, /^SHA256:[A-Za-z0-9+/]{43}$/);
  assert.equal(keyTypeOf(k.blob), "ssh-ed25519");
});

test("[host]:port form for ports other than 22", () => {
  assert.equal(knownHostName("h", 22), "h");
  assert.equal(knownHostName("127.0.0.2", 2222), "[127.0.0.2]:2222");
});

test("plain entries: match, unknown, changed (with both fingerprints), other key type is unknown", (t) => {
  const dir = tmp(t);
  const a = makeKey(dir, "a");
  const b = makeKey(dir, "b");
  const e = makeKey(dir, "e", "ecdsa");
  const text = `# comment\n\n[10.0.0.1]:2222 ${a.line}\nother.host ${b.line}\n`;
  const files = [{ path: "kh", text }];

  const m = checkHostKeyText(files, "[10.0.0.1]:2222", a.blob);
  assert.equal(m.status, "match");
  assert.equal(m.status === "match" && m.line, 3);

  assert.equal(
    checkHostKeyText(files, "10.0.0.1", a.blob).status,
    "unknown",
    "port 22 is a different name than [h]:2222",
  );

  const c = checkHostKeyText(files, "[10.0.0.1]:2222", b.blob);
  assert.equal(c.status, "changed");
  if (c.status === "changed") {
    assert.equal(c.fingerprint, fingerprintSha256(b.blob));
    assert.deepEqual(c.knownFingerprints, [fingerprintSha256(a.blob)]);
    assert.equal(c.line, 3);
  }

  const u = checkHostKeyText(files, "[10.0.0.1]:2222", e.blob);
  assert.equal(u.status, "unknown");
  assert.deepEqual(u.status === "unknown" && u.otherKeyTypes, ["ssh-ed25519"]);
});

test("hashed entries written by ssh-keygen -H are matched", (t) => {
  const dir = tmp(t);
  const a = makeKey(dir, "a");
  const b = makeKey(dir, "b");
  const file = path.join(dir, "known_hosts");
  writeFileSync(file, `[127.0.0.2]:2200 ${a.line}\nplain.example ${b.line}\n`);
  execFileSync("ssh-keygen", ["-H", "-f", file], { stdio: "ignore" });
  const text = readFileSync(file, "utf8");
  assert.doesNotMatch(text, /127\.0\.0\.2|plain\.example/, "ssh-keygen hashed the names");
  assert.equal(checkHostKey([file], "127.0.0.2", 2200, a.blob).status, "match");
  assert.equal(checkHostKey([file], "plain.example", 22, b.blob).status, "match");
  assert.equal(checkHostKey([file], "127.0.0.2", 2200, b.blob).status, "changed");
  assert.equal(checkHostKey([file], "127.0.0.3", 2200, a.blob).status, "unknown");
});

test("patterns: comma lists, wildcards, negation, case-insensitive names", () => {
  assert.equal(hostFieldMatches("a.example,b.example", "b.example"), true);
  assert.equal(hostFieldMatches("*.example", "GPU1.example"), true);
  assert.equal(hostFieldMatches("gpu?.lan", "gpu7.lan"), true);
  assert.equal(hostFieldMatches("gpu?.lan", "gpu.lan"), false);
  assert.equal(hostFieldMatches("*.lan,!bad.lan", "bad.lan"), false);
  assert.equal(hostFieldMatches("[127.0.0.*]:2222", "[127.0.0.2]:2222"), true);
});

test("@revoked refuses the key; @cert-authority lines are not trusted as host keys", (t) => {
  const dir = tmp(t);
  const a = makeKey(dir, "a");
  assert.equal(
    checkHostKeyText([{ path: "kh", text: `@revoked * ${a.line}\nh ${a.line}\n` }], "h", a.blob).status,
    "revoked",
  );
  assert.equal(
    checkHostKeyText([{ path: "kh", text: `@cert-authority h ${a.line}\n` }], "h", a.blob).status,
    "unknown",
  );
});

test("recording appends a line (plain or hashed) that then matches, and ssh-keygen -F finds it", (t) => {
  const dir = tmp(t);
  const a = makeKey(dir, "a");
  const b = makeKey(dir, "b");
  const file = path.join(dir, "sub", "known_hosts");
  recordHostKey(file, "127.0.0.2", 2201, a.blob);
  writeFileSync(file, readFileSync(file, "utf8").trimEnd()); // no trailing newline: the next append must add one
  recordHostKey(file, "127.0.0.3", 2202, b.blob, { hashed: true });
  const lines = readFileSync(file, "utf8").trim().split("\n");
  assert.equal(lines.length, 2);
  assert.equal(lines[0], `[127.0.0.2]:2201 ${a.line}`);
  assert.match(lines[1], /^\|1\|[A-Za-z0-9+/=]+\|[A-Za-z0-9+/=]+ ssh-ed25519 /);
  assert.equal(checkHostKey([file], "127.0.0.3", 2202, b.blob).status, "match");
  const found = execFileSync("ssh-keygen", ["-F", "[127.0.0.3]:2202", "-f", file], { encoding: "utf8" });
  assert.match(found, /ssh-ed25519/, "OpenSSH reads the hashed line we wrote");
});
