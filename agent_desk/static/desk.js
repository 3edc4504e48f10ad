/* The agent desk: state bar, live screen pop, ticket registration against the live call, call control. */
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("desk-data").textContent);
  const options = data.options;
  let state = data.state;
  let call = null;  // the popped call: {call_id (internal, matches live events), call_ref (shown and sent), ...}
  const $ = (id) => document.getElementById(id);
  const form = $("ticket-form");
  const BUSINESS = { consult: "咨询", complaint: "投诉", report: "举报", progress: "查询进度", general: "综合" };

  function showState(s) {
    state = s;
    $("state-label").textContent = s.state_label;
    $("state-reason").textContent = s.reason_label || "";
    $("state-dot").className = "state-dot state-" + s.state;
    $("state-phone").textContent = s.webphone ? "网页电话" : (s.phone ? "分机 " + s.phone : "");
    if (window.WebPhone) window.WebPhone.state(s);
    const offline = s.state === Desk.AgentState.OFFLINE;
    $("btn-login").disabled = !offline; $("phone").disabled = !offline;
    $("btn-ready").disabled = offline || s.state === Desk.AgentState.READY;
    $("btn-pause").disabled = offline || s.state === Desk.AgentState.PAUSED;
    $("btn-logout").disabled = offline;
  }
  setInterval(() => { $("state-timer").textContent = state.since ? Desk.duration(Date.now() / 1000 - state.since) : "00:00"; }, 250);

  async function setState(body) {
    try { showState(await Desk.api("POST", "/api/desk/state", body)); } catch (err) { Desk.toast(err.message, true); }
  }
  $("btn-login").onclick = async () => {
    const phone = $("phone").value;
    if (phone === "webrtc") {  // the microphone first: no calls for an agent who cannot speak
      try { await window.WebPhone.prepare(); } catch (err) { Desk.toast(err.message, true); return; }
    }
    setState({ action: "login", phone });
  };
  $("btn-ready").onclick = () => setState({ action: "ready" });
  $("btn-pause").onclick = () => setState({ action: "pause", reason: $("pause-reason").value });
  $("btn-logout").onclick = () => setState({ action: "logout" });

  function fillSelect(select, values, chosen) {
    select.innerHTML = '<option value="">请选择</option>' + values.map((v) => `<option>${Desk.esc(v)}</option>`).join("");
    if (chosen && values.includes(chosen)) select.value = chosen;
  }
  function refreshCategories(chosenObject, chosenEvent) {
    const hotline = form.hotline.value;
    fillSelect(form.complaint_object, options.objects[hotline] || [], chosenObject);
    fillSelect(form.event_category, options.events[hotline] || [], chosenEvent);
  }
  form.hotline.addEventListener("change", () => refreshCategories());
  form.kind.addEventListener("change", () => form.classList.toggle("is-consult", form.kind.value === "consult"));

  function list(el, items, render, empty) {
    el.innerHTML = items.length ? items.map((i) => `<li>${render(i)}</li>`).join("") : `<li class="muted">${empty}</li>`;
  }

  function pop(p) {
    call = p;
    $("pop-empty").hidden = true; $("pop-card").hidden = false;
    $("pop").classList.add("ringing");
    $("pop-caller").textContent = p.caller_number || "未知号码";
    $("pop-hotline").textContent = p.hotline || "—";
    $("pop-queue").textContent = p.queue || "—";
    $("pop-ivr").textContent = [BUSINESS[p.business] || p.business, options.category_labels[p.category] || p.category, p.lookup_ticket ? "查询工单 " + p.lookup_ticket : null]
      .filter(Boolean).join(" · ") || (p.ivr_path || "—");
    $("pop-waited").textContent = Math.round(p.waited_seconds) + " 秒";
    $("pop-status").textContent = "振铃中";
    const h = p.history || { calls: [], tickets: [] };
    list($("pop-calls"), h.calls || [], (c) => `${Desk.esc(c.started_at.slice(0, 16).replace("T", " "))} · ${Desk.esc(BUSINESS[c.business] || "")} · ${c.answered ? "已接听" : "未接通"}`, "无历史来电");
    list($("pop-tickets"), h.tickets || [], (t) => `<a href="/tickets/${Desk.esc(t.number)}" target="_blank">${Desk.esc(t.number)}</a> · ${Desk.esc(t.state)}`, "无历史工单");
    form.reset();
    const d = p.draft || {};
    form.kind.value = d.kind || "consult";
    form.hotline.value = d.hotline || p.hotline || "12301";
    form.complainant_phone.value = d.complainant_phone || p.caller_number || "";
    refreshCategories(options.category_labels[d.complaint_object] || d.complaint_object, d.event_category);
    form.classList.toggle("is-consult", form.kind.value === "consult");
    $("form-call").textContent = "来电编号 " + (p.call_ref || "");
    $("form-error").hidden = true; $("form-result").textContent = ""; $("btn-save").disabled = false;
    document.title = "📞 " + (p.caller_number || "来电") + " · 坐席工作台";
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { call_ids: call && call.call_ref ? [call.call_ref] : [] };
    for (const el of form.elements) {
      if (el.name && el.value.trim() !== "") body[el.name] = el.value.trim();
    }
    if (body.kind !== "consult") delete body.answer;
    $("btn-save").disabled = true;
    try {
      const t = await Desk.api("POST", "/api/tickets", body);
      $("form-error").hidden = true;
      $("form-result").innerHTML = `已保存：<a href="/tickets/${Desk.esc(t.number)}" id="saved-ticket">${Desk.esc(t.number)}</a> · ${Desk.esc(t.unit.name || "")}`;
      Desk.toast("工单 " + t.number + " 已登记");
    } catch (err) {
      $("form-error").textContent = err.message; $("form-error").hidden = false;
      form.querySelector(`[name="${err.field}"]`)?.focus();
      $("btn-save").disabled = false;
    }
  });

  async function callOp(op, body) {
    try { const r = await Desk.api("POST", "/api/desk/call/" + op, body || {}); Desk.toast(r.message || "操作已执行"); }
    catch (err) { Desk.toast(err.message, true); }
  }
  document.querySelectorAll("[data-call]").forEach((b) => { b.onclick = () => callOp(b.dataset.call); });
  document.querySelectorAll("[data-transfer]").forEach((b) => {
    b.onclick = () => callOp("transfer", { target: $("transfer-target").value, mode: b.dataset.transfer });
  });
  $("btn-callback").onclick = () => callOp("callback", { number: $("callback-number").value, hotline: call ? call.hotline : "" });
  document.addEventListener("click", (e) => {
    const dial = e.target.closest("[data-dial]");
    if (dial) callOp("callback", { number: dial.dataset.dial, callback_id: dial.dataset.callback ? Number(dial.dataset.callback) : null });
    const phrase = e.target.closest(".phrases li");
    if (phrase && navigator.clipboard) navigator.clipboard.writeText(phrase.textContent).then(() => Desk.toast("已复制"));
    const tab = e.target.closest("[data-tab]");
    if (tab) {
      document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t === tab));
      document.querySelectorAll(".tabpane").forEach((p) => { p.hidden = p.dataset.pane !== tab.dataset.tab; });
    }
  });

  document.querySelectorAll("form.visit-result").forEach((form) => form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { result: form.elements.result.value, satisfaction: form.elements.satisfaction.value };
    try {
      const r = await Desk.api("POST", "/api/desk/visits/" + form.dataset.visit, body);
      Desk.toast(r.message);
      form.closest("li").remove();
    } catch (err) { Desk.toast(err.message, true); }
  }));

  $("kb-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await Desk.api("GET", "/api/knowledge?q=" + encodeURIComponent($("kb-q").value) + "&hotline=" + encodeURIComponent(call ? call.hotline || "" : ""));
      list($("kb-results"), r.items, (i) => `<b>${Desk.esc(i.question)}</b>${Desk.esc(i.answer)}`, r.problem || "没有找到相关条目");
    } catch (err) { Desk.toast(err.message, true); }
  });

  Desk.live({
    screen_pop: pop,
    agent_state: (s) => showState({ ...state, state: s.state, reason: s.reason, since: s.since,
      state_label: Desk.stateLabel(s.state), reason_label: Desk.reasonLabel(s.reason) }),
    call_answered: (c) => { if (call && c.call_id === call.call_id) { $("pop-status").textContent = "通话中"; $("pop").classList.remove("ringing"); } },
    call_ended: (c) => { if (call && c.call_id === call.call_id) { $("pop-status").textContent = "已结束"; $("pop").classList.remove("ringing"); document.title = "坐席工作台"; } },
  }, async () => { try { showState(await Desk.api("GET", "/api/desk/state")); } catch (_) { /* shown by the toast of the next action */ } });
  showState(state);
})();
