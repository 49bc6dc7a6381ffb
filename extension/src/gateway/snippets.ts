// Ready-to-paste settings that point other tools at the gateway: Continue (config.yaml), llama.vscode
// (settings.json) and the OpenAI SDK. The extension's "Copy Gateway Config" command puts one on the
// clipboard; the text holds the token, so it goes nowhere else.

export const SNIPPET_KINDS = ["continue", "llama.vscode", "openai-sdk"] as const;
export type SnippetKind = (typeof SNIPPET_KINDS)[number];

export const SNIPPET_LABELS: Record<SnippetKind, string> = {
  continue: "Continue (config.yaml): chat over the OpenAI API, autocomplete over Ollama's",
  "llama.vscode": "llama.vscode (settings.json): completions from /infill, chat from /v1",
  "openai-sdk": "OpenAI SDK (JavaScript and Python)",
};

export interface SnippetInput {
  /** http://127.0.0.1:<port>, no trailing slash. */
  url: string;
  token: string;
  /** An alias or model ref for the `model` field. */
  model: string;
}

export function configSnippet(kind: SnippetKind, { url, token, model }: SnippetInput): string {
  const q = JSON.stringify;
  switch (kind) {
    case "continue":
      return [
        "models:",
        "  - name: rbee chat",
        "    provider: openai",
        `    model: ${q(model)}`,
        `    apiBase: ${q(url + "/v1")}`,
        `    apiKey: ${q(token)}`,
        "    roles: [chat, edit, apply]",
        "  - name: rbee autocomplete",
        "    provider: ollama",
        `    model: ${q(model)}`,
        `    apiBase: ${q(url)}`,
        `    apiKey: ${q(token)}`,
        "    roles: [autocomplete]",
        "",
      ].join("\n");
    case "llama.vscode":
      // llama.vscode's /infill sends no model: the gateway uses its defaultModel setting for it.
      return [
        `"llama-vscode.endpoint": ${q(url)},`,
        `"llama-vscode.endpoint_chat": ${q(url)},`,
        `"llama-vscode.ai_model": ${q(model)},`,
        `"llama-vscode.api_key": ${q(token)}`,
        "",
      ].join("\n");
    case "openai-sdk":
      return [
        "// JavaScript",
        'import OpenAI from "openai";',
        `const client = new OpenAI({ baseURL: ${q(url + "/v1")}, apiKey: ${q(token)} });`,
        `const answer = await client.chat.completions.create({ model: ${q(model)}, messages: [{ role: "user", content: "Hello" }] });`,
        "",
        "# Python",
        "from openai import OpenAI",
        `client = OpenAI(base_url=${q(url + "/v1")}, api_key=${q(token)})`,
        `answer = client.chat.completions.create(model=${q(model)}, messages=[{"role": "user", "content": "Hello"}])`,
        "",
      ].join("\n");
  }
}
