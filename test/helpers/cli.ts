// Runs the real `rbee` CLI bundle (dist/cli.js) as a child process with its own RBEE_HOME.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { REPO_ROOT } from "./hive";

export const CLI_BUNDLE = path.join(REPO_ROOT, "dist", "cli.js");

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunningCli {
  proc: ChildProcess;
  stdout: string;
  stderr: string;
  /** Resolves when stdout has received at least n characters. */
  waitForStdout(n: number): Promise<void>;
  done: Promise<CliResult>;
}

export function newRbeeHome(): string {
  return mkdtempSync(path.join(tmpdir(), "rbee-home-"));
}

export function startCli(args: string[], env: NodeJS.ProcessEnv): RunningCli {
  const proc = spawn(process.execPath, [CLI_BUNDLE, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const r: RunningCli = {
    proc,
    stdout: "",
    stderr: "",
    waitForStdout: (n) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (r.stdout.length >= n) {
            proc.stdout!.off("data", check);
            resolve();
          }
        };
        proc.stdout!.on("data", check);
        proc.once("exit", () => reject(new Error(`rbee exited before printing ${n} characters: ${r.stderr}`)));
        check();
      }),
    done: new Promise((resolve) =>
      proc.once("exit", (code, signal) => resolve({ code, signal, stdout: r.stdout, stderr: r.stderr })),
    ),
  };
  proc.stdout!.on("data", (d) => (r.stdout += d));
  proc.stderr!.on("data", (d) => (r.stderr += d));
  return r;
}

export function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return startCli(args, env).done;
}
