// The charts of the report and evaluation pages: Apache ECharts (npm, pinned in package-lock.json, served
// from /vendor/echarts). Each <div data-chart='{"categories": [...], "series": [{"name", "data"}],
// "type": "bar" | "line", "links": [url per category]}'> becomes a chart with tooltips; a click anywhere in a
// category's band opens its link (drill-down: a day, a month).
(function () {
  "use strict";
  const COLOURS = ["#0b5cad", "#1a8754", "#c62828", "#b26a00"];

  function render(el) {
    const spec = JSON.parse(el.dataset.chart);
    const chart = echarts.init(el, null, { renderer: "canvas" });
    const several = spec.series.length > 1;
    chart.setOption({
      color: COLOURS,
      animation: false,
      tooltip: { trigger: "axis", axisPointer: { type: spec.type === "line" ? "line" : "shadow" } },
      legend: several ? { top: 0 } : undefined,
      grid: { left: 8, right: 16, top: several ? 32 : 16, bottom: 8, containLabel: true },
      xAxis: { type: "category", data: spec.categories },
      yAxis: { type: "value", name: spec.unit || "", minInterval: spec.integer ? 1 : 0 },
      series: spec.series.map((s) => ({
        name: s.name, type: spec.type || "bar", data: s.data, connectNulls: false,
        label: { show: spec.categories.length <= 14, position: "top" },
      })),
    });
    if (spec.links) {
      el.classList.add("drill");
      chart.getZr().on("click", (event) => {
        const point = [event.offsetX, event.offsetY];
        if (!chart.containPixel("grid", point)) return;
        const index = Math.round(chart.convertFromPixel({ seriesIndex: 0 }, point)[0]);
        if (spec.links[index]) window.location.href = spec.links[index];
      });
    }
    window.addEventListener("resize", () => chart.resize());
  }

  document.querySelectorAll("[data-chart]").forEach(render);
})();
