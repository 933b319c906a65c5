/* Draws the report charts from the JSON the page embeds (#report-data). Chart.js is vendored. */
(function () {
  "use strict";
  var PALETTE = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777",
                 "#65a30d", "#ea580c", "#4b5563", "#0d9488", "#9333ea"];
  var page = document.getElementById("charts-script").dataset.page;
  var data = JSON.parse(document.getElementById("report-data").textContent);
  window.reportCharts = [];

  function color(i) { return PALETTE[i % PALETTE.length]; }
  function num(v) { return v === null || v === undefined ? null : Number(v); }
  function nums(list) { return list.map(num); }
  function pct(list) { return list.map(function (v) { return v === null ? null : Number(v) * 100; }); }
  function money(v) { return "$" + Number(v).toLocaleString(undefined, {maximumFractionDigits: 4}); }

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas) { return; }
    config.options = Object.assign({responsive: true, maintainAspectRatio: false, animation: false,
      interaction: {mode: "index", intersect: false}}, config.options || {});
    window.reportCharts.push(new Chart(canvas, config));
  }

  function axes(yTitle, stacked, yTick) {
    return {scales: {
      x: {stacked: !!stacked, ticks: {maxRotation: 0, autoSkip: true, maxTicksLimit: 12}},
      y: {stacked: !!stacked, beginAtZero: true, title: {display: true, text: yTitle},
          ticks: yTick ? {callback: yTick} : {}}
    }};
  }

  function line(label, values, i, extra) {
    return Object.assign({label: label, data: values, borderColor: color(i), backgroundColor: color(i),
      pointRadius: 0, borderWidth: 2, spanGaps: true, tension: 0.2}, extra || {});
  }

  var builders = {
    overview: function () {
      draw("chart-overview", {type: "bar", data: {labels: data.labels, datasets: [
        {label: "Spend", data: nums(data.spend_usd), backgroundColor: color(0)},
        line("Saved by the cache", nums(data.saved_by_cache_usd), 1, {type: "line"}),
        line("Saved by routing", nums(data.saved_by_routing_usd), 4, {type: "line"})
      ]}, options: axes("USD", false, money)});
    },
    spend: function () {
      draw("chart-spend", {type: "bar", data: {labels: data.labels, datasets: data.series.map(function (s, i) {
        return {label: s.name, data: nums(s.cost_usd), backgroundColor: color(i), stack: "spend"};
      })}, options: axes("USD", true, money)});
    },
    cache: function () {
      var sets = [line("All features", pct(data.hit_rate), 0, {borderWidth: 3})];
      data.features.forEach(function (f, i) { sets.push(line(f.feature, pct(f.series), i + 1, {borderWidth: 1.5})); });
      draw("chart-cache-rate", {type: "line", data: {labels: data.labels, datasets: sets},
        options: axes("hit rate %", false)});
      draw("chart-cache-saved", {type: "bar", data: {labels: data.labels, datasets: [
        {label: "Saved", data: nums(data.saved_usd), backgroundColor: color(1)}]},
        options: axes("USD", false, money)});
    },
    providers: function () {
      draw("chart-latency", {type: "line", data: {labels: data.labels, datasets: data.series.map(function (s, i) {
        return line(s.provider + " p95", nums(s.p95_ms), i);
      })}, options: axes("ms", false)});
      draw("chart-errors", {type: "line", data: {labels: data.labels, datasets: data.series.map(function (s, i) {
        return line(s.provider, pct(s.error_rate), i);
      })}, options: axes("error rate %", false)});
      draw("chart-circuit", {type: "bar", data: {labels: data.labels, datasets: data.openings_over_time.map(function (s, i) {
        return {label: s.provider, data: s.counts, backgroundColor: color(i + 3), stack: "openings"};
      })}, options: axes("openings", true)});
    },
    models: function () {
      var labels = data.models.map(function (m) { return m.model; });
      var colors = labels.map(function (_, i) { return color(i); });
      var pie = {plugins: {legend: {position: "right"}}};
      draw("chart-mix-requests", {type: "doughnut", data: {labels: labels, datasets: [
        {data: data.models.map(function (m) { return m.requests; }), backgroundColor: colors}]}, options: pie});
      draw("chart-mix-spend", {type: "doughnut", data: {labels: labels, datasets: [
        {data: data.models.map(function (m) { return num(m.cost_usd); }), backgroundColor: colors}]}, options: pie});
    }
  };
  if (builders[page]) { builders[page](); }
})();
