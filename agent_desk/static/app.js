/* Shared helpers: CSRF-protected JSON calls, toasts, the live event connection. */
"use strict";
const Desk = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  async function api(method, url, body) {
    const opts = { method, headers: { "Accept": "application/json", "X-CSRF-Token": csrf() }, credentials: "same-origin" };
    if (body instanceof FormData) opts.body = body;
    else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
    const resp = await fetch(url, opts);
    if (resp.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("登录已过期"); }
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) { const err = new Error(data.error || ("请求失败（" + resp.status + "）")); err.field = data.field; throw err; }
    return data;
  }

  let toastTimer;
  function toast(message, isError) {
    const el = document.getElementById("toast");
    el.textContent = message; el.hidden = false; el.className = "toast" + (isError ? " error" : "");
    clearTimeout(toastTimer); toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    const pad = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + pad(m) : pad(m)) + ":" + pad(s);
  }

  /* EventSource reconnects by itself and sends Last-Event-ID, so the server replays what was missed. */
  /* One event stream per page, shared by the page's own handlers and the message badge. */
  let shared = null;
  function stream() { if (!shared) shared = new EventSource("/events"); return shared; }

  function live(handlers, onOpen) {
    const conn = document.getElementById("conn");
    const source = stream();
    source.onopen = () => { if (conn) { conn.classList.remove("down"); conn.textContent = "● 实时"; } if (onOpen) onOpen(); };
    source.onerror = () => { if (conn) { conn.classList.add("down"); conn.textContent = "● 重新连接中"; } };
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => fn(JSON.parse(e.data), e));
    }
    /* The server closed this stream because the same user opened one more window than allowed:
       stop here instead of reconnecting (which would close that newer window's stream in turn). */
    source.addEventListener("superseded", (e) => {
      source.close();
      if (conn) { conn.classList.add("down"); conn.textContent = "● 已在其他窗口打开"; }
      toast(JSON.parse(e.data).message, true);
    });
    return source;
  }

  // Safe in element content and in quoted attributes: quotes too, or a caller ID such as
  // `"><svg onload=...>` would leave a data-* attribute (textContent/innerHTML keeps quotes as they are).
  const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function esc(text) {
    return (text == null ? "" : String(text)).replace(/[&<>"']/g, (c) => ENTITIES[c]);
  }

  /* Message centre badge on every page: the count now, then one more per live "inbox" event. */
  function setUnread(n) { document.querySelectorAll("[data-unread]").forEach((el) => { el.textContent = String(n); }); }
  if (document.getElementById("inbox-unread")) {
    api("GET", "/api/messages").then((data) => setUnread(data.unread)).catch(() => {});
    stream().addEventListener("inbox", (e) => {
      const data = JSON.parse(e.data);
      api("GET", "/api/messages").then((d) => setUnread(d.unread)).catch(() => {});
      toast(data.text);
    });
  }
  /* 全部标为已读 on the message centre. Here, not inline in messages.html: the desk's CSP (script-src 'self')
     blocks inline scripts, which left that button doing nothing. */
  const readAll = document.getElementById("read-all");
  if (readAll) {
    readAll.addEventListener("click", async () => {
      await api("POST", "/api/messages/read", {});
      location.reload();
    });
  }

  document.addEventListener("click", (e) => {
    const t = e.target.closest("[data-toggle]");
    if (t) { const el = document.getElementById(t.dataset.toggle); el.hidden = !el.hidden; }
  });
  /* Agent states and pause reasons (core/vocabulary.py, rendered by base.html): compare against
     Desk.AgentState.READY, never a bare "ready", so a renamed state cannot be missed here. */
  const vocab = JSON.parse(document.getElementById("vocabulary").textContent);
  const stateLabel = (s) => vocab.stateLabels[s] || s || "";
  const reasonLabel = (r) => vocab.reasonLabels[r] || "";
  return { api, toast, duration, live, esc, AgentState: vocab.AgentState, PauseReason: vocab.PauseReason,
    stateLabel, reasonLabel };
})();
