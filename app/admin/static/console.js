// The console's own script (the CSP allows no inline script): the usage chart, drawn with the
// vendored uPlot from the JSON the page carries, and drawn again when htmx swaps in a range.
(function () {
  "use strict";

  const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

  function drawUsage(root) {
    const target = root.querySelector ? root.querySelector("#usage-chart") : null;
    if (!target || !target.dataset.chart || typeof uPlot === "undefined") {
      return;
    }
    const chart = JSON.parse(target.dataset.chart);
    const xs = chart.days.map(function (day) { return Date.parse(day + "T00:00:00Z") / 1000; });
    // Stacked: each series is drawn as the running sum of itself and those below it; drawn
    // tallest first, so each lower band covers the part of the one above that is not its own.
    const running = xs.map(function () { return 0; });
    const stacked = chart.series.map(function (series) {
      return series.values.map(function (value, i) { running[i] += value; return running[i]; });
    });
    const order = chart.series.map(function (_, i) { return i; }).reverse();
    const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.7, 40] }) : undefined;
    const series = [{}].concat(order.map(function (i) {
      const color = PALETTE[i % PALETTE.length];
      return { label: chart.series[i].label, stroke: color, fill: color, paths: bars, points: { show: false } };
    }));
    target.textContent = "";
    const width = Math.max(320, target.clientWidth || 720);
    /* global uPlot */
    new uPlot({
      width: width,
      height: 260,
      series: series,
      axes: [{}, { size: 70 }],
      scales: { x: { time: true } },
    }, [xs].concat(order.map(function (i) { return stacked[i]; })), target);
    target.setAttribute("data-drawn", "true");
  }

  document.addEventListener("DOMContentLoaded", function () { drawUsage(document); });
  document.addEventListener("htmx:afterSettle", function (event) { drawUsage(event.target.parentNode || document); });
})();
