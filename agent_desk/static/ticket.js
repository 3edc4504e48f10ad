/* Ticket detail: action dialogs with their required inputs, evidence upload, tracking log toggle. */
"use strict";
(() => {
  const number = document.getElementById("ticket-number").dataset.number;
  const dialogs = JSON.parse(document.getElementById("dialogs-data").textContent);
  const dialog = document.getElementById("action-dialog");
  const fieldsBox = document.getElementById("action-fields");
  const errorBox = document.getElementById("action-error");
  let current = null;

  function control(f) {
    const req = f.required ? ' <span class="req">*</span>' : "";
    const label = `<span>${Desk.esc(f.label)}${req}</span>`;
    if (f.kind === "unit" || f.kind === "level" || f.kind === "authority") {
      const opts = f.choices.map((c) => typeof c === "object"
        ? `<option value="${c.id}">${Desk.esc(c.name)}</option>` : `<option>${Desk.esc(c)}</option>`).join("");
      return `<label>${label}<select name="${f.key}"><option value="">请选择</option>${opts}</select></label>`;
    }
    if (f.kind === "clauses") {
      return `<fieldset class="clauses stack"><legend>${label}</legend>` + f.choices.map((c) =>
        `<label><input type="checkbox" name="${f.key}" value="${Desk.esc(c)}">${Desk.esc(c)}</label>`).join("") + "</fieldset>";
    }
    if (f.kind === "amount") return `<label>${label}<input name="${f.key}" inputmode="decimal" placeholder="0.00"></label>`;
    if (f.kind === "date") return `<label>${label}<input name="${f.key}" type="date"></label>`;
    if (f.key === "document_issued") return `<label>${label}<select name="${f.key}"><option value="">请选择</option><option>是</option><option>否</option></select></label>`;
    return `<label>${label}<textarea name="${f.key}" rows="3"></textarea></label>`;
  }

  function open(action) {
    current = dialogs.find((d) => d.action === action);
    document.getElementById("action-title").textContent = action;
    fieldsBox.innerHTML = current.fields.map(control).join("");
    errorBox.hidden = true;
    dialog.showModal();
  }

  function inputs() {
    const result = {};
    for (const f of current.fields) {
      if (f.kind === "clauses") {
        result[f.key] = [...fieldsBox.querySelectorAll(`input[name="${f.key}"]:checked`)].map((i) => i.value);
      } else {
        const el = fieldsBox.querySelector(`[name="${f.key}"]`);
        result[f.key] = el.value.trim() === "" ? null : (f.kind === "unit" ? Number(el.value) : el.value);
      }
    }
    return result;
  }

  document.getElementById("action-buttons")?.addEventListener("click", (e) => {
    const btn = e.target.closest("[data-action]"); if (btn) open(btn.dataset.action);
  });
  document.getElementById("action-cancel").addEventListener("click", () => dialog.close());
  document.getElementById("action-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const submit = document.getElementById("action-submit");
    submit.disabled = true;
    try {
      await Desk.api("POST", `/api/tickets/${number}/actions`, { action: current.action, inputs: inputs() });
      dialog.close(); Desk.toast(`「${current.action}」已完成`); setTimeout(() => location.reload(), 500);
    } catch (err) {
      errorBox.textContent = err.message; errorBox.hidden = false;
      fieldsBox.querySelector(`[name="${err.field}"]`)?.focus();
    } finally { submit.disabled = false; }
  });

  document.getElementById("evidence-form")?.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await Desk.api("POST", `/api/tickets/${number}/evidence`, new FormData(e.target));
      Desk.toast("凭证已上传"); setTimeout(() => location.reload(), 500);
    } catch (err) { Desk.toast(err.message, true); }
  });

  document.getElementById("timeline-toggle")?.addEventListener("click", (e) => {
    const tl = document.getElementById("timeline");
    tl.classList.toggle("expanded");
    e.target.textContent = tl.classList.contains("expanded") ? "收起" : "展开全部处理记录";
  });
})();
