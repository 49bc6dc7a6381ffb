// The chat webview's HTML: a strict Content Security Policy (nothing by default; styles and the one
// script only from the extension's media folder, the script also bound to a per-load nonce; no
// inline script, no remote anything).

import { randomBytes } from "node:crypto";

export interface ChatPageResources {
  /** webview.cspSource: the origin the webview serves local resources from. */
  cspSource: string;
  scriptUri: string;
  styleUri: string;
  nonce?: string;
}

export function newNonce(): string {
  return randomBytes(18).toString("base64").replace(/[+/=]/g, "");
}

export function contentSecurityPolicy(cspSource: string, nonce: string): string {
  return [
    "default-src 'none'",
    `style-src ${cspSource}`,
    `script-src 'nonce-${nonce}'`,
    `img-src ${cspSource} data:`,
    `font-src ${cspSource}`,
  ].join("; ");
}

export function chatPageHtml(r: ChatPageResources): string {
  const nonce = r.nonce ?? newNonce();
  const attr = (s: string) => s.replace(/&/g, "&amp;").replace(/"/g, "&quot;");
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${attr(contentSecurityPolicy(r.cspSource, nonce))}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${attr(r.styleUri)}">
<title>rbee chat</title>
</head>
<body>
<div id="toolbar">
  <label for="model">Model</label>
  <select id="model" title="The chat model"></select>
  <button id="clear" type="button" title="Start a new conversation">Clear</button>
</div>
<div id="messages" role="log" aria-live="polite"></div>
<div id="empty" hidden>
  <p><strong>Ask about your code.</strong> Replies come from a model running on your own machines.</p>
  <p>Pick a model above. No model yet? Run <em>rbee: Try a Model</em> (Remote Nodes view), or start a worker there; rbee starts the chat model on first use.</p>
  <p>Select code and use <em>rbee: Infer</em> for a one-off answer in an editor.</p>
</div>
<div id="notice" hidden></div>
<form id="composer">
  <textarea id="input" rows="3" placeholder="Ask rbee… (Enter sends, Shift+Enter for a new line)"></textarea>
  <div id="actions">
    <button id="send" type="submit">Send</button>
    <button id="stop" type="button" hidden>Stop</button>
  </div>
</form>
<script nonce="${attr(nonce)}" src="${attr(r.scriptUri)}"></script>
</body>
</html>`;
}
