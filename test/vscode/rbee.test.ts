// rbee inside a real VS Code (code-server 4.100.3 + chromium, docs/testing.md): runs suites/rbee.suite.ts
// in the extension host with the repository as the extension, checks every case passed, that the
// screenshots of Infer, ghost text, chat and the nodes tree exist, records the benchmark figures the
// suite printed (test-output/vscode/rbee-bench.json), and that nothing the run started survives it
// (the local hive is started detached, so this is checked by the run's environment marker).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ensureModel } from "../fixtures/models";
import { DEFAULT_OUTPUT_DIR, killLeftovers, runMarker, runVsCodeTests } from "./harness";
import { SUITES } from "./suites";

const CASES = [
  "rbee activates with its commands and views, and loads nothing heavy",
  "rbee: Infer streams the answer token by token into a new editor (cold start of hive and worker)",
  "Cancel in the progress notification stops the generation on the worker",
  "Infer at the cursor takes the selection as its prompt and writes after it",
  "the status bar toggle switches inline completions off and on",
  "an inline completion appears as ghost text and Tab accepts it into the document",
  "accepting a suggestion shows the prefetched next one, without a new request",
  "bench: the inline provider's overhead over the worker's generation, and a cache hit",
  "the chat view streams a reply into the webview, and Stop ends a long one",
  "the Remote Nodes tree shows localhost with its worker; Stop Worker on the tree item removes it",
];
const SCREENSHOTS = [
  "rbee-infer-result",
  "rbee-ghost-text",
  "rbee-prefetched-ghost-text",
  "rbee-chat",
  "rbee-chat-stopped",
  "rbee-nodes-tree",
  "rbee-nodes-tree-stopped",
];

test(
  "rbee in a real VS Code: Infer, ghost text + Tab, chat + Stop, nodes tree + Stop Worker",
  { timeout: 420_000 },
  async () => {
    const suite = SUITES.find((s) => s.name === "rbee");
    assert.ok(suite);
    const model = ensureModel("tiny");
    // The extension host's HOME: no ~/.ssh, nothing written to the real home folder.
    const home = mkdtempSync(path.join(os.tmpdir(), "rbee-vscode-user-"));
    const run = runMarker();
    for (const s of SCREENSHOTS) rmSync(path.join(DEFAULT_OUTPUT_DIR, `${s}.png`), { force: true });
    try {
      const result = await runVsCodeTests({
        ...suite,
        env: { ...run.env, HOME: home, RBEE_TEST_MODEL: model },
        timeoutMs: 400_000,
      });
      const report = () =>
        `exit ${result.exitCode}; output:\n${result.output.join("\n")}\nlogs: ${Object.values(result.logs).join(", ")}`;
      assert.equal(result.exitCode, 0, report());
      for (const name of CASES)
        assert.ok(
          result.output.some((line) => line.startsWith(`ok - ${name}`)),
          `case did not pass: ${name}\n${report()}`,
        );
      for (const s of SCREENSHOTS)
        assert.ok(existsSync(path.join(DEFAULT_OUTPUT_DIR, `${s}.png`)), `no screenshot ${s}.png`);

      const figures: Record<string, number> = {};
      for (const line of result.output) {
        const m = /^bench: ([a-z0-9_]+)=([\d.]+)$/.exec(line);
        if (m) figures[m[1]] = Number(m[2]);
      }
      for (const f of ["activation_ms", "provider_overhead_p50_ms", "cache_hit_p50_ms"])
        assert.ok(f in figures, `the suite reported no ${f}\n${report()}`);
      mkdirSync(DEFAULT_OUTPUT_DIR, { recursive: true });
      writeFileSync(path.join(DEFAULT_OUTPUT_DIR, "rbee-bench.json"), JSON.stringify(figures, null, 2) + "\n");
    } finally {
      // Whatever happened, nothing of this run may be left running (the hive is detached by design).
      const left = killLeftovers(run.marker);
      rmSync(home, { recursive: true, force: true });
      assert.deepEqual(left, [], "processes of the run outlived it");
    }
  },
);
