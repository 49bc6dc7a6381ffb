// Runs the VS Code suites (suites.ts) in desktop VS Code through @vscode/test-electron — for
// machines that can download VS Code (`npm run test:vscode`). Here, without internet, the same
// suites run in code-server through harness.ts (`node test/run.mjs vscode`).
//
//   node test/vscode/run-electron.mjs [suite name…]     (default: every suite)
//   VSCODE_EXECUTABLE=/path/to/code   skips the download and uses that VS Code
//
// The in-host tests drive the UI through the same bridge as under code-server: VS Code is started
// with --remote-debugging-port=0, Chromium writes the port it picked to DevToolsActivePort in the
// user data folder, and playwright attaches to the workbench window over CDP on 127.0.0.1 the first
// time a test asks for a key press or a screenshot.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { downloadAndUnzipVSCode, runTests } from "@vscode/test-electron";
import { chromium } from "playwright-core";

const VSCODE_VERSION = "1.100.3"; // the VS Code inside code-server 4.100.3: one version under both runners
const ATTACH_TIMEOUT_MS = 60_000;

// The harness modules are TypeScript: let Node load them the way the test runner does (--import tsx).
await import("tsx");
// They are CommonJS (package.json "type"), so their exports arrive as the default export.
const load = async (file) => (await import(new URL(file, import.meta.url).href)).default;
const { SUITES, REPO_ROOT } = await load("./suites.ts");
const { startBridgeServer } = await load("./bridge-server.ts");
const { BRIDGE_SOCKET_ENV } = await load("./bridge-protocol.ts");
const { bundleSuite } = await load("./suite-bundle.ts");
const { writeUserSettings } = await load("./user-settings.ts");

const wanted = process.argv.slice(2);
const unknown = wanted.filter((name) => !SUITES.some((s) => s.name === name));
if (unknown.length) {
  console.error(`unknown suite(s): ${unknown.join(", ")}; known: ${SUITES.map((s) => s.name).join(", ")}`);
  process.exit(2);
}
const suites = wanted.length ? SUITES.filter((s) => wanted.includes(s.name)) : SUITES;
const outputDir = path.join(REPO_ROOT, "test-output", "vscode-electron");
const vscodeExecutablePath = process.env.VSCODE_EXECUTABLE || (await downloadAndUnzipVSCode(VSCODE_VERSION));

let failed = 0;
for (const suite of suites) {
  const scratch = mkdtempSync(path.join(os.tmpdir(), "rbee-vscode-electron-"));
  const userData = path.join(scratch, "user-data");
  const workspace = path.join(scratch, "workspace");
  mkdirSync(workspace, { recursive: true });
  writeUserSettings(userData);
  let browser;
  let attaching;
  const attach = () => (attaching ??= attachToWorkbench(userData).then((r) => ((browser = r.browser), r.page)));
  const socketPath = path.join(scratch, "bridge.sock");
  const bridge = await startBridgeServer({
    socketPath,
    page: attach,
    screenshotDir: outputDir,
    log: (line) => console.log(line),
  });
  console.log(`# suite ${suite.name}`);
  try {
    await runTests({
      vscodeExecutablePath,
      extensionDevelopmentPath: suite.extensionDevelopmentPath,
      extensionTestsPath: await bundleSuite(suite.suite, path.join(scratch, "suite")),
      launchArgs: [
        workspace,
        `--user-data-dir=${userData}`,
        `--extensions-dir=${path.join(scratch, "extensions")}`,
        "--remote-debugging-port=0",
        "--disable-telemetry",
      ],
      extensionTestsEnv: { [BRIDGE_SOCKET_ENV]: socketPath },
    });
    console.log(
      `ok - suite ${suite.name}${bridge.screenshots.length ? `; screenshots: ${bridge.screenshots.join(", ")}` : ""}`,
    );
  } catch (err) {
    failed++;
    console.error(`not ok - suite ${suite.name}: ${err instanceof Error ? err.message : err}`);
  } finally {
    // Disconnects playwright; VS Code has already quit after its test run.
    await browser?.close().catch(() => undefined);
    await bridge.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}
process.exit(failed ? 1 : 0);

/** Waits for VS Code's debugging port, then attaches playwright to the workbench window. */
async function attachToWorkbench(userData) {
  const portFile = path.join(userData, "DevToolsActivePort");
  const deadline = Date.now() + ATTACH_TIMEOUT_MS;
  for (;;) {
    let port;
    try {
      port = Number(readFileSync(portFile, "utf8").split("\n")[0]);
    } catch {
      // not written yet
    }
    if (port) {
      const browser = await chromium.connectOverCDP(`http://127.0.0.1:${port}`);
      for (;;) {
        const page = browser
          .contexts()
          .flatMap((c) => c.pages())
          .find((p) => p.url().includes("workbench"));
        if (page) return { browser, page };
        if (Date.now() > deadline) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      await browser.close();
      throw new Error(`VS Code's debugging port ${port} shows no workbench window`);
    }
    if (Date.now() > deadline) throw new Error(`VS Code wrote no ${portFile} within ${ATTACH_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
