// A tiny test runner for code inside the extension host. The module that VS Code loads as
// extensionTestsPath exports `run(): Promise<void>`; VS Code turns a rejection into exit code 1.
// node:test does not fit there (it reports on the extension host's stdout, which nobody reads), so
// cases run in order, each line goes to console.log (which VS Code forwards to the harness), and
// run() rejects with the names of the failed cases.
import { findSourceMap } from "node:module";
import { fileURLToPath } from "node:url";

export interface HostCase {
  name: string;
  fn: () => Promise<void>;
}

/** Runs the cases one after the other (they share one VS Code window); rejects if any failed. */
export async function runCases(suite: string, cases: HostCase[]): Promise<void> {
  console.log(`# ${suite}: ${cases.length} case(s)`);
  const failed: string[] = [];
  for (const c of cases) {
    const t0 = Date.now();
    try {
      await c.fn();
      console.log(`ok - ${c.name} (${Date.now() - t0} ms)`);
    } catch (err) {
      failed.push(c.name);
      console.log(`not ok - ${c.name} (${Date.now() - t0} ms)`);
      console.error(err instanceof Error ? mapStack(err.stack ?? err.message) : String(err));
    }
  }
  console.log(`# ${suite}: ${cases.length - failed.length} passed, ${failed.length} failed`);
  if (failed.length)
    throw new Error(`${suite}: ${failed.length} of ${cases.length} case(s) failed: ${failed.join("; ")}`);
}

/**
 * Polls until `check` returns true. UI actions reach the extension host asynchronously (a key
 * pressed in the browser becomes a document change a few messages later), so tests wait for the
 * effect instead of sleeping. `describe` explains the wait and the state seen, for the failure.
 */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  describe: () => string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${describe()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Points stack frames of the bundled suite back at the TypeScript sources. suite-bundle.ts turns
 * Node's source maps on before loading the bundle, but the extension host installs its own
 * Error.prepareStackTrace, which bypasses them; the maps are still there to look frames up in.
 */
function mapStack(stack: string): string {
  return stack.replace(/(\/[^\s():]+\.js):(\d+):(\d+)/g, (frame, file: string, line: string, column: string) => {
    const entry = findSourceMap(file)?.findEntry(Number(line) - 1, Number(column) - 1);
    if (!entry || !("originalSource" in entry) || !entry.originalSource) return frame;
    const source = entry.originalSource.startsWith("file:")
      ? fileURLToPath(entry.originalSource)
      : entry.originalSource;
    return `${source}:${entry.originalLine + 1}:${entry.originalColumn + 1}`;
  });
}
