// Node discovery from ssh config text: aliases, first-match-wins, Include, tokens, ProxyJump.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadSshConfig, parseJumpHop, parseSshConfig } from "../../extension/src/nodes/ssh-config";
import { NodeError } from "../../extension/src/nodes/errors";

const HOME = "/home/tester";
const opts = { homeDir: HOME, localUser: "tester" };

test("every concrete Host alias is a node; wildcard and negated patterns are not", () => {
  const idx = parseSshConfig(
    `
Host gpu1 gpu2
  HostName 10.1.1.%h
Host *.lan !bad.lan
  User lanuser
Host box?
  Port 2200
Host gpu1
  Port 2222
Match host gpu2
  User matched
`,
    opts,
  );
  assert.deepEqual(idx.aliases, ["gpu1", "gpu2"]);
  assert.equal(idx.nodes().length, 2);
});

test("first match wins; later sections and Host * only fill what is still unset", () => {
  const idx = parseSshConfig(
    `
Host gpu1
  HostName 192.0.2.10
  Port 2201
Host gpu1
  Port 9999
  User second
Host *
  User everyone
  Port 22
`,
    opts,
  );
  const n = idx.node("gpu1");
  assert.equal(n.hostname, "192.0.2.10");
  assert.equal(n.port, 2201, "the first Port wins over the later section and Host *");
  assert.equal(n.user, "second", "User is first set by the second gpu1 section");
});

test("defaults: HostName is the alias, port 22, local user, OpenSSH's default identity files", () => {
  const n = parseSshConfig("Host plain\n", opts).node("plain");
  assert.equal(n.hostname, "plain");
  assert.equal(n.port, 22);
  assert.equal(n.user, "tester");
  assert.equal(n.identityFilesConfigured, false);
  assert.deepEqual(
    n.identityFiles,
    ["id_rsa", "id_ecdsa", "id_ed25519"].map((f) => `${HOME}/.ssh/${f}`),
  );
  assert.deepEqual(n.userKnownHostsFiles, [`${HOME}/.ssh/known_hosts`, `${HOME}/.ssh/known_hosts2`]);
  assert.equal(n.strictHostKeyChecking, "ask");
  assert.equal(n.proxyJump, undefined);
});

test("IdentityFile: ~ and %-tokens expand, and every matching section adds its keys in order", () => {
  const n = parseSshConfig(
    `
Host gpu1
  HostName gpu1.example.org
  User alice
  IdentityFile ~/.ssh/id_%h_%r
Host *
  IdentityFile %d/keys/%u-%p.key
  Port 2022
`,
    opts,
  ).node("gpu1");
  assert.deepEqual(n.identityFiles, [`${HOME}/.ssh/id_gpu1.example.org_alice`, `${HOME}/keys/tester-2022.key`]);
  assert.equal(n.identityFilesConfigured, true);
});

test("HostName %h expands to the alias; keywords are case-insensitive; `=` separators work", () => {
  const n = parseSshConfig("Host web\n  hostname %h.internal\n  PORT=2200\n  user=bob\n", opts).node("web");
  assert.equal(n.hostname, "web.internal");
  assert.equal(n.port, 2200);
  assert.equal(n.user, "bob");
});

test("an unknown %-token, a bad port and a bad yes/no are SSH_CONFIG_INVALID naming the value", () => {
  const bad = (text: string, re: RegExp) =>
    assert.throws(
      () => parseSshConfig(text, opts).node("x"),
      (e: unknown) => e instanceof NodeError && e.code === "SSH_CONFIG_INVALID" && re.test(e.message),
    );
  bad("Host x\n  IdentityFile ~/.ssh/%C\n", /%C/);
  bad("Host x\n  Port 70000\n", /Port "70000"/);
  bad("Host x\n  IdentitiesOnly maybe\n", /IdentitiesOnly must be yes or no/);
});

test("an alias that is not in the config is NODE_UNKNOWN listing the known ones", () => {
  const idx = parseSshConfig("Host a\nHost b\n", opts);
  assert.throws(
    () => idx.node("c"),
    (e: unknown) => e instanceof NodeError && e.code === "NODE_UNKNOWN" && /known nodes: a, b/.test(e.message),
  );
});

test("ProxyJump: one hop resolves through the config; chains go through every hop in order", () => {
  const idx = parseSshConfig(
    `
Host bastion
  HostName 198.51.100.1
  User jump
  Port 2022
Host inner
  HostName 10.0.0.2
  ProxyJump bastion
Host deep
  HostName 10.0.0.3
  ProxyJump admin@bastion:2200,inner
Host direct
  HostName 10.0.0.4
  ProxyJump none
`,
    opts,
  );
  const inner = idx.node("inner");
  assert.equal(inner.proxyJump?.alias, "bastion");
  assert.equal(inner.proxyJump?.hostname, "198.51.100.1");
  assert.equal(inner.proxyJump?.user, "jump");
  assert.equal(inner.proxyJump?.port, 2022);

  const deep = idx.node("deep");
  assert.equal(deep.proxyJump?.alias, "inner", "the last hop is the one the target is reached from");
  assert.equal(deep.proxyJump?.proxyJump?.alias, "bastion");
  assert.equal(deep.proxyJump?.proxyJump?.user, "admin", "user@ in the hop overrides the hop's config");
  assert.equal(deep.proxyJump?.proxyJump?.port, 2200);
  assert.equal(idx.node("direct").proxyJump, undefined);
});

test("a ProxyJump loop and ProxyCommand are refused with SSH_CONFIG_INVALID", () => {
  const idx = parseSshConfig("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\nHost c\n  ProxyCommand nc %h %p\n", opts);
  assert.throws(
    () => idx.node("a"),
    (e: unknown) => e instanceof NodeError && e.code === "SSH_CONFIG_INVALID" && /loop: a -> b -> a/.test(e.message),
  );
  assert.throws(
    () => idx.node("c"),
    (e: unknown) => e instanceof NodeError && /ProxyCommand/.test(e.message),
  );
});

test("parseJumpHop reads user@host:port, [v6]:port and ssh:// forms", () => {
  assert.deepEqual(parseJumpHop("root@h:2200"), { host: "h", user: "root", port: 2200 });
  assert.deepEqual(parseJumpHop("h"), { host: "h", user: undefined, port: undefined });
  assert.deepEqual(parseJumpHop("[::1]:2222"), { host: "::1", user: undefined, port: 2222 });
  assert.deepEqual(parseJumpHop("ssh://u@h"), { host: "h", user: "u", port: undefined });
});

test("StrictHostKeyChecking, HashKnownHosts, IdentityAgent, timeouts are read", () => {
  const n = parseSshConfig(
    "Host x\n  StrictHostKeyChecking accept-new\n  HashKnownHosts yes\n  IdentityAgent none\n  ConnectTimeout 5\n  ServerAliveInterval 7\n  ServerAliveCountMax 2\n  UserKnownHostsFile ~/kh1 /abs/kh2\n",
    opts,
  ).node("x");
  assert.equal(n.strictHostKeyChecking, "accept-new");
  assert.equal(n.hashKnownHosts, true);
  assert.equal(n.identityAgent, null);
  assert.equal(n.connectTimeoutMs, 5000);
  assert.equal(n.serverAliveIntervalMs, 7000);
  assert.equal(n.serverAliveCountMax, 2);
  assert.deepEqual(n.userKnownHostsFiles, [`${HOME}/kh1`, "/abs/kh2"]);
});

test("Include: relative to ~/.ssh, globs sorted, nested, and inside a Host section", (t) => {
  const home = mkdtempSync(path.join(os.tmpdir(), "rbee-sshcfg-"));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  const ssh = path.join(home, ".ssh");
  mkdirSync(path.join(ssh, "conf.d"), { recursive: true });
  writeFileSync(
    path.join(ssh, "config"),
    `
Include conf.d/*.conf
Host gpu1
  HostName 10.9.9.1
  Include gpu1-extra
  IdentityFile ~/.ssh/after-include
Host *
  User fallback
`,
  );
  writeFileSync(path.join(ssh, "conf.d", "20-b.conf"), "Host bnode\n  HostName b.example\n  Include nested.inc\n");
  writeFileSync(path.join(ssh, "conf.d", "10-a.conf"), "Host anode\n  HostName a.example\n  Port 2001\n");
  writeFileSync(path.join(ssh, "conf.d", "ignored.txt"), "Host notme\n");
  writeFileSync(path.join(ssh, "nested.inc"), "Port 2002\n");
  // Inside `Host gpu1`: the first line belongs to gpu1, then the included file opens its own section.
  writeFileSync(path.join(ssh, "gpu1-extra"), "Port 2003\nHost extra\n  HostName extra.example\n");

  const idx = loadSshConfig({ homeDir: home, localUser: "tester" });
  assert.deepEqual(idx.aliases, ["anode", "bnode", "gpu1", "extra"], "conf.d files in sorted order, .txt not matched");
  assert.equal(idx.node("anode").port, 2001);
  assert.equal(idx.node("bnode").port, 2002, "nested Include inside a Host section applies to it");
  const gpu1 = idx.node("gpu1");
  assert.equal(gpu1.port, 2003, "the included file's leading lines belong to the enclosing Host");
  assert.deepEqual(
    gpu1.identityFiles,
    [path.join(ssh, "after-include")],
    "lines after the Include still belong to gpu1",
  );
  assert.equal(gpu1.user, "fallback");
  assert.equal(idx.node("extra").port, 22, "gpu1's Port does not leak into the included section");
  assert.deepEqual(
    idx.node("extra").identityFiles.length,
    3,
    "gpu1's IdentityFile does not leak either (defaults apply)",
  );
});

test("an Include loop is refused instead of recursing forever; a missing config means no nodes", (t) => {
  const home = mkdtempSync(path.join(os.tmpdir(), "rbee-sshcfg-"));
  t.after(() => rmSync(home, { recursive: true, force: true }));
  mkdirSync(path.join(home, ".ssh"));
  assert.deepEqual(loadSshConfig({ homeDir: home }).aliases, []);
  writeFileSync(path.join(home, ".ssh", "config"), "Include config\nHost x\n");
  assert.throws(
    () => loadSshConfig({ homeDir: home }),
    (e: unknown) => e instanceof NodeError && e.code === "SSH_CONFIG_INVALID" && /nested more than 16/.test(e.message),
  );
});

test("configPath overrides where the config is read from", (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "rbee-sshcfg-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "custom_config");
  writeFileSync(file, "Host custom\n  HostName 127.0.0.9\n");
  const idx = loadSshConfig({ configPath: file, homeDir: dir });
  assert.deepEqual(idx.aliases, ["custom"]);
  assert.equal(idx.node("custom").hostname, "127.0.0.9");
});
