// Messages between the chat webview (extension/media/chat.js) and the extension. The webview is treated as
// untrusted input: everything it posts is validated here before the extension acts on it.

export type TurnStatus = "streaming" | "done" | "stopped" | "error";

/** A turn as the webview shows it: markdown already rendered (and escaped) by the extension. */
export interface RenderedTurn {
  role: "user" | "assistant";
  html: string;
  status: TurnStatus;
}

export type HostMessage =
  | { type: "init"; turns: RenderedTurn[]; models: string[]; model: string; busy: boolean }
  | { type: "turn"; index: number; turn: RenderedTurn }
  | { type: "busy"; busy: boolean }
  | { type: "models"; models: string[]; model: string }
  | { type: "notice"; text: string }
  /** The question was taken (the input box may be emptied); a refused one stays in the box. */
  | { type: "accepted" };

export type WebviewMessage =
  | { type: "ready" }
  | { type: "send"; text: string }
  | { type: "stop" }
  | { type: "clear" }
  | { type: "model"; model: string }
  | { type: "copy"; code: string }
  | { type: "insert"; code: string };

const MAX_TEXT = 200_000;

function isText(x: unknown): x is string {
  return typeof x === "string" && x.length <= MAX_TEXT;
}

/** The message, or undefined for anything malformed (which is then ignored). */
export function parseWebviewMessage(x: unknown): WebviewMessage | undefined {
  if (typeof x !== "object" || x === null) return undefined;
  const m = x as Record<string, unknown>;
  switch (m.type) {
    case "ready":
    case "stop":
    case "clear":
      return { type: m.type };
    case "send":
      return isText(m.text) && m.text.trim() ? { type: "send", text: m.text } : undefined;
    case "model":
      return isText(m.model) && m.model.trim() ? { type: "model", model: m.model.trim() } : undefined;
    case "copy":
    case "insert":
      return isText(m.code) ? { type: m.type, code: m.code } : undefined;
    default:
      return undefined;
  }
}
