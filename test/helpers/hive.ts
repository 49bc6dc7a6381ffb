// Starts a real hive-agent daemon (dist/hive-agent.js, as deployed) in a temporary home for a test.

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, writeFileSync, existsSync, rmSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { HiveClient } from "../../extension/src/keeper/hive-client";
import { loopbackTransport, type Transport } from "../../extension/src/keeper/transport";
import { socketPathOf } from "../../hive-agent/src/protocol";
import { waitUntil } from "./wait";

export const REPO_ROOT = path.resolve(__dirname, "..", "..");
export const AGENT_BUNDLE = path.join(REPO_ROOT, "dist", "hive-agent.js");

export interface TestHive {
  proc: ChildProcess;
  /** Where it listens: `unix:<home>/hive.sock`. */
  address: string;
  /** Its socket path (for raw requests with undici's `connect: { socketPath }`). */
  socketPath: string;
  token: string;
  home: string;
  logFile: string;
  client: HiveClient;
  transport: Transport;
  log(): string;
  stop(): Promise<void>;
}

export async function startHive(extraArgs: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<TestHive> {
  if (!existsSync(AGENT_BUNDLE))
    throw new Error(`${AGENT_BUNDLE} is missing: run the tests through test/run.mjs (it builds first)`);
  const home = mkdtempSync(path.join(tmpdir(), "rbee-hive-"));
  chmodSync(home, 0o700);
  const token = randomBytes(24).toString("base64url");
  const tokenFile = path.join(home, "token");
  writeFileSync(tokenFile, token, { mode: 0o600 });
  const logFile = path.join(home, "hive.log");
  const logFd = openSync(logFile, "a");
  const proc = spawn(
    process.execPath,
    [
      AGENT_BUNDLE,
      "daemon",
      "--token-file",
      tokenFile,
      "--home",
      home,
      "--native-build",
      process.env.RBEE_NATIVE_BUILD ?? "off",
      ...extraArgs,
    ],
    {
      stdio: ["ignore", "pipe", logFd],
      env: { ...process.env, ...env },
    },
  );
  const address = await new Promise<string>((resolve, reject) => {
    let out = "";
    proc.stdout!.on("data", (d) => {
      out += d;
      const m = /listening on (\S+)\n/.exec(out);
      if (m) resolve(m[1]);
    });
    proc.once("exit", (code) => reject(new Error(`hive exited with ${code}: ${readFileSync(logFile, "utf8")}`)));
  });
  const transport = loopbackTransport();
  const client = new HiveClient({ transport, baseUrl: address, token, nodeName: "localhost" });
  return {
    proc,
    address,
    socketPath: socketPathOf(address) ?? "",
    token,
    home,
    logFile,
    client,
    transport,
    log: () => readFileSync(logFile, "utf8"),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        await new Promise((r) => proc.once("exit", r));
      }
      await transport.close();
      rmSync(home, { recursive: true, force: true });
    },
  };
}

/** Waits until a spawned worker reports ready (polls /v1/ready like the keeper does). */
export function waitReady(hive: TestHive, workerId: string, timeoutMs = 60_000) {
  return waitUntil(
    async () => {
      const w = await hive.client.worker(workerId);
      return w.state !== "loading" && w;
    },
    { timeout: timeoutMs, intervalMs: 100, what: `worker ${workerId} to be ready` },
  );
}

/** Collects a whole stream. */
export async function collect<E>(it: AsyncIterable<E>): Promise<E[]> {
  const out: E[] = [];
  for await (const e of it) out.push(e);
  return out;
}

/** Whether a process still exists (the registry's lock uses the same check). */
export { isPidAlive as isAlive } from "../../hive-agent/src/util/process";
