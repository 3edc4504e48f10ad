/* 网页电话: the agent's browser phone (sip.js over the desk's same-origin WebSocket /phone/ws).
   Registers the endpoint the desk created for this session, rings with the pop, answers by button or
   Alt+A, mutes, picks the microphone and shows its level. Call control (hold, transfers, hang-up,
   callbacks) stays on the desk's buttons: they act on this phone's channel in Asterisk like on any phone. */
import { Registerer, RegistererState, SessionState, UserAgent, Web } from "/vendor/sip.js/index.js";

const $ = (id) => document.getElementById(id);
const TAB = Math.random().toString(36).slice(2);  // this tab's id: the desk refuses a second tab's phone
const RING = { freq: 450, on: 1.0, off: 4.0 };    // China's ring-back cadence

let ua = null, registerer = null, session = null, incoming = null, stopped = true;
let audioCtx = null, ringTimer = null, meterStream = null, meterTimer = null, muted = false, retry = 0;

function status(text, bad) {
  const el = $("wp-status");
  el.textContent = text; el.classList.toggle("bad", Boolean(bad));
}

function micConstraint() {
  const id = $("wp-mic").value;
  return id ? { deviceId: { exact: id } } : true;
}

function micProblem(err) {
  if (err && (err.name === "NotAllowedError" || err.name === "SecurityError"))
    return "浏览器拒绝了麦克风权限：请点击地址栏左侧的图标允许使用麦克风，然后重新签入";
  if (err && (err.name === "NotFoundError" || err.name === "OverconstrainedError"))
    return "没有找到麦克风：请插好耳麦（或在“麦克风”中另选一个），然后重新签入";
  if (err && err.name === "NotReadableError") return "麦克风正被其他程序占用：请关闭该程序后重新签入";
  return "无法使用麦克风：" + (err && err.message ? err.message : "未知原因");
}

/* Before signing in: the microphone must work, or the agent would be offered calls they cannot speak on. */
async function prepare() {
  audioCtx = audioCtx || new AudioContext();  // created on the click of 签入: allowed to play the ring
  try {
    await startMeter();
  } catch (err) {
    const message = micProblem(err);
    status(message, true);
    throw new Error(message);
  }
  await listMics();
}

async function listMics() {
  const select = $("wp-mic"), chosen = select.value;
  const mics = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
  select.innerHTML = '<option value="">默认麦克风</option>' + mics.map((m, i) =>
    `<option value="${Desk.esc(m.deviceId)}">${Desk.esc(m.label || "麦克风 " + (i + 1))}</option>`).join("");
  if (chosen && mics.some((m) => m.deviceId === chosen)) select.value = chosen;
}

async function startMeter() {
  stopMeter();
  meterStream = await navigator.mediaDevices.getUserMedia({ audio: micConstraint(), video: false });
  audioCtx = audioCtx || new AudioContext();
  const analyser = audioCtx.createAnalyser();
  analyser.fftSize = 1024;
  audioCtx.createMediaStreamSource(meterStream).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  meterTimer = setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0; for (const v of buf) sum += v * v;
    $("wp-level").value = muted ? 0 : Math.min(1, Math.sqrt(sum / buf.length) * 4);
  }, 100);
}

function stopMeter() {
  clearInterval(meterTimer);
  if (meterStream) meterStream.getTracks().forEach((t) => t.stop());
  meterStream = null;
}

function ring(on) {
  clearInterval(ringTimer); ringTimer = null;
  if (!on || !audioCtx) return;
  const beep = () => {
    const osc = audioCtx.createOscillator(), gain = audioCtx.createGain();
    osc.frequency.value = RING.freq; gain.gain.value = 0.15;
    osc.connect(gain).connect(audioCtx.destination);
    osc.start(); osc.stop(audioCtx.currentTime + RING.on);
  };
  beep(); ringTimer = setInterval(beep, (RING.on + RING.off) * 1000);
}

function showCall(state) {
  $("wp-answer").disabled = state !== "ringing";
  $("wp-mute").disabled = state !== "talking";
  $("webphone").dataset.call = state;
}

async function start() {
  if (ua) return;
  stopped = false;
  let creds;
  try {
    creds = await Desk.api("GET", "/api/desk/webphone?tab=" + TAB);
  } catch (err) { status(err.message, true); return; }
  if (!meterStream) { try { await startMeter(); await listMics(); } catch (err) { status(micProblem(err), true); } }
  const wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + creds.ws_path + "?tab=" + TAB;
  ua = new UserAgent({
    uri: UserAgent.makeURI(`sip:${creds.endpoint}@${location.hostname}`),
    authorizationUsername: creds.endpoint, authorizationPassword: creds.password,
    displayName: creds.endpoint, logLevel: "warn",  // no contactName: Asterisk rewrites the Contact host (ws)
    transportOptions: { server: wsUrl, traceSip: false },
    sessionDescriptionHandlerFactory: Web.defaultSessionDescriptionHandlerFactory(
      () => navigator.mediaDevices.getUserMedia({ audio: micConstraint(), video: false })),
    sessionDescriptionHandlerFactoryOptions: {
      iceGatheringTimeout: creds.ice_gathering_timeout_ms, peerConnectionConfiguration: { iceServers: [] } },
    delegate: { onInvite, onDisconnect, onConnect },
  });
  registerer = new Registerer(ua, { expires: 300 });
  registerer.stateChange.addListener((s) => {
    if (s === RegistererState.Unregistered) $("webphone").dataset.registered = "no";
  });
  status("网页电话连接中……");
  try { await ua.start(); } catch (_) { onDisconnect(new Error("connect")); }
}

/* Each (re)connection registers again; the Registerer's own state stays "Registered" across a dropped
   WebSocket, so the accepted REGISTER itself is what tells the page the phone works again. */
function onConnect() {
  registerer.register({ requestDelegate: {
    onAccept: () => { retry = 0; status("网页电话已就绪（已注册）"); $("webphone").dataset.registered = "yes"; },
    onReject: () => status("网页电话注册失败：请签出后重新签入", true),
  } }).catch(() => status("网页电话注册失败，正在重试……", true));
}

function onDisconnect(error) {
  $("webphone").dataset.registered = "no";
  if (stopped) return;
  if (!error) return;
  status("网页电话连接中断，正在重新连接……（在重新连上之前不会分配来电）", true);
  const wait = Math.min(30, 2 ** retry++);
  setTimeout(async () => {
    if (stopped || !ua) return;
    try {  // the same tab again; if another tab took the phone meanwhile, the desk says so
      await Desk.api("GET", "/api/desk/webphone?tab=" + TAB);
      await ua.reconnect();
    } catch (err) { console.warn("webphone reconnect:", err.message); if (!stopped) onDisconnect(err); }
  }, wait * 1000);
}

function onInvite(invitation) {
  if (session || incoming) { invitation.reject({ statusCode: 486 }); return; }
  incoming = invitation;
  showCall("ringing"); ring(true);
  status("来电振铃中：点击“接听”或按 Alt+A");
  invitation.stateChange.addListener((s) => {
    if (s === SessionState.Established) {
      session = invitation; incoming = null; ring(false); showCall("talking"); status("通话中");
      const remote = invitation.sessionDescriptionHandler.remoteMediaStream;
      $("wp-remote").srcObject = remote;
      $("wp-remote").play().catch(() => {});
      applyMute();
    }
    if (s === SessionState.Terminated) {
      ring(false); session = null; incoming = null; showCall("idle");
      if (!stopped) status("网页电话已就绪（已注册）");
    }
  });
}

function answer() {
  if (!incoming) return;
  incoming.accept({ sessionDescriptionHandlerOptions: { constraints: { audio: micConstraint(), video: false } } })
    .catch((err) => status(micProblem(err), true));
}

function applyMute() {
  const pc = session && session.sessionDescriptionHandler && session.sessionDescriptionHandler.peerConnection;
  if (pc) pc.getSenders().forEach((s) => { if (s.track) s.track.enabled = !muted; });
  $("wp-mute").textContent = muted ? "取消静音" : "静音";
  $("wp-mute").setAttribute("aria-pressed", String(muted));
}

async function stop() {
  stopped = true; ring(false); stopMeter();
  const old = ua; ua = null; registerer = null;
  if (old) { try { await old.stop(); } catch (_) { /* already gone */ } }
  status("未使用网页电话"); showCall("idle");
}

$("wp-answer").onclick = answer;
$("wp-mute").onclick = () => { muted = !muted; applyMute(); };
$("wp-mic").onchange = () => { startMeter().catch((err) => status(micProblem(err), true)); };
document.addEventListener("keydown", (e) => {
  if (e.altKey && (e.key === "a" || e.key === "A")) { e.preventDefault(); answer(); }
});
navigator.mediaDevices?.addEventListener?.("devicechange", () => { listMics().catch(() => {}); });

window.WebPhone = {
  prepare, start, stop,
  state: (s) => { if (s.webphone && s.state !== Desk.AgentState.OFFLINE) start(); else if (ua) stop(); },
};
const initial = JSON.parse($("desk-data").textContent).state;
if (initial.webphone && initial.state !== Desk.AgentState.OFFLINE) start();
