// The chat panel's pure parts: the markdown renderer (escaping first), the webview message
// validation, and the conversation controller (history, context, stop).
import { test } from "node:test";
import assert from "node:assert/strict";
import { escapeHtml, renderMarkdown, safeUrl } from "../../extension/src/ui-core/chat/markdown";
import { parseWebviewMessage } from "../../extension/src/ui-core/chat/chat-protocol";
import {
  ChatController,
  contextMessages,
  type ChatGenerate,
  type ChatTurn,
} from "../../extension/src/ui-core/chat/chat-controller";

test("markdown: raw HTML in model output is escaped, never passed through", () => {
  const html = renderMarkdown('<script>alert(1)</script> <img src=x onerror="alert(2)"> & done');
  assert.ok(!html.includes("<script"), html);
  assert.ok(!html.includes("<img"), html);
  assert.ok(html.includes("&lt;script&gt;alert(1)&lt;/script&gt;"), html);
  assert.ok(html.includes("onerror=&quot;alert(2)&quot;"), html);
  assert.ok(html.includes("&amp; done"), html);
});

test("markdown: code blocks keep their text verbatim (escaped) and get Copy and Insert buttons", () => {
  const html = renderMarkdown("Here:\n\n```ts\nif (a < b && c > d) { x = '<b>' }\n```\nAfter.");
  assert.match(html, /<div class="code-block">/);
  assert.match(html, /data-action="copy"/);
  assert.match(html, /data-action="insert"/);
  assert.match(
    html,
    /<code class="language-ts">if \(a &lt; b &amp;&amp; c &gt; d\) \{ x = &#39;&lt;b&gt;&#39; \}<\/code>/,
  );
  assert.match(html, /<p>After\.<\/p>/);
  // No inline markup inside code.
  assert.equal(renderMarkdown("```\n**not bold**\n```").includes("<strong>"), false);
});

test("markdown: an unclosed fence (a reply mid-stream) renders as code up to the end", () => {
  const html = renderMarkdown("Start\n```python\ndef f():\n    return 1");
  assert.match(html, /<code class="language-python">def f\(\):\n    return 1<\/code>/);
});

test("markdown: a hostile fence language cannot inject attributes", () => {
  const html = renderMarkdown('```js"onmouseover="alert(1)\nx\n```');
  assert.ok(!html.includes('"onmouseover'), html);
});

test("markdown: inline code, emphasis, headings, lists, quotes and rules", () => {
  const html = renderMarkdown(
    "# Title\n\nUse `a<b` and **bold**, *it*, ~~old~~.\n\n- one\n- two\n\n1. first\n2. second\n\n> quoted\n\n---",
  );
  assert.match(html, /<h1>Title<\/h1>/);
  assert.match(html, /<code>a&lt;b<\/code>/);
  assert.match(html, /<strong>bold<\/strong>/);
  assert.match(html, /<em>it<\/em>/);
  assert.match(html, /<del>old<\/del>/);
  assert.match(html, /<ul><li>one<\/li><li>two<\/li><\/ul>/);
  assert.match(html, /<ol><li>first<\/li><li>second<\/li><\/ol>/);
  assert.match(html, /<blockquote><p>quoted<\/p><\/blockquote>/);
  assert.match(html, /<hr>/);
  // Underscores inside identifiers are not emphasis.
  assert.ok(!renderMarkdown("snake_case_name").includes("<em>"));
});

test("markdown: only http(s) and mailto links become links", () => {
  assert.match(
    renderMarkdown("[docs](https://example.com/a?b=1&c=2)"),
    /<a href="https:\/\/example\.com\/a\?b=1&amp;c=2">docs<\/a>/,
  );
  const js = renderMarkdown("[click](javascript:alert(1))");
  assert.ok(!js.includes("<a "), js);
  assert.equal(safeUrl("data:text/html,x"), undefined);
  assert.equal(safeUrl("mailto:a@b.c"), "mailto:a@b.c");
  assert.equal(escapeHtml(`"'<>&`), "&quot;&#39;&lt;&gt;&amp;");
});

test("webview messages are validated before the extension acts on them", () => {
  assert.deepEqual(parseWebviewMessage({ type: "send", text: "hi" }), { type: "send", text: "hi" });
  assert.equal(parseWebviewMessage({ type: "send", text: "   " }), undefined);
  assert.equal(parseWebviewMessage({ type: "send", text: 5 }), undefined);
  assert.equal(parseWebviewMessage({ type: "exec", command: "rm" }), undefined);
  assert.equal(parseWebviewMessage(null), undefined);
  assert.deepEqual(parseWebviewMessage({ type: "insert", code: "x" }), { type: "insert", code: "x" });
  assert.deepEqual(parseWebviewMessage({ type: "model", model: " file:/m.gguf " }), {
    type: "model",
    model: "file:/m.gguf",
  });
});

test("context: latest whole turns that fit, starting with a user turn, then the question", () => {
  const history: ChatTurn[] = [
    { role: "user", content: "a".repeat(50), status: "done" },
    { role: "assistant", content: "b".repeat(50), status: "done" },
    { role: "user", content: "second?", status: "done" },
    { role: "assistant", content: "failed", status: "error", error: "x" },
    { role: "assistant", content: "answer", status: "done" },
  ];
  const m = contextMessages(history, "now?", { maxTurns: 10, maxContextChars: 30 }, "be brief");
  assert.deepEqual(m, [
    { role: "system", content: "be brief" },
    { role: "user", content: "second?" },
    { role: "assistant", content: "answer" },
    { role: "user", content: "now?" },
  ]);
});

function memoryStore(initial: ChatTurn[] = []) {
  const store = {
    saved: initial,
    load: () => store.saved.map((t) => ({ ...t })),
    save: (t: ChatTurn[]) => void (store.saved = t),
  };
  return store;
}

test("controller: streams a reply into the history and saves it", async () => {
  const store = memoryStore();
  const seen: string[] = [];
  const generate: ChatGenerate = async (model, messages, onToken) => {
    assert.equal(model, "m");
    assert.deepEqual(messages.at(-1), { role: "user", content: "hello" });
    for (const t of ["Hi", " there"]) onToken(t);
    return { stopReason: "eos" };
  };
  const chat = new ChatController(store, generate);
  chat.onChange((c) => c.kind === "turn" && seen.push(c.turn.content));
  const reply = await chat.send("hello", "m");
  assert.equal(reply.content, "Hi there");
  assert.equal(reply.status, "done");
  assert.ok(seen.includes("Hi"), "each token is announced as it arrives");
  assert.deepEqual(
    store.saved.map((t) => [t.role, t.content, t.status]),
    [
      ["user", "hello", "done"],
      ["assistant", "Hi there", "done"],
    ],
  );
  assert.equal(chat.busy, false);
});

test("controller: stop aborts the generation and marks the reply stopped; one reply at a time", async () => {
  const store = memoryStore();
  let aborted = false;
  const generate: ChatGenerate = (_m, _msgs, onToken, signal) =>
    new Promise((resolve) => {
      onToken("partial");
      signal.addEventListener("abort", () => {
        aborted = true;
        resolve({ stopReason: "cancelled" });
      });
    });
  const chat = new ChatController(store, generate);
  const pending = chat.send("long story", "m");
  assert.equal(chat.busy, true);
  await assert.rejects(chat.send("another", "m"), /still streaming/);
  chat.stop();
  const reply = await pending;
  assert.equal(aborted, true);
  assert.equal(reply.status, "stopped");
  assert.equal(reply.content, "partial");
});

test("controller: a failed reply keeps its error; a reply left streaming is restored as stopped", async () => {
  const chat = new ChatController(memoryStore(), async () => {
    throw new Error("MODEL_NOT_FOUND: no such model");
  });
  const reply = await chat.send("q", "m");
  assert.equal(reply.status, "error");
  assert.match(reply.error!, /MODEL_NOT_FOUND/);
  const restored = new ChatController(
    memoryStore([{ role: "assistant", content: "half", status: "streaming" }]),
    async () => ({ stopReason: "eos" }),
  );
  assert.equal(restored.turns[0].status, "stopped");
  await assert.rejects(restored.send("q", ""), /no chat model/);
});

test("markdown: tables render as tables, their cells escaped, alignment as a class (the webview allows no inline style)", () => {
  const html = renderMarkdown("| name | size |\n|:--|--:|\n| <b>q4</b> | 1 GB |\n| [x](javascript:alert(1)) | `a|b` |");
  assert.match(
    html,
    /<table><thead><tr><th class="align-left">name<\/th><th class="align-right">size<\/th><\/tr><\/thead>/,
  );
  assert.match(html, /<td class="align-left">&lt;b&gt;q4&lt;\/b&gt;<\/td><td class="align-right">1 GB<\/td>/);
  assert.ok(!html.includes("style="), html);
  assert.ok(!html.includes("<a "), html);
});

test("markdown: nested lists nest; indented code gets the Copy and Insert buttons too", () => {
  assert.match(
    renderMarkdown("- a\n  - b\n    - c\n- d"),
    /<ul><li>a<ul><li>b<ul><li>c<\/li><\/ul><\/li><\/ul><\/li><li>d<\/li><\/ul>/,
  );
  const code = renderMarkdown("Run:\n\n    npm test <all>\n");
  assert.match(code, /<div class="code-block">.*data-action="insert".*<pre><code>npm test &lt;all&gt;<\/code><\/pre>/s);
});

test("markdown: autolinks follow the link rule, images are never fetched, single line breaks stay", () => {
  assert.match(
    renderMarkdown("see <https://example.com/x>"),
    /<a href="https:\/\/example\.com\/x">https:\/\/example\.com\/x<\/a>/,
  );
  assert.ok(!renderMarkdown("<javascript:alert(1)>").includes("<a "));
  // Relative targets are not links either: in the webview they would resolve against its own origin.
  assert.ok(!renderMarkdown("[settings](./settings.json) [ftp](ftp://example.com/x)").includes("<a "));
  const img = renderMarkdown("![pixel](https://tracker.example/p.png)");
  assert.ok(!img.includes("<img"), img);
  assert.match(renderMarkdown("line one\nline two"), /<p>line one<br>line two<\/p>/);
});
