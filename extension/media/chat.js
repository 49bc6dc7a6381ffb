// The chat webview's script. It only displays what the extension sends (turn HTML rendered and
// escaped by the extension's markdown renderer) and posts the user's actions back; it holds no
// secrets and reaches nothing but the extension (the page's CSP allows no network at all).
// @ts-check
(function () {
  // eslint-disable-next-line no-undef
  const vscode = acquireVsCodeApi();
  const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
  const messages = $("messages");
  const input = /** @type {HTMLTextAreaElement} */ ($("input"));
  const send = /** @type {HTMLButtonElement} */ ($("send"));
  const stop = /** @type {HTMLButtonElement} */ ($("stop"));
  const model = /** @type {HTMLSelectElement} */ ($("model"));
  const notice = $("notice");
  let noticeTimer = 0;

  function turnElement(turn, index) {
    const el = document.createElement("div");
    el.className = `turn ${turn.role} ${turn.status}`;
    el.dataset.index = String(index);
    el.innerHTML = turn.html || (turn.status === "streaming" ? '<p class="waiting">…</p>' : "");
    return el;
  }

  // The hint shown while the conversation is empty.
  function syncEmpty() {
    $("empty").hidden = messages.childElementCount > 0;
  }

  function setTurn(index, turn) {
    const el = turnElement(turn, index);
    const existing = messages.querySelector(`.turn[data-index="${index}"]`);
    if (existing) existing.replaceWith(el);
    else messages.appendChild(el);
    messages.scrollTop = messages.scrollHeight;
    syncEmpty();
  }

  function setBusy(busy) {
    send.hidden = busy;
    stop.hidden = !busy;
    document.body.classList.toggle("busy", busy);
  }

  function setModels(list, current) {
    model.textContent = "";
    if (!list.length) {
      const o = document.createElement("option");
      o.value = "";
      o.textContent = "no model yet";
      model.appendChild(o);
    }
    for (const ref of list) {
      const o = document.createElement("option");
      o.value = ref;
      o.textContent = ref.split(/[/:]/).filter(Boolean).pop() || ref;
      o.title = ref;
      o.selected = ref === current;
      model.appendChild(o);
    }
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => (notice.hidden = true), 6000);
  }

  window.addEventListener("message", (event) => {
    const m = event.data;
    switch (m && m.type) {
      case "init":
        messages.textContent = "";
        m.turns.forEach((t, i) => setTurn(i, t));
        syncEmpty();
        setModels(m.models, m.model);
        setBusy(m.busy);
        break;
      case "turn":
        setTurn(m.index, m.turn);
        if (m.turn.status !== "streaming") notice.hidden = true;
        break;
      case "busy":
        setBusy(m.busy);
        break;
      case "models":
        setModels(m.models, m.model);
        break;
      case "notice":
        showNotice(m.text);
        break;
      case "accepted":
        input.value = "";
        break;
    }
  });

  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    if (!text.trim() || document.body.classList.contains("busy")) return;
    // The box is emptied when the extension takes the question ("accepted"): a refused send keeps it.
    vscode.postMessage({ type: "send", text });
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      /** @type {HTMLFormElement} */ ($("composer")).requestSubmit();
    }
  });
  stop.addEventListener("click", () => vscode.postMessage({ type: "stop" }));
  $("clear").addEventListener("click", () => vscode.postMessage({ type: "clear" }));
  model.addEventListener("change", () => model.value && vscode.postMessage({ type: "model", model: model.value }));
  // Copy / Insert on code blocks: one listener for every block, present and future.
  messages.addEventListener("click", (e) => {
    const button = /** @type {HTMLElement} */ (e.target).closest("button[data-action]");
    if (!button) return;
    const code = button.closest(".code-block")?.querySelector("code");
    if (code) vscode.postMessage({ type: button.getAttribute("data-action"), code: code.textContent || "" });
  });

  vscode.postMessage({ type: "ready" });
})();
