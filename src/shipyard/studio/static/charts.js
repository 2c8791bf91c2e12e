// Charts of the run and compare pages, drawn with Plotly.js from the data the server embedded
// in <script id="chart-data">. The controls (x axis, log scale, smoothing) live in the URL.
"use strict";

(function () {
  var holder = document.getElementById("chart-data");
  if (!holder || typeof Plotly === "undefined") return;
  var data = JSON.parse(holder.textContent);
  var compare = Array.isArray(data.runs);
  var runs = compare ? data.runs : null;
  var colorOf = {};
  if (compare) runs.forEach(function (r) { colorOf[r.id] = r.color; });

  var state = { x: "step", log: false, smooth: 0 };
  var params = new URLSearchParams(window.location.search);
  if (["step", "time", "relative"].indexOf(params.get("x")) >= 0) state.x = params.get("x");
  state.log = params.get("log") === "1";
  var sm = parseFloat(params.get("smooth"));
  if (!isNaN(sm)) state.smooth = Math.min(0.99, Math.max(0, sm));

  var CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "toImage"],
  };

  // TensorBoard's smoothing: an exponential moving average, debiased so the start is not
  // pulled toward zero. Gaps (null) stay gaps.
  function smooth(values, weight) {
    if (!weight) return values;
    var last = 0;
    var n = 0;
    return values.map(function (v) {
      if (v === null || !isFinite(v)) return v;
      last = last * weight + (1 - weight) * v;
      n += 1;
      return last / (1 - Math.pow(weight, n));
    });
  }

  function xs(h) {
    if (state.x === "time") return h.timestamps.map(function (t) { return new Date(t); });
    if (state.x === "relative") {
      var t0 = h.timestamps.length ? h.timestamps[0] : 0;
      return h.timestamps.map(function (t) { return (t - t0) / 1000; });
    }
    return h.steps;
  }

  function xTitle() {
    return { step: "step", time: "time", relative: "seconds since first point" }[state.x];
  }

  function traces(series) {
    var out = [];
    series.forEach(function (s) {
      var x = xs(s.h);
      var name = s.name;
      if (state.smooth > 0) {
        out.push({
          type: "scatter", mode: "lines", x: x, y: s.h.values, name: name + " (raw)",
          line: { color: s.color, width: 1 }, opacity: 0.25, hoverinfo: "skip",
          showlegend: false, legendgroup: s.id,
        });
      }
      out.push({
        type: "scatter", mode: s.h.values.length === 1 ? "markers" : "lines",
        x: x, y: smooth(s.h.values, state.smooth), name: name, legendgroup: s.id,
        line: { color: s.color, width: 2 }, marker: { color: s.color, size: 6 },
        hovertemplate: "%{y:.6g}<extra>" + escapeHtml(name) + "</extra>",
      });
    });
    return out;
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function layout(showLegend) {
    return {
      height: 260,
      margin: { l: 56, r: 16, t: 8, b: 40 },
      xaxis: { title: { text: xTitle(), font: { size: 11 } }, type: state.x === "time" ? "date" : "linear",
               gridcolor: "#eef0f3", zeroline: false },
      yaxis: { type: state.log ? "log" : "linear", gridcolor: "#eef0f3", zeroline: false,
               exponentformat: "SI" },
      showlegend: showLegend,
      legend: { orientation: "h", y: -0.25, font: { size: 11 } },
      hovermode: compare ? "x unified" : "closest",
      font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#2b2f36" },
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
    };
  }

  function seriesFor(key) {
    var hs = data.histories[key];
    if (!hs) return [];
    if (!compare) return [{ id: hs.run_id, name: data.run_name, color: data.color, h: hs }];
    return hs.map(function (h) {
      var run = runs.filter(function (r) { return r.id === h.run_id; })[0] || { name: h.run_id };
      return { id: h.run_id, name: run.name, color: colorOf[h.run_id] || "#888", h: h };
    });
  }

  function note(key) {
    var el = document.querySelector('[data-note-for="' + CSS.escape(key) + '"]');
    if (!el) return;
    var hs = data.histories[key];
    var thinned = (Array.isArray(hs) ? hs : [hs]).filter(function (h) {
      return h && h.total > h.steps.length;
    });
    if (thinned.length === 1 && !Array.isArray(hs)) {
      el.textContent = "Showing " + hs.steps.length.toLocaleString() + " of " +
        hs.total.toLocaleString() + " points, evenly thinned.";
    } else if (thinned.length) {
      el.textContent = "Long histories are shown evenly thinned (" +
        thinned[0].steps.length.toLocaleString() + " points per run).";
    }
  }

  function drawAll() {
    document.querySelectorAll(".chart[data-key]").forEach(function (div) {
      var key = div.dataset.key;
      Plotly.react(div, traces(seriesFor(key)), layout(compare), CONFIG);
      note(key);
    });
  }

  function drawParcoords() {
    var div = document.getElementById("parcoords");
    if (!div || !data.parcoords) return;
    var dims = data.parcoords.dimensions;
    if (!dims.length) {
      div.textContent = "No params to plot.";
      return;
    }
    var n = runs.length;
    var scale = runs.map(function (r, i) { return [n > 1 ? i / (n - 1) : 0, r.color]; });
    if (n === 1) scale.push([1, runs[0].color]);
    var trace = {
      type: "parcoords",
      line: { color: runs.map(function (_, i) { return i; }), colorscale: scale, cmin: 0,
              cmax: Math.max(1, n - 1), showscale: false },
      dimensions: dims.map(function (d) {
        var dim = { label: d.label, values: d.values.map(function (v) { return v === null ? NaN : v; }) };
        if (d.tickvals) {
          dim.tickvals = d.tickvals;
          dim.ticktext = d.ticktext;
          dim.range = [-0.5, d.tickvals.length - 0.5];
        }
        return dim;
      }),
      labelfont: { size: 12 },
      tickfont: { size: 11 },
    };
    Plotly.react(div, [trace], {
      height: 340, margin: { l: 60, r: 60, t: 40, b: 24 },
      font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#2b2f36" },
      paper_bgcolor: "rgba(0,0,0,0)",
    }, CONFIG);
  }

  function saveState() {
    var url = new URL(window.location.href);
    if (state.x === "step") url.searchParams.delete("x"); else url.searchParams.set("x", state.x);
    if (state.log) url.searchParams.set("log", "1"); else url.searchParams.delete("log");
    if (state.smooth > 0) url.searchParams.set("smooth", String(state.smooth));
    else url.searchParams.delete("smooth");
    window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
  }

  function bindControls() {
    document.querySelectorAll('#chart-controls input[name="x"]').forEach(function (r) {
      r.checked = r.value === state.x;
      r.addEventListener("change", function () {
        if (r.checked) { state.x = r.value; saveState(); drawAll(); }
      });
    });
    var log = document.getElementById("log-scale");
    if (log) {
      log.checked = state.log;
      log.addEventListener("change", function () { state.log = log.checked; saveState(); drawAll(); });
    }
    var slider = document.getElementById("smoothing");
    var out = document.getElementById("smoothing-value");
    if (slider) {
      slider.value = state.smooth;
      var timer = null;
      slider.addEventListener("input", function () {
        state.smooth = parseFloat(slider.value) || 0;
        if (out) out.textContent = state.smooth.toFixed(2);
        clearTimeout(timer);
        timer = setTimeout(function () { saveState(); drawAll(); }, 60);
      });
    }
    var onlyDiff = document.getElementById("only-diff");
    var table = document.getElementById("params-table");
    if (onlyDiff && table) {
      onlyDiff.addEventListener("change", function () {
        table.classList.toggle("only-diff", onlyDiff.checked);
        var url = new URL(window.location.href);
        if (onlyDiff.checked) url.searchParams.set("diff", "1"); else url.searchParams.delete("diff");
        window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
      });
    }
    var pc = document.getElementById("pc-metric");
    if (pc) {
      // A new view (Back returns to the previous metric), keeping every other choice.
      pc.addEventListener("change", function () {
        var url = new URL(window.location.href);
        url.searchParams.set("pc", pc.value);
        window.location.href = url.pathname + url.search + "#parallel";
      });
    }
  }

  bindControls();
  drawAll();
  if (compare) drawParcoords();
})();
