// A suite that must fail, run by harness.test.ts to prove that failures inside the extension host
// reach the harness (a harness that always reported success would let every VS Code test pass), and
// that the bridge answers bad requests and impossible actions with their error codes.
import assert from "node:assert/strict";
import { BridgeCallError, callBridge, workbench } from "../bridge-client";
import { runCases } from "../host-runner";

async function expectBridgeError(code: BridgeCallError["code"], call: () => Promise<unknown>): Promise<void> {
  await assert.rejects(call, (err: unknown) => {
    assert.ok(err instanceof BridgeCallError, `expected a BridgeCallError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

export async function run(): Promise<void> {
  await runCases("failing", [
    {
      name: "a failing assertion fails its case",
      fn: async () => assert.equal("actual", "expected"),
    },
    {
      name: "the bridge refuses a screenshot name that is not a safe file name",
      fn: () => expectBridgeError("INVALID_REQUEST", () => workbench.screenshot("../escape")),
    },
    {
      name: "the bridge refuses an unknown action",
      fn: () => expectBridgeError("INVALID_REQUEST", () => callBridge("scroll" as "press", { key: "x" })),
    },
    {
      name: "the bridge reports an action playwright cannot complete",
      fn: () => expectBridgeError("ACTION_FAILED", () => workbench.waitFor("#no-such-element", { timeoutMs: 300 })),
    },
  ]);
}
