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
  // Cents, as on the pages; under half a cent two significant digits, never "$0.00".
  function money(v) {
    var n = Number(v);
    if (n && Math.abs(n) < 0.005) { return (n < 0 ? "-$" : "$") + Number(Math.abs(n).toPrecision(2)); }
    return (n < 0 ? "-$" : "$") + Math.abs(n).toLocaleString(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 2});
  }

  function count(v) { return Number(v).toLocaleString(); }
  // A latency of 0 means no answer in that bucket yet (the current, partial day), not 0 ms.
  function latency(list) { return list.map(function (v) { return v ? Number(v) : null; }); }

  // Why a chart has nothing to draw, said in its place instead of bare axes.
  var EMPTY = {
    "chart-overview": "No spend in this range.",
    "chart-spend": "No spend in this range.",
    "chart-cache-rate": "No cacheable request in this range.",
    "chart-cache-saved": "Nothing saved by the cache in this range.",
    "chart-latency": "No answered request in this range, so no latency.",
    "chart-errors": "No request to a provider in this range.",
    "chart-circuit": "No circuit breaker opened in this range.",
    "chart-mix-requests": "No request in this range.",
    "chart-mix-spend": "No spend in this range."
  };

  // Lines: empty when no point has a value (a rate of 0 is a value). Bars and donuts:
  // empty when every value is 0 or missing (nothing would be drawn).
  function isEmpty(config) {
    var sets = config.data.datasets;
    if (!config.data.labels.length || !sets.length) { return true; }
    var lines = config.type === "line";
    return !sets.some(function (set) {
      return set.data.some(function (v) {
        return lines && set.type !== "bar" ? v !== null && v !== undefined : !!v;
      });
    });
  }

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas) { return; }
    if (isEmpty(config)) {
      var note = document.createElement("p");
      note.className = "empty chart-empty";
      note.textContent = EMPTY[id] || "No data in this range.";
      canvas.parentNode.replaceWith(note);
      return;
    }
    config.options = Object.assign({responsive: true, maintainAspectRatio: false, animation: false,
      interaction: {mode: "index", intersect: false}}, config.options || {});
    window.reportCharts.push(new Chart(canvas, config));
  }

  // `whole`: a count axis (requests, openings) has whole-number ticks, never 0.2.
  function axes(yTitle, stacked, yTick, whole) {
    var ticks = yTick ? {callback: yTick} : {};
    if (whole) { ticks.precision = 0; ticks.callback = count; }
    return {scales: {
      x: {stacked: !!stacked, ticks: {maxRotation: 0, autoSkip: true, maxTicksLimit: 12}},
      y: {stacked: !!stacked, beginAtZero: true, title: {display: true, text: yTitle},
          ticks: ticks}
    }};
  }

  // Donuts: each slice's name and share in the legend and the tooltip.
  function shares(format) {
    function share(values, i) {
      var total = values.reduce(function (a, v) { return a + (Number(v) || 0); }, 0);
      return total ? (100 * (Number(values[i]) || 0) / total).toFixed(1) + " %" : "—";
    }
    return {plugins: {
      legend: {position: window.innerWidth < 600 ? "bottom" : "right", labels: {generateLabels: function (chart) {
        var base = Chart.overrides.doughnut.plugins.legend.labels.generateLabels(chart);
        var values = chart.data.datasets[0].data;
        return base.map(function (item) {
          item.text = item.text + " (" + share(values, item.index) + ")";
          return item;
        });
      }}},
      tooltip: {callbacks: {label: function (ctx) {
        return " " + ctx.label + ": " + format(ctx.raw) + " (" + share(ctx.dataset.data, ctx.dataIndex) + ")";
      }}}
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
        return line(s.provider + " p95", latency(s.p95_ms), i);
      })}, options: axes("ms", false)});
      draw("chart-errors", {type: "line", data: {labels: data.labels, datasets: data.series.map(function (s, i) {
        return line(s.provider, pct(s.error_rate), i);
      })}, options: axes("error rate %", false)});
      draw("chart-circuit", {type: "bar", data: {labels: data.labels, datasets: data.openings_over_time.map(function (s, i) {
        return {label: s.provider, data: s.counts, backgroundColor: color(i + 3), stack: "openings"};
      })}, options: axes("openings", true, null, true)});
    },
    models: function () {
      var labels = data.models.map(function (m) { return m.model; });
      var colors = labels.map(function (_, i) { return color(i); });
      draw("chart-mix-requests", {type: "doughnut", data: {labels: labels, datasets: [
        {data: data.models.map(function (m) { return m.requests; }), backgroundColor: colors}]},
        options: shares(function (v) { return count(v) + " requests"; })});
      draw("chart-mix-spend", {type: "doughnut", data: {labels: labels, datasets: [
        {data: data.models.map(function (m) { return num(m.cost_usd); }), backgroundColor: colors}]},
        options: shares(money)});
    }
  };
  if (builders[page]) { builders[page](); }
})();
