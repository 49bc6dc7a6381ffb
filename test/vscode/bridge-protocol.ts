// The contract between a test running inside the VS Code extension host and the harness outside it,
// which drives the workbench with playwright. The extension host can call VS Code's API but cannot
// press keys, look at pixels or read a webview's DOM; it asks the harness for those over HTTP on a
// Unix socket (loopback by construction, no port to race for). The socket's path reaches the
// extension host in an environment variable.
//
// Wire: POST /action with a JSON BridgeRequest; the answer is a JSON BridgeResponse (status 200 on
// success, 4xx/5xx with { ok: false, error } otherwise).

/** Environment variable carrying the bridge socket's path into the extension host. */
export const BRIDGE_SOCKET_ENV = "RBEE_VSCODE_BRIDGE";

/** Where an action looks: the workbench itself, or inside the webview of one extension. */
export interface Target {
  /**
   * Extension id (`publisher.name`) whose webview the selector is evaluated in (its content frame).
   * Omitted: the workbench page.
   */
  webview?: string;
}

/** Every action, its arguments and what it returns. */
export interface BridgeActions {
  /** A key or chord in playwright's notation ("Tab", "Escape", "Control+Space"), sent to the focused element. */
  press: { args: { key: string }; result: null };
  /** Types text character by character into the focused element, as a user would. */
  type: { args: { text: string }; result: null };
  /** Saves a PNG of the whole window as <output folder>/<name>.png; returns its absolute path. */
  screenshot: { args: { name: string }; result: { path: string } };
  /** Clicks the first visible element matching a CSS selector. */
  click: { args: { selector: string } & Target; result: null };
  /** Waits until an element matching the selector reaches a state (default "visible"). */
  waitFor: {
    args: { selector: string; state?: "attached" | "detached" | "visible" | "hidden"; timeoutMs?: number } & Target;
    result: null;
  };
  /** The text content of every element matching the selector (an empty list when none matches). */
  text: { args: { selector: string } & Target; result: string[] };
}

export type ActionName = keyof BridgeActions;
export const ACTION_NAMES: readonly ActionName[] = ["press", "type", "screenshot", "click", "waitFor", "text"];

export type BridgeRequest = { [A in ActionName]: { action: A; args: BridgeActions[A]["args"] } }[ActionName];

export type BridgeErrorCode =
  | "INVALID_REQUEST" // malformed JSON, unknown action, bad arguments
  | "ACTION_FAILED" // playwright could not do it (element not found, timeout, page gone)
  | "BRIDGE_UNAVAILABLE"; // client side: no harness is listening

export type BridgeResponse<R = unknown> =
  { ok: true; result: R } | { ok: false; error: { code: BridgeErrorCode; message: string } };

/** Screenshot names become file names: keep them to a safe alphabet. */
export const SCREENSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$/;
/** Extension ids as VS Code spells them; they are spliced into a CSS attribute selector. */
export const EXTENSION_ID = /^[A-Za-z0-9][A-Za-z0-9-]*\.[A-Za-z0-9][A-Za-z0-9._-]*$/;
