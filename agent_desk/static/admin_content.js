// The content editor: after a refused change, put the cursor on the line the platform named (第 N 行).
(function () {
  "use strict";
  const area = document.getElementById("content-text");
  if (!area) return;
  const line = parseInt(area.dataset.errorLine || "", 10);
  if (!line) return;
  const lines = area.value.split("\n");
  const start = lines.slice(0, line - 1).reduce((n, text) => n + text.length + 1, 0);
  area.focus();
  area.setSelectionRange(start, start + (lines[line - 1] || "").length);
  const height = area.scrollHeight / Math.max(lines.length, 1);
  area.scrollTop = Math.max(0, (line - 5) * height);
})();
