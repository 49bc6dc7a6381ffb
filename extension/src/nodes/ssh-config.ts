// Node discovery from the user's OpenSSH client config (~/.ssh/config).
//
// Every concrete `Host` alias (no wildcard, no negation) is a node; wildcard sections only
// contribute settings. Parsing and the first-match-wins computation are the `ssh-config`
// package's; this module adds what it leaves out: `Include` (globs, relative to ~/.ssh, nested,
// also inside a Host section), token and ~ expansion, defaults, and ProxyJump chains.
//
// `Match exec` criteria are never run: a config is data here, not a script.

import { readFileSync, readdirSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parse, SSHConfig, LineType, type Line, type Section } from "ssh-config";
import { errorCode } from "@rbee/hive-agent/util/coded-error";
import { NodeError } from "./errors";

export type StrictHostKeyChecking = "yes" | "ask" | "accept-new" | "no";

/** Everything needed to open an SSH connection to one node, with ssh_config semantics applied. */
export interface SshNodeSpec {
  /** The name the user gave (a Host alias, or a plain host for ad-hoc ProxyJump hops). */
  alias: string;
  hostname: string;
  port: number;
  user: string;
  /** Absolute paths, in the order to try. */
  identityFiles: string[];
  /** False when no IdentityFile was configured and these are OpenSSH's default key names. */
  identityFilesConfigured: boolean;
  /** IdentitiesOnly yes: do not offer the agent's keys. */
  identitiesOnly: boolean;
  /** IdentityAgent: a socket path, `null` for "none"; undefined means $SSH_AUTH_SOCK. */
  identityAgent?: string | null;
  /** The hop to go through (which may itself have one): ProxyJump a,b gives b with proxyJump a. */
  proxyJump?: SshNodeSpec;
  /** Name to look the host key up by instead of the host name. */
  hostKeyAlias?: string;
  userKnownHostsFiles: string[];
  globalKnownHostsFiles: string[];
  strictHostKeyChecking: StrictHostKeyChecking;
  hashKnownHosts: boolean;
  connectTimeoutMs?: number;
  serverAliveIntervalMs?: number;
  serverAliveCountMax?: number;
}

export interface SshConfigOptions {
  /** The config file to read; default ~/.ssh/config. A missing file means "no nodes". */
  configPath?: string;
  /** The local home: `~`, `%d`, and where relative Include paths live (`<home>/.ssh`). */
  homeDir?: string;
  /** The local user name: default remote user and `%u`. */
  localUser?: string;
}

interface ExpandContext {
  homeDir: string;
  localUser: string;
  localHostname: string;
}

const MAX_INCLUDE_DEPTH = 16; // OpenSSH's READCONF_MAX_DEPTH
const MAX_JUMP_DEPTH = 8;
const DEFAULT_IDENTITY_FILES = ["id_rsa", "id_ecdsa", "id_ed25519"];

/** Reads and indexes the ssh config (following Includes). */
export function loadSshConfig(opts: SshConfigOptions = {}): SshConfigIndex {
  const ctx = expandContext(opts);
  const configPath = opts.configPath ?? path.join(ctx.homeDir, ".ssh", "config");
  let text: string;
  try {
    text = readFileSync(configPath, "utf8");
  } catch (err) {
    if (errorCode(err) === "ENOENT") text = "";
    else
      throw new NodeError(
        "SSH_CONFIG_INVALID",
        `cannot read ssh config ${configPath}: ${(err as Error)?.message ?? err}`,
        { path: configPath },
      );
  }
  return parseSshConfig(text, { ...opts, configPath });
}

/** Indexes config text (Include paths are still read from disk). */
export function parseSshConfig(text: string, opts: SshConfigOptions = {}): SshConfigIndex {
  const ctx = expandContext(opts);
  const source = opts.configPath ?? "<ssh config>";
  const lines = expandIncludes(parseText(text, source), ctx, 0);
  const config = new SSHConfig();
  config.push(...lines);
  return new SshConfigIndex(config, concreteAliases(lines), ctx);
}

export class SshConfigIndex {
  /** The concrete Host aliases in file order, each once. */
  readonly aliases: readonly string[];

  constructor(
    private readonly config: SSHConfig,
    aliases: string[],
    private readonly ctx: ExpandContext,
  ) {
    this.aliases = aliases;
  }

  has(alias: string): boolean {
    return this.aliases.includes(alias);
  }

  /** Every concrete alias, resolved. */
  nodes(): SshNodeSpec[] {
    return this.aliases.map((a) => this.resolve(a));
  }

  /** Like `ssh <host>`: applies every matching section to any host name, alias or not. */
  resolve(host: string): SshNodeSpec {
    return this.resolveHop(host, [], undefined);
  }

  /** Like resolve(), but refuses a name that is not a concrete alias of the config. */
  node(alias: string): SshNodeSpec {
    if (!this.has(alias)) {
      const known = this.aliases.length
        ? `known nodes: ${this.aliases.join(", ")}`
        : "the ssh config defines no Host aliases";
      throw new NodeError(
        "NODE_UNKNOWN",
        `no Host "${alias}" in the ssh config (${known}); add a Host section for it to ~/.ssh/config`,
        { alias },
      );
    }
    return this.resolve(alias);
  }

  private resolveHop(
    host: string,
    chain: string[],
    override: { user?: string; port?: number } | undefined,
  ): SshNodeSpec {
    if (chain.includes(host)) {
      throw new NodeError(
        "SSH_CONFIG_INVALID",
        `ProxyJump loop: ${[...chain, host].join(" -> ")}; fix the ProxyJump lines in the ssh config`,
        { alias: host },
      );
    }
    if (chain.length >= MAX_JUMP_DEPTH) {
      throw new NodeError("SSH_CONFIG_INVALID", `ProxyJump chain longer than ${MAX_JUMP_DEPTH} hops at "${host}"`, {
        alias: host,
      });
    }
    const c = this.config.compute(host, { ignoreCase: true, matchExec: false }) as Record<string, string | string[]>;
    const hostnameRaw = first(c.hostname) ?? host;
    const hostname = expandTokens(hostnameRaw, { h: host, n: host, "%": "%" }, "HostName");
    const port = override?.port ?? parsePort(first(c.port) ?? "22", host);
    const user = override?.user ?? first(c.user) ?? this.ctx.localUser;
    const tokens = {
      "%": "%",
      d: this.ctx.homeDir,
      u: this.ctx.localUser,
      l: this.ctx.localHostname.split(".")[0],
      L: this.ctx.localHostname.split(".")[0],
      h: hostname,
      n: host,
      p: String(port),
      r: user,
      i: String(process.getuid?.() ?? 0),
    };
    const expandPath = (p: string, directive: string) => this.expandPath(expandTokens(p, tokens, directive));

    const configuredKeys = all(c.identityfile).filter((v) => v.toLowerCase() !== "none");
    const identityFiles = configuredKeys.length
      ? configuredKeys.map((p) => expandPath(p, "IdentityFile"))
      : DEFAULT_IDENTITY_FILES.map((f) => path.join(this.ctx.homeDir, ".ssh", f));

    const agentRaw = first(c.identityagent);
    let identityAgent: string | null | undefined;
    if (agentRaw === undefined || agentRaw === "SSH_AUTH_SOCK") identityAgent = undefined;
    else if (agentRaw.toLowerCase() === "none") identityAgent = null;
    else identityAgent = expandPath(agentRaw, "IdentityAgent");

    const spec: SshNodeSpec = {
      alias: host,
      hostname,
      port,
      user,
      identityFiles,
      identityFilesConfigured: configuredKeys.length > 0,
      identitiesOnly: yesNo(first(c.identitiesonly), false, "IdentitiesOnly"),
      identityAgent,
      hostKeyAlias: first(c.hostkeyalias),
      userKnownHostsFiles: (all(c.userknownhostsfile).length
        ? all(c.userknownhostsfile)
        : ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"]
      )
        .filter((p) => p.toLowerCase() !== "none")
        .map((p) => expandPath(p, "UserKnownHostsFile")),
      globalKnownHostsFiles: (all(c.globalknownhostsfile).length
        ? all(c.globalknownhostsfile)
        : ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"]
      )
        .filter((p) => p.toLowerCase() !== "none")
        .map((p) => expandPath(p, "GlobalKnownHostsFile")),
      strictHostKeyChecking: parseStrict(first(c.stricthostkeychecking)),
      hashKnownHosts: yesNo(first(c.hashknownhosts), false, "HashKnownHosts"),
      connectTimeoutMs: optSeconds(first(c.connecttimeout), "ConnectTimeout"),
      serverAliveIntervalMs: optSeconds(first(c.serveraliveinterval), "ServerAliveInterval"),
      serverAliveCountMax: optInt(first(c.serveralivecountmax), "ServerAliveCountMax"),
    };

    const jump = first(c.proxyjump);
    if (jump && jump.toLowerCase() !== "none") {
      if (first(c.proxycommand)) {
        // OpenSSH uses whichever of the two comes first; we only implement ProxyJump, so say so.
        throw new NodeError(
          "SSH_CONFIG_INVALID",
          `Host "${host}" sets both ProxyJump and ProxyCommand; keep only ProxyJump (ProxyCommand is not supported)`,
          { alias: host },
        );
      }
      spec.proxyJump = this.resolveJumpChain(jump, [...chain, host]);
    } else if (first(c.proxycommand) && first(c.proxycommand)!.toLowerCase() !== "none") {
      throw new NodeError(
        "SSH_CONFIG_INVALID",
        `Host "${host}" uses ProxyCommand, which rbee does not run; use ProxyJump instead`,
        { alias: host },
      );
    }
    return spec;
  }

  /** "a,b,c": connect to a, through it to b, through b to c; the target goes through c. */
  private resolveJumpChain(value: string, chain: string[]): SshNodeSpec {
    const hops = value
      .split(",")
      .map((h) => h.trim())
      .filter(Boolean);
    let previous: SshNodeSpec | undefined;
    for (const hop of hops) {
      const { host, user, port } = parseJumpHop(hop);
      const spec = this.resolveHop(host, chain, { user, port });
      // Later hops go through the earlier ones, overriding their own ProxyJump (as `ssh -J` does).
      if (previous) spec.proxyJump = previous;
      previous = spec;
    }
    if (!previous) throw new NodeError("SSH_CONFIG_INVALID", `empty ProxyJump value "${value}"`);
    return previous;
  }

  private expandPath(p: string): string {
    const withEnv = p.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => {
      const v = process.env[name];
      if (v === undefined)
        throw new NodeError(
          "SSH_CONFIG_INVALID",
          `ssh config refers to \${${name}}, which is not set in the environment`,
        );
      return v;
    });
    const home =
      withEnv === "~"
        ? this.ctx.homeDir
        : withEnv.startsWith("~/")
          ? path.join(this.ctx.homeDir, withEnv.slice(2))
          : withEnv;
    return path.isAbsolute(home) ? home : path.join(this.ctx.homeDir, home);
  }
}

// ---------------------------------------------------------------------------------------------

function expandContext(opts: SshConfigOptions): ExpandContext {
  let user = opts.localUser;
  if (!user) {
    try {
      user = os.userInfo().username;
    } catch {
      user = process.env.USER ?? process.env.LOGNAME ?? "root";
    }
  }
  return { homeDir: opts.homeDir ?? os.homedir(), localUser: user, localHostname: os.hostname() };
}

function parseText(text: string, source: string): Line[] {
  try {
    return [...parse(text)];
  } catch (err) {
    throw new NodeError("SSH_CONFIG_INVALID", `cannot parse ssh config ${source}: ${(err as Error)?.message ?? err}`, {
      path: source,
    });
  }
}

function isDirective(line: Line): line is Extract<Line, { param: string }> {
  return line.type === LineType.DIRECTIVE;
}
function isSection(line: Line): line is Section {
  return isDirective(line) && /^(host|match)$/i.test(line.param) && "config" in line;
}
function isInclude(line: Line): boolean {
  return isDirective(line) && /^include$/i.test(line.param);
}
function values(line: Line): string[] {
  if (!isDirective(line)) return [];
  return typeof line.value === "string" ? [line.value] : line.value.map((v) => v.val);
}

/**
 * Splices included files into the line list. An Include inside a Host/Match section behaves as in
 * OpenSSH: the included directives belong to that section until the included file opens its own
 * sections, and the section's lines after the Include still belong to it (so it is re-opened).
 */
function expandIncludes(lines: Line[], ctx: ExpandContext, depth: number): Line[] {
  const out: Line[] = [];
  for (const line of lines) {
    if (isInclude(line)) out.push(...readIncludes(values(line), ctx, depth));
    else if (isSection(line)) out.push(...expandSection(line, ctx, depth));
    else out.push(line);
  }
  return out;
}

function expandSection(section: Section, ctx: ExpandContext, depth: number): Line[] {
  const reopen = (): Section => ({ ...section, config: new SSHConfig() });
  let current = reopen();
  const result: Line[] = [current];
  let inIncludedSection = false;
  const add = (line: Line) => {
    if (inIncludedSection) {
      current = reopen();
      result.push(current);
      inIncludedSection = false;
    }
    current.config.push(line);
  };
  for (const sub of section.config) {
    if (!isInclude(sub)) {
      add(sub);
      continue;
    }
    for (const inc of readIncludes(values(sub), ctx, depth)) {
      if (isSection(inc)) {
        result.push(inc);
        inIncludedSection = true;
      } else add(inc);
    }
  }
  return result;
}

function readIncludes(patterns: string[], ctx: ExpandContext, depth: number): Line[] {
  if (depth + 1 > MAX_INCLUDE_DEPTH) {
    throw new NodeError(
      "SSH_CONFIG_INVALID",
      `ssh config Include nested more than ${MAX_INCLUDE_DEPTH} deep (an Include loop?)`,
    );
  }
  const out: Line[] = [];
  for (const pattern of patterns) {
    let p =
      pattern === "~" ? ctx.homeDir : pattern.startsWith("~/") ? path.join(ctx.homeDir, pattern.slice(2)) : pattern;
    if (!path.isAbsolute(p)) p = path.join(ctx.homeDir, ".ssh", p);
    for (const file of globFiles(p)) {
      let text: string;
      try {
        text = readFileSync(file, "utf8");
      } catch (err) {
        throw new NodeError(
          "SSH_CONFIG_INVALID",
          `cannot read included ssh config ${file}: ${(err as Error)?.message ?? err}`,
          { path: file },
        );
      }
      out.push(...expandIncludes(parseText(text, file), ctx, depth + 1));
    }
  }
  return out;
}

/** Files matching an absolute path with `*`, `?` and `[...]` in any segment, sorted (like glob(3)). */
export function globFiles(pattern: string): string[] {
  const segments = pattern.split("/").filter((s, i) => s !== "" || i === 0);
  let candidates = ["/"];
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i];
    const last = i === segments.length - 1;
    const next: string[] = [];
    for (const dir of candidates) {
      if (!/[*?[]/.test(seg)) {
        next.push(path.join(dir, seg));
        continue;
      }
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      const re = segmentRegex(seg);
      for (const name of names.sort()) {
        if (name.startsWith(".") && !seg.startsWith(".")) continue;
        if (re.test(name)) next.push(path.join(dir, name));
      }
    }
    candidates = last ? next : next.filter((p) => isDir(p));
  }
  return candidates.filter((p) => isFile(p));
}

function segmentRegex(seg: string): RegExp {
  let re = "";
  for (let i = 0; i < seg.length; i++) {
    const ch = seg[i];
    if (ch === "*") re += "[^/]*";
    else if (ch === "?") re += "[^/]";
    else if (ch === "[") {
      const end = seg.indexOf("]", i + 1);
      if (end < 0) re += "\\[";
      else {
        const body = seg
          .slice(i + 1, end)
          .replace(/^!/, "^")
          .replace(/\\/g, "\\\\");
        re += `[${body}]`;
        i = end;
      }
    } else re += ch.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}
function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function concreteAliases(lines: Line[]): string[] {
  const out: string[] = [];
  for (const line of lines) {
    if (!isSection(line) || !/^host$/i.test(line.param)) continue;
    for (const v of values(line).flatMap((x) => x.split(","))) {
      const alias = v.trim();
      if (alias && !/[*?!]/.test(alias) && !out.includes(alias)) out.push(alias);
    }
  }
  return out;
}

function first(v: string | string[] | undefined): string | undefined {
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v[0] : v;
}
function all(v: string | string[] | undefined): string[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/** ssh_config's %-tokens; an unknown token is an error as in OpenSSH. */
function expandTokens(value: string, tokens: Record<string, string>, directive: string): string {
  return value.replace(/%(.)/g, (m, t: string) => {
    const v = tokens[t];
    if (v === undefined)
      throw new NodeError(
        "SSH_CONFIG_INVALID",
        `${directive} "${value}" uses %${t}, which rbee does not expand; write the value out instead`,
      );
    return v;
  });
}

function parsePort(v: string, host: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new NodeError("SSH_CONFIG_INVALID", `Port "${v}" for Host "${host}" is not a port number (1-65535)`, {
      alias: host,
    });
  }
  return n;
}

function yesNo(v: string | undefined, dflt: boolean, directive: string): boolean {
  if (v === undefined) return dflt;
  const s = v.toLowerCase();
  if (s === "yes" || s === "true") return true;
  if (s === "no" || s === "false") return false;
  throw new NodeError("SSH_CONFIG_INVALID", `${directive} must be yes or no, not "${v}"`);
}

function parseStrict(v: string | undefined): StrictHostKeyChecking {
  const s = (v ?? "ask").toLowerCase();
  if (s === "yes" || s === "ask" || s === "accept-new" || s === "no") return s;
  if (s === "off") return "no";
  if (s === "true") return "yes";
  if (s === "false") return "no";
  throw new NodeError("SSH_CONFIG_INVALID", `StrictHostKeyChecking must be yes, ask, accept-new or no, not "${v}"`);
}

function optSeconds(v: string | undefined, directive: string): number | undefined {
  const n = optInt(v, directive);
  return n === undefined || n === 0 ? undefined : n * 1000;
}
function optInt(v: string | undefined, directive: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw new NodeError("SSH_CONFIG_INVALID", `${directive} must be a whole number, not "${v}"`);
  return n;
}

/** `[user@]host[:port]`, `[user@][v6addr]:port` or `ssh://[user@]host[:port]`. */
export function parseJumpHop(hop: string): { host: string; user?: string; port?: number } {
  let rest = hop.startsWith("ssh://") ? hop.slice(6) : hop;
  let user: string | undefined;
  const at = rest.lastIndexOf("@");
  if (at >= 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
  }
  let host = rest;
  let portText: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(rest);
  if (v6) {
    host = v6[1];
    portText = v6[2];
  } else if (rest.split(":").length === 2) {
    [host, portText] = rest.split(":");
  }
  if (!host) throw new NodeError("SSH_CONFIG_INVALID", `ProxyJump hop "${hop}" names no host`);
  return { host, user: user || undefined, port: portText === undefined ? undefined : parsePort(portText, host) };
}
