// Chat replies as HTML, through markdown-it (CommonMark plus GitHub tables and strike-through;
// a single line break is kept as one).
// Model output is untrusted, so the parser is set up to produce no markup the reply chooses:
//   - raw HTML is off (`html: false`): tags in a reply are shown as text, escaped;
//   - a link is kept only for http(s) and mailto targets (validateLink), images are off (a remote
//     image would be fetched as soon as the reply shows);
//   - code blocks get this module's own markup (Copy / Insert buttons, a sanitized language name),
//     with the code escaped here;
//   - block quotes nest at most MAX_QUOTE_DEPTH deep: deeper ">" are text.
// Partial input renders too: a reply mid-stream with an open code fence shows as code to the end.
// markdown-it's parser is linear in the input (a reply of 400 000 "[" renders in seconds, not hours).

import type MarkdownItModule from "markdown-it";

type MarkdownIt = MarkdownItModule.MarkdownIt;

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** A link target that is safe to put in href, or undefined (javascript:, data:, relative…). */
export function safeUrl(url: string): string | undefined {
  const trimmed = url.trim();
  return /^(https?:\/\/|mailto:)[^\s]+$/i.test(trimmed) ? trimmed : undefined;
}

export function codeBlock(code: string, lang: string): string {
  const language = lang.replace(/[^\w+#.-]/g, "").slice(0, 32);
  return (
    `<div class="code-block">` +
    `<div class="code-actions">${language ? `<span class="code-lang">${language}</span>` : ""}` +
    `<button type="button" data-action="copy" title="Copy to the clipboard">Copy</button>` +
    `<button type="button" data-action="insert" title="Insert at the cursor in the editor">Insert</button></div>` +
    `<pre><code${language ? ` class="language-${language}"` : ""}>${escapeHtml(code)}</code></pre></div>`
  );
}

/** Block quotes nest this deep; deeper ">" are shown as text. */
export const MAX_QUOTE_DEPTH = 8;

let parser: MarkdownIt | undefined;

export function renderMarkdown(source: string): string {
  parser ??= createParser();
  return parser.render(source, { quoteDepth: 0 });
}

function createParser(): MarkdownIt {
  // Required on the first render, not imported: the chat view's module loads at activation, and
  // markdown-it (with its entity tables) is needed only once a reply is shown.
  const MarkdownItClass = require("markdown-it") as typeof MarkdownItModule;
  // breaks: a single line break in a reply is a line break in the chat, as models mean it.
  const md = new MarkdownItClass("default", { html: false, breaks: true, linkify: false, typographer: false });
  md.disable("image");
  md.validateLink = (url) => safeUrl(url) !== undefined;

  // Code, fenced or indented, with the buttons the chat webview wires up (media/chat.js). The final
  // line break markdown-it keeps is dropped so the code is exactly what the reply wrote.
  md.renderer.rules.fence = (tokens, idx) =>
    codeBlock(tokens[idx].content.replace(/\n$/, ""), tokens[idx].info.trim().split(/\s+/)[0] ?? "");
  md.renderer.rules.code_block = (tokens, idx) => codeBlock(tokens[idx].content.replace(/\n$/, ""), "");
  // GitHub tables align columns with style attributes, which the webview's policy refuses (no inline
  // styles): a class names the alignment instead (media/chat.css).
  for (const cell of ["th_open", "td_open"])
    md.renderer.rules[cell] = (tokens, idx, options, _env, self) => {
      const align = /^text-align:(left|center|right)$/.exec(String(tokens[idx].attrGet("style") ?? ""))?.[1];
      tokens[idx].attrs = align ? [["class", `align-${align}`]] : null;
      return self.renderToken(tokens, idx, options);
    };
  md.renderer.rules.softbreak = () => "<br>";
  md.renderer.rules.hardbreak = () => "<br>";
  md.renderer.rules.s_open = () => "<del>";
  md.renderer.rules.s_close = () => "</del>";
  // Block tags without the line breaks markdown-it puts between them: the webview lays them out
  // itself, and a line break inside a list item or quote would show as a space.
  const renderToken = md.renderer.renderToken.bind(md.renderer);
  md.renderer.renderToken = (tokens, idx, options) => renderToken(tokens, idx, options).replace(/^\n|\n$/g, "");

  // The quote depth is counted around markdown-it's own blockquote rule; past the limit the rule
  // declines and the line is read as a paragraph.
  const rules = md.block.ruler.__rules__;
  const quote = rules[md.block.ruler.__find__("blockquote")];
  const blockquote = quote.fn;
  md.block.ruler.at(
    "blockquote",
    (state, startLine, endLine, silent) => {
      const env = state.env as { quoteDepth: number };
      if (env.quoteDepth >= MAX_QUOTE_DEPTH) return false;
      env.quoteDepth++;
      try {
        return blockquote(state, startLine, endLine, silent);
      } finally {
        env.quoteDepth--;
      }
    },
    { alt: quote.alt },
  );
  return md;
}
