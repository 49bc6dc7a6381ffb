// rbee in a real VS Code (code-server + chromium) on a node with two software GPUs: runs
// suites/gpu.suite.ts in the extension host and checks its case passed and the tree's screenshot exists.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ensureModel } from "../fixtures/models";
import { DEFAULT_OUTPUT_DIR, runVsCodeTests } from "./harness";
import { SUITES } from "./suites";

test(
  "rbee in a real VS Code with two GPUs: Start Worker places two models on two GPUs, shown in the tree",
  { timeout: 300_000 },
  async () => {
    const suite = SUITES.find((s) => s.name === "gpu");
    assert.ok(suite);
    for (const seed of [42, 43]) ensureModel("tiny", seed); // generated here, found in the cache by the suite
    const home = mkdtempSync(path.join(os.tmpdir(), "rbee-vscode-user-"));
    rmSync(path.join(DEFAULT_OUTPUT_DIR, "rbee-nodes-gpus.png"), { force: true });
    try {
      const result = await runVsCodeTests({ ...suite, env: { HOME: home }, timeoutMs: 280_000 });
      const report = () =>
        `exit ${result.exitCode}; output:\n${result.output.join("\n")}\nlogs: ${Object.values(result.logs).join(", ")}`;
      assert.equal(result.exitCode, 0, report());
      assert.ok(
        result.output.some((l) => l.startsWith("ok - Start Worker places two models on the two GPUs")),
        report(),
      );
      assert.ok(existsSync(path.join(DEFAULT_OUTPUT_DIR, "rbee-nodes-gpus.png")), "no screenshot rbee-nodes-gpus.png");
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  },
);
