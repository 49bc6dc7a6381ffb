// Starts code-server (VS Code's server and web workbench, installed by install-code-server.sh) for
// one test run: loopback only, no authentication, and every folder it writes — user data,
// extensions, its config, XDG data — inside the run's scratch folder, never the home folder.
import { ChildProcess, spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "./suites";
import { writeUserSettings } from "./user-settings";

export const CODE_SERVER_VERSION = "4.100.3";

// code-server's extension gallery defaults to open-vsx.org. An empty gallery (no serviceUrl) turns
// the gallery off, so the workbench never asks the internet for extensions (tests talk to loopback only).
const NO_GALLERY = "{}";

export interface CodeServerOptions {
  /** Scratch folder of this run; code-server's state goes in subfolders. */
  scratch: string;
  /** Extra environment for code-server and hence the extension host. */
  env?: Record<string, string>;
  /** User settings, over user-settings.ts's QUIET_SETTINGS. */
  settings?: Record<string, unknown>;
  /** code-server's stdout and stderr are appended here. */
  logFile: string;
  /** How long to wait for "HTTP server listening"; default 60 s. */
  startTimeoutMs?: number;
}

export interface RunningCodeServer {
  /** e.g. http://127.0.0.1:41235/ */
  url: string;
  /** host:port, the remote authority of vscode-remote:// URIs in this window. */
  authority: string;
  /** Settles when code-server's main process exits (for any reason). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Stops code-server and every process it started; safe to call twice. */
  stop(): Promise<void>;
}

export class CodeServerError extends Error {
  constructor(
    readonly code: "VSCODE_NOT_INSTALLED" | "VSCODE_START_FAILED",
    message: string,
  ) {
    super(message);
    this.name = "CodeServerError";
  }
}

/** The installed code-server's entry script; throws with the fix when it is missing. */
export function codeServerEntry(): string {
  const dir = process.env.RBEE_CODE_SERVER_DIR ?? path.join(REPO_ROOT, ".cache", "code-server");
  const entry = path.join(dir, "node_modules", "code-server", "out", "node", "entry.js");
  if (!existsSync(path.join(dir, `.installed-${CODE_SERVER_VERSION}`)) || !existsSync(entry)) {
    throw new CodeServerError(
      "VSCODE_NOT_INSTALLED",
      `code-server ${CODE_SERVER_VERSION} is not installed in ${dir}: run test/vscode/install-code-server.sh (needs apt packages chromium ripgrep libkrb5-dev)`,
    );
  }
  return entry;
}

export async function startCodeServer(options: CodeServerOptions): Promise<RunningCodeServer> {
  const entry = codeServerEntry();
  const dirs = {
    userData: path.join(options.scratch, "user-data"),
    extensions: path.join(options.scratch, "extensions"),
    xdgData: path.join(options.scratch, "xdg-data"),
    xdgConfig: path.join(options.scratch, "xdg-config"),
    xdgCache: path.join(options.scratch, "xdg-cache"),
  };
  for (const dir of Object.values(dirs)) mkdirSync(dir, { recursive: true });
  writeUserSettings(dirs.userData, options.settings);
  // Its own config file, so code-server neither reads nor writes ~/.config/code-server/config.yaml.
  const config = path.join(options.scratch, "code-server.yaml");
  writeFileSync(config, "bind-addr: 127.0.0.1:0\nauth: none\ncert: false\n");

  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of Object.keys(env)) {
    // Inside a VS Code terminal, VSCODE_IPC_HOOK_CLI would make code-server hand the request to that
    // outer VS Code instead of starting; NODE_TEST_CONTEXT would make node:test report to our stdout.
    if (key.startsWith("VSCODE_") || key === "ELECTRON_RUN_AS_NODE" || key === "NODE_TEST_CONTEXT") delete env[key];
  }
  Object.assign(env, {
    XDG_DATA_HOME: dirs.xdgData,
    XDG_CONFIG_HOME: dirs.xdgConfig,
    XDG_CACHE_HOME: dirs.xdgCache,
    EXTENSIONS_GALLERY: NO_GALLERY,
    ...options.env,
  });

  const args = [
    entry,
    "--config",
    config,
    "--bind-addr",
    "127.0.0.1:0",
    "--auth",
    "none",
    "--user-data-dir",
    dirs.userData,
    "--extensions-dir",
    dirs.extensions,
    "--disable-telemetry",
    "--disable-update-check",
    "--disable-workspace-trust",
    "--disable-getting-started-override",
    "--disable-proxy",
    "--ignore-last-opened",
  ];
  const log = createWriteStream(options.logFile, { flags: "a" });
  // Its own process group, so that stop() reaches the extension host, pty host and file watcher too.
  const child = spawn(process.execPath, args, { env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  const releaseSafetyNet = killGroupWhenWeDie(child);

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  let recent = "";
  const listening = new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      if (!log.writableEnded) log.write(chunk); // output can trail the exit that stop() waited for
      recent = (recent + chunk.toString("utf8")).slice(-4000);
      const m = /HTTP server listening on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(recent);
      if (m) resolve(m[1]);
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("error", (err) =>
      reject(new CodeServerError("VSCODE_START_FAILED", `cannot run code-server: ${err.message}`)),
    );
    void exited.then(({ code, signal }) =>
      reject(
        new CodeServerError(
          "VSCODE_START_FAILED",
          `code-server exited (${code ?? signal}) before listening:\n${recent}`,
        ),
      ),
    );
  });

  listening.catch(() => undefined); // it may still reject after the start-up timeout decided

  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      await terminateGroup(child, exited);
      releaseSafetyNet();
      await new Promise<void>((resolve) => log.end(() => resolve()));
    })());

  const timeoutMs = options.startTimeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    const url = await Promise.race([
      listening,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new CodeServerError(
                "VSCODE_START_FAILED",
                `code-server did not listen within ${timeoutMs} ms:\n${recent}`,
              ),
            ),
          timeoutMs,
        );
      }),
    ]);
    return { url, authority: new URL(url).host, exited, stop };
  } catch (err) {
    await stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Its own process group keeps code-server out of the terminal's Ctrl+C, so if this process ends
 * before stop() (Ctrl+C, a runner's SIGTERM, an uncaught error), take the group down with it.
 */
function killGroupWhenWeDie(child: ChildProcess): () => void {
  const onExit = () => killGroup(child, "SIGKILL");
  const onSignal = (signal: NodeJS.Signals) => {
    killGroup(child, "SIGKILL");
    // Alone on this signal, our listener has replaced the default exit: restore it and re-raise.
    if (process.listenerCount(signal) === 1) {
      release();
      process.kill(process.pid, signal);
    }
  };
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];
  const release = () => {
    process.removeListener("exit", onExit);
    for (const s of signals) process.removeListener(s, onSignal);
  };
  process.once("exit", onExit);
  for (const s of signals) process.on(s, onSignal);
  return release;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-child.pid!, signal);
    return true;
  } catch {
    return false; // the group is gone
  }
}

/** SIGTERM to the whole group, a grace period for a clean shutdown, then SIGKILL to what is left. */
async function terminateGroup(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.pid === undefined) return;
  killGroup(child, "SIGTERM");
  const deadline = Date.now() + 5_000;
  await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
  // The main process may be gone while its children are still shutting down.
  while (Date.now() < deadline && killGroup(child, 0)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  killGroup(child, "SIGKILL");
  await exited;
}
