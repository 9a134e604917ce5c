// whale chat: conversations kept in localStorage, answers streamed from /v1/chat/completions
// (server-sent events), reasoning_content shown in a collapsible block, Stop aborts the request
// (the server then frees the sequence's batch slot and cache).
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "whale-chat";
let state = load();
let controller = null;

function load() {
  try {
    const s = JSON.parse(localStorage.getItem(STORE));
    if (s && Array.isArray(s.conversations)) return s;
  } catch (e) { /* start fresh */ }
  return { conversations: [], current: null, settings: {} };
}
function save() { localStorage.setItem(STORE, JSON.stringify(state)); }
function current() { return state.conversations.find((c) => c.id === state.current); }

function newConversation() {
  const c = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: "New chat", messages: [] };
  state.conversations.unshift(c);
  state.current = c.id;
  save();
  render();
}

const SETTINGS = ["model", "system", "temperature", "top_p", "max_tokens", "seed", "api_key", "extra"];
function loadSettings() {
  for (const k of SETTINGS) if (state.settings[k] !== undefined) $(k).value = state.settings[k];
  for (const k of SETTINGS) $(k).addEventListener("change", () => { state.settings[k] = $(k).value; save(); });
}

function renderList() {
  const ul = $("conversations");
  ul.replaceChildren();
  for (const c of state.conversations) {
    const li = document.createElement("li");
    li.className = c.id === state.current ? "active" : "";
    const span = document.createElement("span");
    span.textContent = c.title;
    li.append(span);
    const del = document.createElement("button");
    del.textContent = "×";
    del.title = "Delete";
    del.addEventListener("click", (e) => {
      e.stopPropagation();
      state.conversations = state.conversations.filter((x) => x.id !== c.id);
      if (state.current === c.id) state.current = state.conversations[0] ? state.conversations[0].id : null;
      save();
      render();
    });
    li.append(del);
    li.addEventListener("click", () => { if (!controller) { state.current = c.id; save(); render(); } });
    ul.append(li);
  }
}

function messageView(m) {
  const div = document.createElement("div");
  div.className = "msg " + m.role;
  if (m.role === "assistant") {
    const details = document.createElement("details");
    details.className = "reasoning";
    const summary = document.createElement("summary");
    summary.textContent = "Reasoning";
    const rt = document.createElement("div");
    rt.className = "reasoning-text";
    rt.textContent = m.reasoning || "";
    details.append(summary, rt);
    details.hidden = !m.reasoning;
    div.append(details);
  }
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = m.content || "";
  div.append(content);
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = m.meta || "";
  div.append(meta);
  return div;
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  const c = current();
  if (!c) return;
  for (const m of c.messages) box.append(messageView(m));
  box.scrollTop = box.scrollHeight;
}

function render() { renderList(); renderMessages(); }

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

function requestBody(c) {
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  for (const m of c.messages) if (m.role === "user" || (m.role === "assistant" && m.done)) messages.push({ role: m.role, content: m.content });
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  if ($("model").value) body.model = $("model").value;
  const num = (id) => ($(id).value === "" ? undefined : Number($(id).value));
  if (num("temperature") !== undefined) body.temperature = num("temperature");
  if (num("top_p") !== undefined) body.top_p = num("top_p");
  if (num("max_tokens") !== undefined) body.max_tokens = num("max_tokens");
  if (num("seed") !== undefined) body.seed = num("seed");
  if ($("extra").value.trim()) Object.assign(body, JSON.parse($("extra").value));
  return body;
}

async function send(text) {
  let c = current();
  if (!c) { newConversation(); c = current(); }
  if (c.messages.length === 0) c.title = text.slice(0, 40);
  c.messages.push({ role: "user", content: text });
  const answer = { role: "assistant", content: "", reasoning: "", meta: "", done: false };
  c.messages.push(answer);
  save();
  render();
  const view = $("messages").lastElementChild;
  const contentEl = view.querySelector(".content");
  const reasoningBox = view.querySelector("details.reasoning");
  const reasoningEl = view.querySelector(".reasoning-text");
  const metaEl = view.querySelector(".meta");
  showError("");
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const headers = { "Content-Type": "application/json" };
  if ($("api_key").value) headers.Authorization = "Bearer " + $("api_key").value;
  const started = performance.now();
  try {
    const body = requestBody(c);
    const res = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body), signal: controller.signal });
    if (!res.ok) {
      let msg = res.status + " " + res.statusText;
      try { msg = (await res.json()).error.message; } catch (e) { /* keep the status */ }
      throw new Error(msg);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ")) continue;  // keep-alive comments
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.usage) {
          const secs = (performance.now() - started) / 1000;
          answer.meta = `${chunk.usage.completion_tokens} tokens (${chunk.usage.completion_tokens_details.reasoning_tokens} reasoning), ` +
            `${(chunk.usage.completion_tokens / secs).toFixed(1)} tok/s, ${chunk.usage.prompt_tokens_details.cached_tokens} prompt tokens cached`;
          metaEl.textContent = answer.meta;
        }
        for (const choice of chunk.choices || []) {
          const d = choice.delta || {};
          if (d.reasoning_content) {
            answer.reasoning += d.reasoning_content;
            reasoningEl.textContent = answer.reasoning;
            reasoningBox.hidden = false;
          }
          if (d.content) { answer.content += d.content; contentEl.textContent = answer.content; }
          if (d.tool_calls) for (const t of d.tool_calls) { answer.content += `\n[tool call] ${t.function.name}(${t.function.arguments})`; contentEl.textContent = answer.content; }
          if (choice.finish_reason) answer.finish_reason = choice.finish_reason;
        }
        $("messages").scrollTop = $("messages").scrollHeight;
      }
    }
    answer.done = true;
  } catch (e) {
    if (e.name === "AbortError") {
      answer.done = true;
      answer.meta = (answer.meta ? answer.meta + " · " : "") + "stopped";
      metaEl.textContent = answer.meta;
    } else {
      showError(String(e.message || e));
      c.messages.pop();  // the failed answer; the question stays so it can be resent
    }
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
    view.classList.add("finished");
    save();
    renderList();
  }
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("new-chat").addEventListener("click", () => { if (!controller) newConversation(); });
loadSettings();
if (!current()) newConversation(); else render();
