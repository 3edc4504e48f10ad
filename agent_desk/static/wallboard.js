/* Wallboard: re-reads the snapshot on every live event (debounced) and every 3 s; clocks tick locally. */
"use strict";
(() => {
  let snap = null, pending = null;
  const $ = (id) => document.getElementById(id);
  const pct = (v) => v == null ? "—" : (v * 100).toFixed(1) + "%";

  function render() {
    if (!snap) return;
    const skew = Date.now() / 1000 - snap.now;
    $("queues").tBodies[0].innerHTML = snap.queues.map((q) => `<tr class="${q.waiting ? "alert-row" : ""}" data-queue="${q.queue}">
      <td>${Desk.esc(q.label)}</td><td class="num big-num waiting">${q.waiting}</td>
      <td class="num">${q.waiting ? Desk.duration(q.longest_wait + skew) : "—"}</td>
      <td>${q.callers.map(Desk.esc).join("、")}</td><td class="num answered">${q.answered}</td>
      <td class="num">${q.abandoned}</td><td class="num">${pct(q.within_60)}</td></tr>`).join("");
    $("agents").tBodies[0].innerHTML = snap.agents.map((a) => `<tr data-agent="${a.id}">
      <td>${Desk.esc(a.name)} <span class="muted">${Desk.esc(a.number || "")}</span></td><td>${Desk.esc(a.phone || "—")}</td>
      <td><span class="state-dot state-${a.state}"></span> ${Desk.esc(a.state_label)} <span class="muted">${Desk.esc(a.reason)}</span></td>
      <td class="num">${a.since && a.state !== Desk.AgentState.OFFLINE ? Desk.duration(Date.now() / 1000 - a.since) : "—"}</td>
      <td>${Desk.esc(a.caller || "")}</td><td class="num">${a.answered_today}</td>
      <td>${a.phone ? ["listen", "whisper", "barge"].map((m) => `<button class="btn small" data-spy="${m}" data-agent="${a.id}">${{ listen: "监听", whisper: "耳语", barge: "强插" }[m]}</button>`).join(" ") : ""}</td></tr>`).join("");
    $("abandoned").tBodies[0].innerHTML = (snap.abandoned || []).map((c) => `<tr data-caller="${Desk.esc(c.caller || "")}">
      <td>${new Date(c.at * 1000).toLocaleTimeString("zh-CN", { hour12: false })}</td><td>${Desk.esc(c.caller || "未知号码")}</td>
      <td>${Desk.esc(c.hotline || "")}</td><td>${Desk.esc(c.queue || "")}</td><td class="num">${Desk.duration(c.waited)}</td>
      <td data-callback-state>${c.callback ? (c.callback === "待回拨" ? `<strong>${Desk.esc(c.callback)}</strong>` : Desk.esc(c.callback))
        + (c.callback_attempts ? ` <span class="muted">已尝试 ${c.callback_attempts} 次</span>` : "")
        : (c.reached_since ? "已再次接通" : "<strong>待回拨</strong>")}</td></tr>`).join("")
      || `<tr><td colspan="6" class="muted">今日暂无放弃来电</td></tr>`;
    const alarms = snap.disk_alarms || [];
    $("disk-alarm").hidden = !alarms.length;
    $("disk-alarm").textContent = alarms.length ? "磁盘空间不足，请立即通知运维（录音可能无法保存）：" + alarms.join("；") : "";
    $("wb-updated").textContent = "更新于 " + new Date().toLocaleTimeString("zh-CN", { hour12: false });
  }

  async function refresh() {
    pending = null;
    try { snap = await Desk.api("GET", "/api/wallboard"); render(); } catch (err) { Desk.toast(err.message, true); }
  }
  const soon = () => { if (!pending) pending = setTimeout(refresh, 150); };
  const names = ["call_started", "call_queued", "call_answered", "call_ended", "agent_state", "queue_stats"];
  Desk.live(Object.fromEntries(names.map((n) => [n, soon])), soon);
  setInterval(refresh, 3000);
  setInterval(render, 1000);
  document.addEventListener("click", async (e) => {
    const b = e.target.closest("[data-spy]");
    if (!b) return;
    try { const r = await Desk.api("POST", "/api/wallboard/spy", { agent_id: Number(b.dataset.agent), mode: b.dataset.spy }); Desk.toast(r.message); }
    catch (err) { Desk.toast(err.message, true); }
  });
  refresh();
})();
