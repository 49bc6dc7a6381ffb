// Runs the real `rbee serve` (dist/cli.js) as a child process and talks to it: its URL, its token,
// its /metrics, and waiting on them with a deadline.

import { writeFileSync } from "node:fs";
import path from "node:path";
import { runCli, startCli, type RunningCli } from "./cli";
import { waitUntil } from "./wait";

export interface RunningGateway {
  cli: RunningCli;
  url: string;
  token: string;
  /** fetch with the gateway's bearer token. */
  fetch(p: string, init?: RequestInit): Promise<Response>;
  metrics(): Promise<string>;
  /** The value of one series (sum over series matching every given label), 0 when absent. */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** Polls until `check` returns true (deadline 60 s). */
  until(what: string, check: () => Promise<boolean> | boolean, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export function writeGatewayConfig(file: string, config: unknown): string {
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

/** test/helpers/wait.ts's waitUntil, phrased as "until <what> holds" (deadline 60 s by default). */
export async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 60_000): Promise<void> {
  await waitUntil(check, { what, timeout: timeoutMs });
}

export async function startGateway(args: string[], env: NodeJS.ProcessEnv): Promise<RunningGateway> {
  const cli = startCli(["serve", "--port", "0", ...args], { RBEE_NATIVE_BUILD: "off", ...env });
  await until(
    "rbee serve to listen",
    () => {
      if (cli.proc.exitCode !== null) throw new Error(`rbee serve exited: ${cli.stderr}`);
      return /listening on http:\/\/127\.0\.0\.1:\d+/.test(cli.stderr);
    },
    30_000,
  );
  const url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(cli.stderr)![1];
  const shown = await runCli(["serve", "--show-token"], env);
  if (shown.code !== 0) throw new Error(shown.stderr);
  const token = shown.stdout.trim();
  const authed = (p: string, init: RequestInit = {}) =>
    fetch(url + p, {
      ...init,
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
        ...(init.headers as Record<string, string>),
      },
    });
  const metrics = async () => (await authed("/metrics")).text();
  return {
    cli,
    url,
    token,
    metrics,
    fetch: authed,
    async metric(name, labels = {}) {
      let sum = 0;
      for (const line of (await metrics()).split("\n")) {
        const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
        if (!m || m[1] !== name) continue;
        const have = Object.fromEntries(
          [...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]),
        );
        if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
      }
      return sum;
    },
    until,
    async stop() {
      if (cli.proc.exitCode === null) {
        cli.proc.kill("SIGTERM");
        await cli.done;
      }
    },
  };
}

/** Requests logged by rbee serve (one line each), parsed. */
export function requestLog(g: RunningGateway): { method: string; path: string; status: number; line: string }[] {
  return g.cli.stderr
    .split("\n")
    .map((line) => /^\S+Z (\w+) (\S+) (\d+) /.exec(line) && { line, m: /^\S+Z (\w+) (\S+) (\d+) /.exec(line)! })
    .filter((x): x is { line: string; m: RegExpExecArray } => Boolean(x))
    .map(({ line, m }) => ({ method: m[1], path: m[2], status: Number(m[3]), line }));
}

export const gatewayConfigPath = (home: string) => path.join(home, "gateway.json");
