// The hive process on a node: start it detached (hive-start.sh) and wait for its hive.json, stop it
// (hive-stop.sh), its token, and whether it answers /v1/health through the SSH connection.

import { randomBytes } from "node:crypto";
import { RbeeError } from "@rbee/hive-agent/protocol";
import { HiveClient } from "../keeper/hive-client";
import type { SshConnection } from "./connection";
import { parseHiveInfo } from "./deploy-probe";
import type { DeployEvent, DeployOptions, HiveInfo } from "./deploy-types";
import { NodeError } from "./errors";
import { parseKv, runScript } from "./remote-scripts";
import { sshTransport } from "./ssh-transport";

/** /v1/health through the SSH connection, with the expected version. */
export async function hiveAnswers(
  conn: SshConnection,
  address: string,
  token: string,
  version: string,
  attempts = 1,
): Promise<boolean> {
  const transport = sshTransport(conn);
  try {
    const client = new HiveClient({
      transport,
      baseUrl: address,
      token,
      nodeName: conn.alias,
      requestTimeoutMs: 10_000,
      retry: { attempts, baseMs: 100 },
    });
    const h = await client.health();
    return h.status === "alive" && h.version === version;
  } catch (err) {
    if (err instanceof RbeeError && err.code === "INVALID_API_KEY") {
      throw new NodeError(
        "HIVE_START_FAILED",
        `the hive on ${conn.alias} refuses the token in its own token file; uninstall and deploy again (rbee nodes uninstall ${conn.alias})`,
        { alias: conn.alias },
      );
    }
    return false;
  } finally {
    await transport.close();
  }
}

/** SIGTERM (the hive stops its workers first), then SIGKILL after the grace time. */
export async function stopHive(
  conn: SshConnection,
  pid: number,
  emit: (e: DeployEvent) => void,
  graceMs = 35_000,
): Promise<void> {
  emit({ step: "stop", status: "started", message: `stopping the running hive (pid ${pid})` });
  const r = await runScript(conn, "hive-stop", [pid, Math.ceil(graceMs / 100)], { timeoutMs: graceMs + 15_000 });
  emit({
    step: "stop",
    status: "done",
    message: r.stdout.includes("killed") ? `hive ${pid} did not stop in time and was killed` : `hive ${pid} stopped`,
  });
}

/** A new token for the hive, written on the node (mode 0600); it travels on stdin, never on a command line. */
export async function writeToken(conn: SshConnection): Promise<string> {
  const token = randomBytes(32).toString("base64url");
  const r = await runScript(conn, "hive-token-write", [], { stdin: token });
  if (r.code !== 0)
    throw new NodeError("HIVE_START_FAILED", `writing the hive token on ${conn.alias} failed: ${r.stderr.trim()}`, {
      alias: conn.alias,
    });
  return token;
}

/** Where a hive is started from: the node program, the agent's folder, and the hive's home. */
export interface HiveLaunch {
  nodePath: string;
  agentDir: string;
  hiveHome: string;
}

/** Starts the hive detached from the SSH session and waits for its hive.json. */
export async function startHive(
  conn: SshConnection,
  launch: HiveLaunch,
  opts: Pick<DeployOptions, "startTimeoutMs" | "daemonArgs">,
): Promise<HiveInfo> {
  const limitMs = opts.startTimeoutMs ?? 30_000;
  // RBEE_NATIVE_BUILD and RBEE_CALIBRATE set where the keeper runs apply to the hives it starts on SSH nodes too.
  const nativeBuild = process.env.RBEE_NATIVE_BUILD ? ["--native-build", process.env.RBEE_NATIVE_BUILD] : [];
  const calibrate = process.env.RBEE_CALIBRATE ? ["--calibrate", process.env.RBEE_CALIBRATE] : [];
  const r = await runScript(
    conn,
    "hive-start",
    [
      launch.nodePath,
      launch.agentDir,
      Math.ceil(limitMs / 100),
      ...nativeBuild,
      ...calibrate,
      ...(opts.daemonArgs ?? []),
    ],
    { timeoutMs: limitMs + 15_000 },
  );
  const kv = parseKv(r.stdout);
  if (r.code === 0) {
    const info = parseHiveInfo(kv.get("hive_json")![0], launch.hiveHome);
    if (info?.address) return info;
  }
  const logTail = r.stdout
    .split("\n")
    .filter((l) => !/^(pid|state)=/.test(l))
    .join("\n")
    .trim();
  const why =
    kv.get("state")?.[0] === "timeout" ? `did not write hive.json within ${limitMs / 1000} s` : "exited at start";
  throw new NodeError(
    "HIVE_START_FAILED",
    `the hive on ${conn.alias} ${why}; the end of its log:\n${logTail || r.stderr.trim() || "(empty)"}`,
    { alias: conn.alias },
  );
}
