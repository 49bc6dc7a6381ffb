// rbee as a newcomer meets it in a real VS Code (code-server + chromium): runs suites/ux.suite.ts and
// checks each case passed, that the first-run and finished-Infer screenshots exist, and that nothing
// the run started survives it (the local hive is detached by design; the run's marker finds it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ensureModel } from "../fixtures/models";
import { DEFAULT_OUTPUT_DIR, killLeftovers, runMarker, runVsCodeTests } from "./harness";
import { SUITES } from "./suites";

const CASES = [
  "first run: the welcome view offers Try a model and Set the completion model, chat shows a hint, the status bar promises nothing",
  "a ref that fails is not remembered and leaves no editor; the picker takes a typed ref; Infer ends with a summary",
  "the chat's model list follows the workers, the refused question is still there to send, and Clear can be undone",
  "typing into the Infer output while it streams: the answer keeps landing after the typed text",
  "text arriving in bursts while the user types ahead of it lands in order, behind the typing, every time",
  "max tokens beyond the worker's context is lowered to fit, with a note that says how to get more",
  "Cancel during a cold start stops the loading worker, says so, and leaves no empty editor",
  "ghost text appears once the completion worker is ready, without another keystroke",
  "the tree counts a file: model, explains a worker's jargon, shows a download, and Stop Local Hive stops the hive",
];
const SCREENSHOTS = ["rbee-first-run", "rbee-infer-finished", "rbee-nodes-download"];

test(
  "rbee for a newcomer in a real VS Code: first run, pickers, Infer edits, caps and cancels, ghost text after a cold start, the tree",
  { timeout: 480_000 },
  async () => {
    const suite = SUITES.find((s) => s.name === "ux");
    assert.ok(suite);
    const model = ensureModel("tiny");
    const home = mkdtempSync(path.join(os.tmpdir(), "rbee-vscode-user-"));
    const run = runMarker();
    for (const s of SCREENSHOTS) rmSync(path.join(DEFAULT_OUTPUT_DIR, `${s}.png`), { force: true });
    try {
      const result = await runVsCodeTests({
        ...suite,
        env: { ...run.env, HOME: home, RBEE_TEST_MODEL: model },
        timeoutMs: 460_000,
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
    } finally {
      const left = killLeftovers(run.marker);
      rmSync(home, { recursive: true, force: true });
      assert.deepEqual(left, [], "processes of the run outlived it");
    }
  },
);
