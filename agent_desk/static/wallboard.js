/* Wallboard: re-reads the snapshot on every live event (debounced) and every 3 s; clocks tick locally.
   Service-level alerts: the figure turns red and, when an alert starts, a short Web Audio beep sounds
   unless the team lead muted it (remembered in this browser). */
"use strict";
(() => {
  let snap = null, pending = null, audio = null, sounding = new Set();
  const $ = (id) => document.getElementById(id);
  const pct = (v) => v == null ? "—" : (v * 100).toFixed(1) + "%";
  const MUTE_KEY = "hotline.wallboard.alertsMuted";
  let muted = localStorage.getItem(MUTE_KEY) === "1";

  function showMute() {
    $("alert-mute").textContent = muted ? "已静音" : "开";
    $("alert-mute").setAttribute("aria-pressed", String(muted));
  }

  function beep() {
    if (muted) return;
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      const tone = audio.createOscillator(), gain = audio.createGain();
      tone.type = "square"; tone.frequency.value = 880; gain.gain.value = 0.15;
      tone.connect(gain); gain.connect(audio.destination);
      tone.start(); tone.stop(audio.currentTime + 0.3);
    } catch (err) { /* no audio output: the colour still shows the alert */ }
  }

  function alerted() {
    const alerts = snap.alerts || [], kinds = new Set(alerts.map((a) => a.kind));
    if ([...kinds].some((k) => !sounding.has(k))) beep();  // a new alert, not every refresh of one
    sounding = kinds;
  }

  function renderService() {
    const s = snap.service || {}, kinds = new Set((snap.alerts || []).map((a) => a.kind));
    const values = { service_level: pct(s.service_level), longest_wait: Desk.duration(s.longest_wait || 0),
                     abandon_rate: pct(s.abandon_rate) };
    const details = { service_level: `${s.window_minutes || ""} 分钟 ${s.offered || 0} 通 · ${s.service_level_seconds || ""} 秒`,
                      longest_wait: s.thresholds ? `阈值 ${s.thresholds.longest_wait_seconds} 秒` : "",
                      abandon_rate: `${s.window_minutes || ""} 分钟 ${s.ended || 0} 通` };
    document.querySelectorAll("[data-figure]").forEach((tile) => {
      const kind = tile.dataset.figure;
      tile.classList.toggle("alarm", kinds.has(kind));
      tile.querySelector("b").textContent = values[kind];
      tile.querySelector("[data-detail]").textContent = details[kind];
    });
    const alerts = snap.alerts || [];
    $("sl-alerts").hidden = !alerts.length;
    $("sl-alerts").textContent = alerts.map((a) => a.text).join("；");
  }

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
    renderService();
    const alarms = snap.disk_alarms || [];
    $("disk-alarm").hidden = !alarms.length;
    $("disk-alarm").textContent = alarms.length ? "磁盘空间不足，请立即通知运维（录音可能无法保存）：" + alarms.join("；") : "";
    $("wb-updated").textContent = "更新于 " + new Date().toLocaleTimeString("zh-CN", { hour12: false });
  }

  async function refresh() {
    pending = null;
    try { snap = await Desk.api("GET", "/api/wallboard"); alerted(); render(); } catch (err) { Desk.toast(err.message, true); }
  }
  const soon = () => { if (!pending) pending = setTimeout(refresh, 150); };
  const names = ["call_started", "call_queued", "call_answered", "call_ended", "agent_state", "queue_stats"];
  Desk.live(Object.fromEntries(names.map((n) => [n, soon])), soon);
  setInterval(refresh, 3000);
  setInterval(render, 1000);
  $("alert-mute").onclick = () => {
    muted = !muted;
    if (muted) localStorage.setItem(MUTE_KEY, "1"); else localStorage.removeItem(MUTE_KEY);
    showMute();
  };
  showMute();
  document.addEventListener("click", async (e) => {
    if (audio) audio.resume();  // browsers start audio only after a gesture (a running context stays so)
    const b = e.target.closest("[data-spy]");
    if (!b) return;
    try { const r = await Desk.api("POST", "/api/wallboard/spy", { agent_id: Number(b.dataset.agent), mode: b.dataset.spy }); Desk.toast(r.message); }
    catch (err) { Desk.toast(err.message, true); }
  });
  refresh();
})();
