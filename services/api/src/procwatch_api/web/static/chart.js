// The process page's charts (uPlot): CPU % and memory % in one, the instance count in the other,
// restarts as dashed vertical lines. Zoom by dragging (both charts follow), double-click to zoom
// out; each zoom asks the server again for that range, so detail grows as the range shrinks.
(function () {
  "use strict";
  var box, url, charts = [], zoomed = false, data = null;
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function restartLines(u) {
    var ctx = u.ctx, xs = (data && data.restarts) || [];
    ctx.save(); ctx.strokeStyle = css("--alerting"); ctx.setLineDash([5, 4]); ctx.lineWidth = 1.5;
    xs.forEach(function (t) {
      var x = Math.round(u.valToPos(t, "x", true));
      if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
      ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
    });
    ctx.restore();
  }
  function onZoom(u) {
    if (u.select.width <= 0) return;
    var min = u.posToVal(u.select.left, "x"), max = u.posToVal(u.select.left + u.select.width, "x");
    zoomed = true;
    load(min, max);
  }
  function options(title, series, width) {
    var axis = { stroke: css("--muted"), grid: { stroke: css("--line") }, ticks: { stroke: css("--line") } };
    return {
      title: title, width: width, height: 200,
      cursor: { sync: { key: "procwatch" }, drag: { x: true, y: false, setScale: false } },
      scales: { x: { time: true } },
      axes: [axis, Object.assign({}, axis, { size: 50 })],
      series: [{}].concat(series),
      hooks: { draw: [restartLines], setSelect: [onZoom] },
    };
  }
  function draw() {
    var width = Math.max(280, box.clientWidth);
    charts.forEach(function (c) { c.destroy(); }); charts = [];
    var t = data.t;
    charts.push(new uPlot(options("", [
      { label: "CPU %", stroke: css("--accent"), width: 2 },
      { label: "Memory %", stroke: css("--up"), width: 2 },
    ], width), [t, data.cpu, data.memory], document.getElementById("chart-usage")));
    charts.push(new uPlot(options("", [
      { label: "Count", stroke: css("--pending"), width: 2, paths: uPlot.paths.stepped({ align: 1 }) },
    ], width), [t, data.count], document.getElementById("chart-count")));
    charts.forEach(function (c) {
      c.over.addEventListener("dblclick", function () { zoomed = false; load(); });
    });
    box.setAttribute("data-points", String(t.length));
    var summary = document.getElementById("chart-summary");
    if (summary) summary.textContent = t.length + " points, " + data.restarts.length + " restart(s), one point per "
      + data.step_s + " s" + (zoomed ? " (zoomed; double-click to zoom out)" : "");
  }
  function load(start, end) {
    var q = [];
    if (start) q.push("start=" + encodeURIComponent(start));
    if (end) q.push("end=" + encodeURIComponent(end));
    return fetch(url + (q.length ? "?" + q.join("&") : ""), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { if (body) { data = body; draw(); } });
  }
  document.addEventListener("DOMContentLoaded", function () {
    box = document.getElementById("charts");
    if (!box || !window.uPlot) return;
    url = box.getAttribute("data-series-url");
    load();
    document.querySelectorAll("[data-range]").forEach(function (button) {
      button.addEventListener("click", function () {
        var seconds = Number(button.getAttribute("data-range"));
        zoomed = seconds > 0;
        load(seconds ? Date.now() / 1000 - seconds : null);
      });
    });
    // After each live refresh of the page (live.js), unless the reader is looking at a zoomed range.
    document.addEventListener("procwatch:refreshed", function () { if (!zoomed) load(); });
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", function () { if (data) draw(); });
    var resizeTimer = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizeTimer); resizeTimer = setTimeout(function () { if (data) draw(); }, 200);
    });
  });
})();
