// Proves the VS Code harness end to end with the fixture extension: a real code-server, a real
// chromium, the fixture's command run inside the real extension host, keys sent by playwright, and
// a screenshot saved on the in-host test's request.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { processesOfRun, runVsCodeTests } from "./harness";
import { SUITES } from "./suites";

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

test("the fixture suite passes inside a real VS Code and leaves a PNG screenshot", async () => {
  const fixture = SUITES.find((s) => s.name === "fixture");
  assert.ok(fixture);
  const result = await runVsCodeTests(fixture);
  const report = () =>
    `exit ${result.exitCode}; output:\n${result.output.join("\n")}\nlogs: ${Object.values(result.logs).join(", ")}`;

  assert.equal(result.exitCode, 0, report());
  // The in-host runner's own lines came back through codeAutomationLog: every case ran and passed.
  for (const name of [
    "the fixture extension is loaded from extensionDevelopmentPath and activates",
    "rbeeFixture.hello inserts its greeting into the active editor",
    "keys pressed by the harness through playwright reach the editor",
    "the harness reads the workbench DOM and saves a screenshot",
    "the harness reads and clicks inside the extension's webview",
  ]) {
    assert.ok(
      result.output.some((line) => line.startsWith(`ok - ${name}`)),
      `case did not pass: ${name}\n${report()}`,
    );
  }
  assert.ok(result.output.includes("# fixture: 5 passed, 0 failed"), report());

  assert.equal(result.screenshots.length, 2);
  assert.match(result.screenshots[0], /test-output\/vscode\/fixture-hello\.png$/);
  assert.match(result.screenshots[1], /test-output\/vscode\/fixture-webview\.png$/);
  for (const shot of result.screenshots) {
    assert.ok(existsSync(shot), shot);
    const png = readFileSync(shot);
    assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE, `${shot} is not a PNG`);
    // IHDR: width and height of the 1280x800 viewport.
    assert.equal(png.readUInt32BE(16), 1280);
    assert.equal(png.readUInt32BE(20), 800);
  }

  // Teardown left nothing behind: no process, no scratch folder.
  assert.deepEqual(processesOfRun(result.scratchDir), []);
  assert.equal(existsSync(result.scratchDir), false);
});

test("a failing in-host case makes the run exit 1, and bridge errors carry their codes", async () => {
  const fixture = SUITES.find((s) => s.name === "fixture");
  assert.ok(fixture);
  const result = await runVsCodeTests({
    name: "fixture-failing",
    extensionDevelopmentPath: fixture.extensionDevelopmentPath,
    suite: path.join(__dirname, "suites", "fixture-failing.suite.ts"),
  });
  const report = () => `exit ${result.exitCode}; output:\n${result.output.join("\n")}`;

  assert.equal(result.exitCode, 1, report());
  assert.ok(
    result.output.some((l) => l.startsWith("not ok - a failing assertion fails its case")),
    report(),
  );
  for (const name of [
    "the bridge refuses a screenshot name that is not a safe file name",
    "the bridge refuses an unknown action",
    "the bridge reports an action playwright cannot complete",
  ]) {
    assert.ok(
      result.output.some((l) => l.startsWith(`ok - ${name}`)),
      `case did not pass: ${name}\n${report()}`,
    );
  }
  assert.ok(result.output.includes("# failing: 3 passed, 1 failed"), report());
  assert.deepEqual(result.screenshots, []);
});
