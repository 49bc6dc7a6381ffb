// The in-host side of the bridge (see bridge-protocol.ts): what a test running inside the extension
// host calls to have the harness press keys, take screenshots or read the DOM with playwright.
//
//   import { workbench } from "../bridge-client";
//   await workbench.press("Tab");
//   await workbench.screenshot("ghost-text");
//   const lines = await workbench.text(".chat-message", { webview: "rbee.rbee" });
import http from "node:http";
import {
  ActionName,
  BRIDGE_SOCKET_ENV,
  BridgeActions,
  BridgeErrorCode,
  BridgeResponse,
  Target,
} from "./bridge-protocol";

/** A failed bridge call; `code` says whose fault it was (see BridgeErrorCode). */
export class BridgeCallError extends Error {
  constructor(
    readonly code: BridgeErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "BridgeCallError";
  }
}

/** Longest a single call may take, waits included (waitFor's own limit is at most 120 s). */
const CALL_TIMEOUT_MS = 130_000;

export async function callBridge<A extends ActionName>(
  action: A,
  args: BridgeActions[A]["args"],
): Promise<BridgeActions[A]["result"]> {
  const socketPath = process.env[BRIDGE_SOCKET_ENV];
  if (!socketPath) {
    throw new BridgeCallError(
      "BRIDGE_UNAVAILABLE",
      `${BRIDGE_SOCKET_ENV} is not set: this test drives the UI and must run under test/vscode/harness.ts or run-electron.mjs`,
    );
  }
  const body = JSON.stringify({ action, args });
  const raw = await new Promise<string>((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        path: "/action",
        method: "POST",
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
        res.on("error", reject);
      },
    );
    req.setTimeout(CALL_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${CALL_TIMEOUT_MS} ms`)));
    req.on("error", (err) =>
      reject(new BridgeCallError("BRIDGE_UNAVAILABLE", `bridge at ${socketPath}: ${err.message}`)),
    );
    req.end(body);
  });
  const response = JSON.parse(raw) as BridgeResponse<BridgeActions[A]["result"]>;
  if (!response.ok) throw new BridgeCallError(response.error.code, `${action}: ${response.error.message}`);
  return response.result;
}

/** The workbench as the harness sees it: keyboard, pixels and DOM. */
export const workbench = {
  press: (key: string) => callBridge("press", { key }),
  type: (text: string) => callBridge("type", { text }),
  /** Returns the PNG's absolute path (under test-output/vscode/ by default). */
  screenshot: async (name: string) => (await callBridge("screenshot", { name })).path,
  click: (selector: string, target: Target = {}) => callBridge("click", { selector, ...target }),
  waitFor: (selector: string, options: Omit<BridgeActions["waitFor"]["args"], "selector"> = {}) =>
    callBridge("waitFor", { selector, ...options }),
  text: (selector: string, target: Target = {}) => callBridge("text", { selector, ...target }),
};
