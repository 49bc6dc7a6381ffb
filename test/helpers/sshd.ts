// Real SSH "nodes" for tests: one Debian sshd per node, each on its own loopback address
// (127.0.0.2, 127.0.0.3, …) and a free port, with its own host key, its own authorized_keys and its
// own install folder (docs/testing.md, "SSH nodes"). Traffic stays on 127.0.0.0/8.
//
// How the per-node install folder works: every node logs in as the same local user (root here),
// but each sshd's config sets `SetEnv HOME=<node>/home`, so `$HOME/.rbee` on each node is a
// different folder, exactly as on separate machines. Remote code must therefore use $HOME (sshd
// itself still chdirs to the passwd home, and SFTP starts there, so remote paths must be absolute).
// A node can also get its own PATH (e.g. one without `node`, to test the deploy error).
//
// The test's ssh config (aliases node1, node2, … with HostName/Port/User/IdentityFile and
// UserKnownHostsFile) and that known_hosts, holding every node's host key, are written next to the
// nodes.

import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export interface SshdNodeOptions {
  /** Host alias in the generated ssh config; default node1, node2, … */
  alias?: string;
  /** A loopback address (127.x.y.z); anything else is refused (tests stay on loopback). */
  address: string;
  /** PATH for sessions on this node; default the system PATH. */
  path?: string;
  /** Leave `node` (and npm/npx) out of the session PATH. */
  withoutNode?: boolean;
  /**
   * A bare node: sshd runs in a private mount namespace where node, npm, npx and corepack are
   * /dev/null (so no session can run them, whatever its PATH); the rest of the machine is untouched.
   */
  bare?: boolean;
  /** `AllowTcpForwarding` of this node's sshd (default yes). */
  allowTcpForwarding?: boolean;
  /** More environment for sessions (sshd's SetEnv), e.g. the software GPUs of test/helpers/lavapipe.ts. */
  env?: Record<string, string>;
}

export interface SshdNode {
  alias: string;
  address: string;
  port: number;
  /** This node's folder: sshd config, host key, log, home. */
  root: string;
  /** $HOME of sessions on this node. */
  home: string;
  hostKeyPath: string;
  /** The host public key as an SSH wire blob (what a client sees in the handshake). */
  hostKeyBlob: Buffer;
  /** `<type> <base64>` of the host public key. */
  hostPublicKey: string;
  pid: number;
  /** sshd's own log (stderr, -e). */
  log(): string;
  /** Kills the per-connection sshd processes (drops every SSH connection to this node). */
  killSessions(): number;
  /** Replaces the host key with a fresh one and restarts sshd on the same port. */
  rotateHostKey(): Promise<void>;
}

export interface SshdCluster {
  dir: string;
  nodes: SshdNode[];
  node(alias: string): SshdNode;
  /** The private key every node authorizes. */
  clientKeyPath: string;
  /** A second key no node authorizes (for the auth-failure test). */
  strangerKeyPath: string;
  /** ssh config with one Host per node. */
  sshConfigPath: string;
  /** known_hosts holding every node's current host key. */
  knownHostsPath: string;
  /** Adds a public key (`<type> <base64>` line) to every node's authorized_keys. */
  authorize(publicKeyLine: string): void;
  /** Stops every sshd and every process that runs from this cluster's folders; removes the folder. */
  stop(): Promise<void>;
}

const SSHD = "/usr/sbin/sshd";

/** Installs Debian's openssh-server when sshd is missing (CI machines start bare). */
export function ensureSshd(): void {
  if (existsSync(SSHD) && hasCommand("ssh-keygen")) return;
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    execFileSync("apt-get", ["update", "-q"], { stdio: "ignore", env });
    execFileSync("apt-get", ["install", "-y", "-q", "--no-install-recommends", "openssh-server", "openssh-client"], {
      stdio: "ignore",
      env,
    });
  } catch (err: any) {
    throw new Error(
      `${SSHD} is missing and apt-get could not install openssh-server (${err?.message ?? err}); install it and rerun the tests`,
    );
  }
  if (!existsSync(SSHD)) throw new Error(`${SSHD} is still missing after installing openssh-server`);
}

function hasCommand(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function assertLoopback(address: string): void {
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address))
    throw new Error(`test sshd must listen on 127.0.0.0/8, not ${address}`);
}

export function keygen(file: string, comment: string): void {
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", file], { stdio: "ignore" });
}

/** `<type> <base64>` and the decoded blob of a .pub file. */
export function readPublicKey(pubFile: string): { line: string; blob: Buffer } {
  const [type, b64] = readFileSync(pubFile, "utf8").trim().split(/\s+/);
  return { line: `${type} ${b64}`, blob: Buffer.from(b64, "base64") };
}

async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, address, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Children of a pid, from /proc. */
function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

/** Processes whose command line mentions a path under `dir` (detached daemons started over SSH). */
function pidsMentioning(dir: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8").includes(dir)) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

function kill(pid: number, signal: NodeJS.Signals = "SIGTERM"): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** A PATH folder with every command of /usr/bin except node, npm, npx and corepack. */
function pathWithoutNode(root: string): string {
  const bin = path.join(root, "bin-without-node");
  mkdirSync(bin, { recursive: true });
  for (const name of readdirSync("/usr/bin")) {
    if (["node", "nodejs", "npm", "npx", "corepack"].includes(name)) continue;
    symlinkSync(path.join("/usr/bin", name), path.join(bin, name));
  }
  return `${bin}:/usr/sbin`;
}

/** sh lines that bind /dev/null over node, npm, npx and corepack (each link and its target). */
function hideNodeScript(): string {
  return ["node", "nodejs", "npm", "npx", "corepack"]
    .map(
      (c) =>
        `if P=$(command -v ${c}); then mount --bind /dev/null "$(readlink -f "$P")" && { [ "$P" = "$(readlink -f "$P")" ] || mount --bind /dev/null "$P"; } || exit 97; fi`,
    )
    .join("\n");
}

class RunningNode implements SshdNode {
  pid = 0;
  hostKeyBlob!: Buffer;
  hostPublicKey!: string;
  private proc?: ChildProcess;
  private stderr = "";

  constructor(
    readonly alias: string,
    readonly address: string,
    readonly port: number,
    readonly root: string,
    readonly home: string,
    readonly hostKeyPath: string,
    private readonly configPath: string,
    private readonly bare = false,
  ) {}

  log(): string {
    return this.stderr;
  }

  loadHostKey(): void {
    const pub = readPublicKey(this.hostKeyPath + ".pub");
    this.hostKeyBlob = pub.blob;
    this.hostPublicKey = pub.line;
  }

  async start(): Promise<void> {
    mkdirSync("/run/sshd", { recursive: true }); // sshd's privilege-separation folder
    const proc = this.bare
      ? spawn(
          "unshare",
          [
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            `${hideNodeScript()}\nexec ${SSHD} -D -e -f "$0"`,
            this.configPath,
          ],
          { stdio: ["ignore", "ignore", "pipe"] },
        )
      : spawn(SSHD, ["-D", "-e", "-f", this.configPath], { stdio: ["ignore", "ignore", "pipe"] });
    this.proc = proc;
    this.pid = proc.pid ?? 0;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`sshd for ${this.alias} did not start in 10 s:\n${this.stderr}`)),
        10_000,
      );
      proc.stderr!.setEncoding("utf8");
      proc.stderr!.on("data", (chunk: string) => {
        this.stderr += chunk;
        if (this.stderr.includes(`Server listening on ${this.address} port ${this.port}`)) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`sshd for ${this.alias} exited with ${code}:\n${this.stderr}`));
      });
    });
    proc.removeAllListeners("exit");
  }

  killSessions(): number {
    let n = 0;
    for (const pid of childPids(this.pid)) if (kill(pid, "SIGKILL")) n++;
    return n;
  }

  async stop(): Promise<void> {
    this.killSessions();
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.once("exit", () => resolve());
      kill(this.pid, "SIGTERM");
    });
  }

  async rotateHostKey(): Promise<void> {
    await this.stop();
    rmSync(this.hostKeyPath, { force: true });
    rmSync(this.hostKeyPath + ".pub", { force: true });
    keygen(this.hostKeyPath, `host-${this.alias}-rotated`);
    this.loadHostKey();
    await this.start();
  }
}

export async function startSshdCluster(opts: { nodes: SshdNodeOptions[] }): Promise<SshdCluster> {
  ensureSshd();
  const dir = mkdtempSync(path.join(os.tmpdir(), "rbee-sshd-"));
  const clientKeyPath = path.join(dir, "client_ed25519");
  const strangerKeyPath = path.join(dir, "stranger_ed25519");
  keygen(clientKeyPath, "rbee-test-client");
  keygen(strangerKeyPath, "rbee-test-stranger");
  const authorized = readFileSync(clientKeyPath + ".pub", "utf8");

  const nodes: RunningNode[] = [];
  const cluster: SshdCluster = {
    dir,
    nodes,
    node(alias) {
      const n = nodes.find((x) => x.alias === alias);
      if (!n) throw new Error(`no test node ${alias}`);
      return n;
    },
    clientKeyPath,
    strangerKeyPath,
    sshConfigPath: path.join(dir, "ssh_config"),
    knownHostsPath: path.join(dir, "known_hosts"),
    authorize(line) {
      for (const n of nodes) appendFileSync(path.join(n.root, "authorized_keys"), line.trim() + "\n");
    },
    async stop() {
      for (const n of nodes) await n.stop();
      // Detached daemons started over SSH outlive their session; they all run from this folder.
      for (const pid of pidsMentioning(dir)) kill(pid, "SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    for (const [i, o] of opts.nodes.entries()) {
      assertLoopback(o.address);
      const alias = o.alias ?? `node${i + 1}`;
      const root = path.join(dir, alias);
      const home = path.join(root, "home");
      mkdirSync(home, { recursive: true });
      const hostKeyPath = path.join(root, "ssh_host_ed25519_key");
      keygen(hostKeyPath, `host-${alias}`);
      const authorizedKeys = path.join(root, "authorized_keys");
      writeFileSync(authorizedKeys, authorized);
      const port = await freePort(o.address);
      const sessionPath = o.path ?? (o.withoutNode ? pathWithoutNode(root) : undefined);
      const configPath = path.join(root, "sshd_config");
      writeFileSync(
        configPath,
        [
          `ListenAddress ${o.address}:${port}`,
          `HostKey ${hostKeyPath}`,
          `PidFile ${path.join(root, "sshd.pid")}`,
          `AuthorizedKeysFile ${authorizedKeys}`,
          "UsePAM no",
          "StrictModes no",
          "PermitRootLogin prohibit-password",
          "PubkeyAuthentication yes",
          "PasswordAuthentication no",
          "KbdInteractiveAuthentication no",
          `AllowTcpForwarding ${o.allowTcpForwarding === false ? "no" : "yes"}`,
          "MaxSessions 64",
          "MaxStartups 64",
          "LogLevel VERBOSE",
          "Subsystem sftp internal-sftp",
          `SetEnv HOME=${home}${sessionPath ? ` PATH=${sessionPath}` : ""}${Object.entries(o.env ?? {})
            .map(([k, v]) => ` ${k}=${v}`)
            .join("")}`,
          "",
        ].join("\n"),
      );
      const node = new RunningNode(alias, o.address, port, root, home, hostKeyPath, configPath, o.bare);
      node.loadHostKey();
      nodes.push(node);
      await node.start();
    }
  } catch (err) {
    await cluster.stop();
    throw err;
  }

  writeFileSync(
    cluster.sshConfigPath,
    nodes
      .map((n) =>
        [
          `Host ${n.alias}`,
          `  HostName ${n.address}`,
          `  Port ${n.port}`,
          "  User root",
          `  IdentityFile ${clientKeyPath}`,
          "  IdentitiesOnly yes",
          `  UserKnownHostsFile ${cluster.knownHostsPath}`,
          "",
        ].join("\n"),
      )
      .join("\n"),
  );
  writeKnownHosts(cluster);
  return cluster;
}

/** Rewrites the cluster's known_hosts with every node's current host key. */
export function writeKnownHosts(cluster: SshdCluster): void {
  writeFileSync(
    cluster.knownHostsPath,
    cluster.nodes.map((n) => `[${n.address}]:${n.port} ${n.hostPublicKey}\n`).join(""),
  );
}
