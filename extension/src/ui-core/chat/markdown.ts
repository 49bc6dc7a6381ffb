// A small, safe markdown renderer for chat replies. Model output is untrusted: every character of it
// is HTML-escaped before any markup is added, links are kept only for http(s) and mailto, and the
// only attributes produced are fixed class names, a sanitized language name and an escaped href.
// It renders partial input too (a reply mid-stream with an open code fence shows as code).
//
// Supported: fenced code blocks (``` and ~~~, with Copy / Insert buttons), ATX headings, block
// quotes, bullet and numbered lists, horizontal rules, paragraphs with line breaks, and inline
// code, bold, italic, strike-through and links.

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** A link target that is safe to put in href, or undefined (javascript:, data:, relative…). */
export function safeUrl(url: string): string | undefined {
  const trimmed = url.trim();
  return /^(https?:\/\/|mailto:)[^\s]+$/i.test(trimmed) ? trimmed : undefined;
}

/** Inline markup of one run of text (no line breaks handled here). */
export function renderInline(text: string): string {
  // Code spans first: nothing inside them is markup.
  const parts = text.split(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/);
  let out = "";
  for (let i = 0; i < parts.length; i += 3) {
    out += renderEmphasis(parts[i]);
    if (i + 2 < parts.length) out += `<code>${escapeHtml(parts[i + 2].trim() || parts[i + 2])}</code>`;
  }
  return out;
}

/** Longer runs are escaped without emphasis: the emphasis patterns are not linear in the worst case. */
const MAX_EMPHASIS_RUN = 10_000;

function renderEmphasis(raw: string): string {
  // Links are found on the raw text so the URL is judged unescaped, then everything is escaped.
  // Neither the label nor the URL may contain a bracket, so each scan stops at the next "[" and
  // the whole search stays linear (a reply of 80 000 "[" would otherwise cost seconds per render).
  const linkRe = /\[([^[\]\n]+)\]\(([^()[\]\s]+)\)/g;
  let out = "";
  let last = 0;
  for (let m = linkRe.exec(raw); m; m = linkRe.exec(raw)) {
    out += emphasis(escapeHtml(raw.slice(last, m.index)));
    const url = safeUrl(m[2]);
    out += url ? `<a href="${escapeHtml(url)}">${emphasis(escapeHtml(m[1]))}</a>` : emphasis(escapeHtml(m[0]));
    last = m.index + m[0].length;
  }
  return out + emphasis(escapeHtml(raw.slice(last)));
}

/** Bold, italic and strike-through on already escaped text (the markers are not escaped characters). */
function emphasis(escaped: string): string {
  if (escaped.length > MAX_EMPHASIS_RUN) return escaped;
  return escaped
    .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>")
    .replace(/__(?=\S)([\s\S]*?\S)__/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*(?=\S)([^*]*?\S)\*(?!\w)/g, "$1<em>$2</em>")
    .replace(/(^|[^_\w])_(?=\S)([^_]*?\S)_(?!\w)/g, "$1<em>$2</em>")
    .replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>");
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

type ListKind = "ul" | "ol";

/** Block quotes nest this deep; deeper ">" are shown as text (no recursion a reply can drive). */
export const MAX_QUOTE_DEPTH = 8;

export function renderMarkdown(source: string, depth = 0): string {
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  const out: string[] = [];
  let paragraph: string[] = [];
  let list: { kind: ListKind; items: string[] } | undefined;
  let quote: string[] = [];

  const flushParagraph = () => {
    if (paragraph.length) out.push(`<p>${paragraph.map(renderInline).join("<br>")}</p>`);
    paragraph = [];
  };
  const flushList = () => {
    if (list) out.push(`<${list.kind}>${list.items.map((i) => `<li>${renderInline(i)}</li>`).join("")}</${list.kind}>`);
    list = undefined;
  };
  const flushQuote = () => {
    if (quote.length)
      out.push(`<blockquote>${depth < MAX_QUOTE_DEPTH ? renderMarkdown(quote.join("\n"), depth + 1) : `<p>${quote.map(renderInline).join("<br>")}</p>`}</blockquote>`);
    quote = [];
  };
  const flushAll = () => {
    flushParagraph();
    flushList();
    flushQuote();
  };

  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/.exec(line);
    if (fence) {
      flushAll();
      const closer = new RegExp(`^ {0,3}${fence[1][0] === "`" ? "`" : "~"}{${fence[1].length},}\\s*$`);
      const code: string[] = [];
      let j = i + 1;
      while (j < lines.length && !closer.test(lines[j])) code.push(lines[j++]);
      // An unclosed fence (a reply still streaming) runs to the end of the text.
      out.push(codeBlock(code.join("\n"), fence[2]));
      i = j;
      continue;
    }
    const quoted = /^ {0,3}> ?(.*)$/.exec(line);
    if (quoted) {
      flushParagraph();
      flushList();
      quote.push(quoted[1]);
      continue;
    }
    flushQuote();
    if (!line.trim()) {
      flushParagraph();
      flushList();
      continue;
    }
    const heading = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      flushParagraph();
      flushList();
      const level = heading[1].length;
      out.push(`<h${level}>${renderInline(heading[2])}</h${level}>`);
      continue;
    }
    if (/^ {0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flushParagraph();
      flushList();
      out.push("<hr>");
      continue;
    }
    const item = /^\s*(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/.exec(line);
    if (item) {
      flushParagraph();
      const kind: ListKind = item[1] ? "ul" : "ol";
      if (list && list.kind !== kind) flushList();
      list ??= { kind, items: [] };
      list.items.push(item[3]);
      continue;
    }
    if (list && /^\s{2,}\S/.test(line)) {
      // A continuation line of the last list item.
      list.items[list.items.length - 1] += " " + line.trim();
      continue;
    }
    flushList();
    paragraph.push(line);
  }
  flushAll();
  return out.join("\n");
}
