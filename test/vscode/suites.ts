// The VS Code suites: which in-host test module runs against which extension. Both runners read
// this list — harness.ts (code-server + chromium, here and in CI) and run-electron.mjs
// (@vscode/test-electron, on machines that can download VS Code).
import path from "node:path";

export interface VsCodeSuite {
  /** Names the run's logs: test-output/vscode/<name>.*.log */
  name: string;
  /** The extension under development (folder holding its package.json). */
  extensionDevelopmentPath: string;
  /** The module loaded as extensionTestsPath, exporting run(): Promise<void>; bundled with esbuild. */
  suite: string;
}

export const REPO_ROOT = path.resolve(__dirname, "..", "..");

export const SUITES: readonly VsCodeSuite[] = [
  {
    name: "fixture",
    extensionDevelopmentPath: path.join(REPO_ROOT, "test", "vscode", "fixture"),
    suite: path.join(REPO_ROOT, "test", "vscode", "suites", "fixture.suite.ts"),
  },
  {
    name: "rbee",
    extensionDevelopmentPath: REPO_ROOT,
    suite: path.join(REPO_ROOT, "test", "vscode", "suites", "rbee.suite.ts"),
  },
  {
    name: "gpu",
    extensionDevelopmentPath: REPO_ROOT,
    suite: path.join(REPO_ROOT, "test", "vscode", "suites", "gpu.suite.ts"),
  },
  {
    name: "ux",
    extensionDevelopmentPath: REPO_ROOT,
    suite: path.join(REPO_ROOT, "test", "vscode", "suites", "ux.suite.ts"),
  },
];
