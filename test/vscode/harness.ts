// Runs an extension's tests inside a real VS Code: code-server 4.100.3 (VS Code 1.100.3) on
// 127.0.0.1 and Debian's chromium driven by playwright-core (docs/testing.md, "The VS Code suite").
//
// The workbench is opened with a `payload` query parameter — a JSON list of [key, value] pairs that
// VS Code's web workbench reads at start-up (vs/code/browser/workbench/workbench.ts), the mechanism
// @vscode/test-web uses. `extensionDevelopmentPath` and `extensionTestsPath` are vscode-remote://
// URIs, so the extension and its test module load in code-server's Node extension host. When the
// test module's run() settles, VS Code calls `window.codeAutomationExit(code, logs)`, and meanwhile
// sends every log line (the extension host's console included) to `window.codeAutomationLog(type,
// args)`; the harness defines both with playwright before the page loads.
//
// The in-host test drives the UI through the bridge (bridge-client.ts → bridge-server.ts), whose
// Unix socket path reaches the extension host in RBEE_VSCODE_BRIDGE.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, appendFileSync, readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium, Browser, Page } from "playwright-core";
import { BRIDGE_SOCKET_ENV, SCREENSHOT_NAME as SAFE_NAME } from "./bridge-protocol";
import { BridgeServer, startBridgeServer } from "./bridge-server";
import { RunningCodeServer, startCodeServer } from "./code-server";
import { bundleSuite } from "./suite-bundle";
import { REPO_ROOT, VsCodeSuite } from "./suites";

export const CHROMIUM_PATH = "/usr/bin/chromium";
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
// Tests send traffic only to loopback (docs/testing.md), the browser too: every request for a
// non-loopback address goes to a closed loopback port and fails (chromium never proxies loopback).
const LOOPBACK_ONLY_ARGS: readonly string[] = ["--proxy-server=http://127.0.0.1:9"];
export const DEFAULT_OUTPUT_DIR = path.join(REPO_ROOT, "test-output", "vscode");

export interface VsCodeRunOptions extends VsCodeSuite {
  /** Folder opened as the workspace; default: an empty folder in the run's scratch folder. */
  workspaceFolder?: string;
  /** Extra environment for code-server and the extension host (e.g. HOME, RBEE_HOME). */
  env?: Record<string, string>;
  /** User settings, over user-settings.ts's QUIET_SETTINGS. */
  settings?: Record<string, unknown>;
  /** Screenshots and logs go here; default test-output/vscode/. */
  outputDir?: string;
  /** Limit for the whole run, start-up included; default 240 s. */
  timeoutMs?: number;
  viewport?: { width: number; height: number };
}

export interface VsCodeRunResult {
  /** What VS Code reported through codeAutomationExit: 0 when the test module's run() resolved. */
  exitCode: number;
  /** Lines VS Code logged for the automation: the in-host tests' console output and the workbench log. */
  output: string[];
  /** Screenshots the in-host test asked for, absolute paths in order. */
  screenshots: string[];
  durationMs: number;
  /** The run's log files: code-server's stdout/stderr, the browser console, the automation log. */
  logs: { server: string; browser: string; host: string };
  /**
   * The run's scratch folder, deleted at teardown. Every process the run started (code-server, the
   * extension host, chromium) has it in its environment, which is how a test can check none is left.
   */
  scratchDir: string;
}

export class VsCodeRunError extends Error {
  constructor(
    readonly code: "VSCODE_TIMEOUT" | "VSCODE_SERVER_EXITED" | "VSCODE_PAGE_CRASHED",
    message: string,
  ) {
    super(message);
    this.name = "VsCodeRunError";
  }
}

/** Runs one suite in a fresh code-server + chromium and tears both down, whatever happens. */
export async function runVsCodeTests(options: VsCodeRunOptions): Promise<VsCodeRunResult> {
  const started = Date.now();
  if (!SAFE_NAME.test(options.name)) {
    throw new TypeError(
      `run name ${JSON.stringify(options.name)} must match ${SAFE_NAME}: it names the run's log files`,
    );
  }
  const outputDir = options.outputDir ?? DEFAULT_OUTPUT_DIR;
  mkdirSync(outputDir, { recursive: true });
  const logs = {
    server: path.join(outputDir, `${options.name}.server.log`),
    browser: path.join(outputDir, `${options.name}.browser.log`),
    host: path.join(outputDir, `${options.name}.host.log`),
  };
  for (const file of Object.values(logs)) writeFileSync(file, "");
  const output: string[] = [];
  const hostLog = (line: string) => appendFileSync(logs.host, line + "\n");

  const scratch = mkdtempSync(path.join(os.tmpdir(), "rbee-vscode-"));
  let bridge: BridgeServer | undefined;
  let server: RunningCodeServer | undefined;
  let browser: Browser | undefined;
  let page: Page | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    const suiteFile = await bundleSuite(options.suite, path.join(scratch, "suite"));
    const workspace = options.workspaceFolder ?? path.join(scratch, "workspace");
    mkdirSync(workspace, { recursive: true });

    let resolvePage!: (p: Page) => void;
    const pageReady = new Promise<Page>((r) => (resolvePage = r));
    const socketPath = path.join(scratch, "bridge.sock");
    bridge = await startBridgeServer({ socketPath, page: () => pageReady, screenshotDir: outputDir, log: hostLog });

    server = await startCodeServer({
      scratch,
      env: { ...options.env, [BRIDGE_SOCKET_ENV]: socketPath },
      settings: options.settings,
      logFile: logs.server,
    });

    hostLog(`harness: code-server listening on ${server.url} after ${Date.now() - started} ms`);

    browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      headless: true,
      args: [...CHROMIUM_ARGS, ...LOOPBACK_ONLY_ARGS],
      // Its crash-report folder and dconf cache would otherwise land in ~/.config and ~/.cache.
      env: {
        ...process.env,
        XDG_CONFIG_HOME: path.join(scratch, "browser-config"),
        XDG_CACHE_HOME: path.join(scratch, "browser-cache"),
      },
    });
    const context = await browser.newContext({ viewport: options.viewport ?? { width: 1280, height: 800 } });

    let reportExit!: (code: number) => void;
    const exited = new Promise<number>((r) => (reportExit = r));
    // Defined before the page loads, so the workbench finds them when it starts.
    await context.exposeFunction("codeAutomationLog", (type: string, args: unknown[]) => {
      const text = (Array.isArray(args) ? args : [args]).map(formatArg).join(" ");
      output.push(text);
      hostLog(`[${type}] ${text}`);
    });
    await context.exposeFunction(
      "codeAutomationExit",
      (code: number, vsCodeLogs: Array<{ relativePath: string; contents: string }>) => {
        for (const file of vsCodeLogs ?? [])
          appendFileSync(logs.browser, `\n===== ${file.relativePath}\n${file.contents}`);
        reportExit(code);
      },
    );

    page = await context.newPage();
    page.on("console", (m) => appendFileSync(logs.browser, `[console.${m.type()}] ${m.text()}\n`));
    page.on("pageerror", (e) => appendFileSync(logs.browser, `[pageerror] ${e.stack ?? e.message}\n`));
    page.on("requestfailed", (r) =>
      appendFileSync(logs.browser, `[requestfailed] ${r.url()}: ${r.failure()?.errorText}\n`),
    );
    page.on("response", (r) => {
      if (r.status() >= 400) appendFileSync(logs.browser, `[http ${r.status()}] ${r.url()}\n`);
    });
    resolvePage(page);

    const remote = (p: string) =>
      `vscode-remote://${server!.authority}${p.split(path.sep).map(encodeURIComponent).join("/")}`;
    const payload = [
      ["extensionDevelopmentPath", remote(path.resolve(options.extensionDevelopmentPath))],
      ["extensionTestsPath", remote(suiteFile)],
      ["skipWelcome", "true"],
      ["skipReleaseNotes", "true"],
    ];
    const url = `${server.url}?folder=${encodeURIComponent(workspace)}&payload=${encodeURIComponent(JSON.stringify(payload))}`;

    const timeoutMs = options.timeoutMs ?? 240_000;
    const failure = (code: VsCodeRunError["code"], what: string) =>
      new VsCodeRunError(
        code,
        `${options.name}: ${what}; last output:\n${output.slice(-20).join("\n")}\nlogs: ${Object.values(logs).join(", ")}`,
      );
    const crashed = new Promise<never>((_, reject) =>
      page!.once("crash", () => reject(failure("VSCODE_PAGE_CRASHED", "the workbench page crashed"))),
    );
    const serverGone = server.exited.then(({ code, signal }) => {
      throw failure("VSCODE_SERVER_EXITED", `code-server exited (${code ?? signal}) before the tests finished`);
    });
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(failure("VSCODE_TIMEOUT", `no exit from VS Code within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });

    // Whichever loses the race must not surface later as an unhandled rejection.
    for (const p of [crashed, serverGone, timedOut]) p.catch(() => undefined);

    await page.goto(url, { waitUntil: "domcontentloaded" });
    hostLog(`harness: workbench page loaded after ${Date.now() - started} ms`);
    let exitCode: number;
    try {
      exitCode = await Promise.race([exited, crashed, serverGone, timedOut]);
    } catch (err) {
      // A picture of the stuck window is the quickest way to see why.
      await page.screenshot({ path: path.join(outputDir, `${options.name}-failure.png`) }).catch(() => undefined);
      throw err;
    }
    hostLog(`harness: VS Code reported exit code ${exitCode} after ${Date.now() - started} ms`);
    return {
      exitCode,
      output,
      screenshots: [...bridge.screenshots],
      durationMs: Date.now() - started,
      logs,
      scratchDir: scratch,
    };
  } finally {
    clearTimeout(timer);
    await browser?.close().catch(() => undefined);
    await server?.stop();
    await bridge?.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}

function formatArg(arg: unknown): string {
  if (typeof arg === "string") return arg;
  try {
    return JSON.stringify(arg);
  } catch {
    return String(arg);
  }
}

/** Processes whose environment holds `marker`: everything a run started, at any depth (not this one). */
export function processesOfRun(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, "latin1").includes(marker)) pids.push(Number(entry));
    } catch {
      // exited meanwhile, or not ours to read
    }
  }
  return pids;
}

/** A marker for a run's environment, so a test can find (and end) whatever the run left behind. */
export function runMarker(): { env: Record<string, string>; marker: string } {
  const value = `${process.pid}-${Date.now()}`;
  return { env: { RBEE_HARNESS_RUN: value }, marker: `RBEE_HARNESS_RUN=${value}` };
}

/** Kills every process of the run (the local hive is detached by design) and returns their pids. */
export function killLeftovers(marker: string): number[] {
  const left = processesOfRun(marker);
  for (const pid of left) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  return left;
}
