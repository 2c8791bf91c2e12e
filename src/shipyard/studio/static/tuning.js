// The tuning job page's charts, drawn with Plotly.js from the data the server embedded:
// the objective against the trial number (with the best value so far as a step line), and the
// objective against each parameter (categorical parameters as categories, log ones on a log
// axis). Completed trials are dots; pruned or stopped ones are crosses at the last value they
// reported, so a reader sees where early stopping cut.
"use strict";

(function () {
  var holder = document.getElementById("tuning-chart-data");
  if (!holder || typeof Plotly === "undefined") return;
  var data = JSON.parse(holder.textContent);
  var minimize = data.direction === "minimize";
  var COLORS = { completed: "#4e79a7", pruned: "#e0a100", stopped: "#9aa3ad", best: "#59a14f" };
  var CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "toImage"],
  };
  var FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#2b2f36" };

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  function layout(xTitle, xaxis, height) {
    return {
      height: height || 260,
      margin: { l: 60, r: 16, t: 8, b: 44 },
      xaxis: Object.assign({ title: { text: xTitle, font: { size: 11 } }, gridcolor: "#eef0f3", zeroline: false }, xaxis || {}),
      yaxis: { title: { text: data.objective, font: { size: 11 } }, gridcolor: "#eef0f3", zeroline: false, exponentformat: "SI" },
      showlegend: true,
      legend: { orientation: "h", y: -0.28, font: { size: 11 } },
      hovermode: "closest",
      font: FONT,
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
    };
  }

  var completed = data.trials.filter(function (t) { return t.state === "completed" && t.value !== null; });
  var cut = data.trials.filter(function (t) {
    return (t.state === "pruned" || t.state === "stopped") && t.last !== null;
  });

  function paramText(t) {
    return Object.keys(t.params).sort().map(function (k) {
      return esc(k) + "=" + esc(t.params[k]);
    }).join("<br>");
  }

  function points(trials, x, name, color, symbol, y) {
    return {
      type: "scatter", mode: "markers", name: name,
      x: trials.map(x), y: trials.map(y || function (t) { return t.value; }),
      text: trials.map(function (t) { return "trial " + t.number + "<br>" + paramText(t); }),
      marker: { color: color, size: symbol === "x" ? 8 : 7, symbol: symbol, line: { width: symbol === "x" ? 0 : 0.5, color: "#fff" } },
      hovertemplate: "%{text}<br>" + esc(data.objective) + " %{y:.6g}<extra>" + name + "</extra>",
    };
  }

  function lastOf(t) { return t.last; }

  function drawObjective() {
    var div = document.getElementById("objective-chart");
    if (!div) return;
    var byNumber = function (t) { return t.number; };
    var traces = [points(completed, byNumber, "completed", COLORS.completed, "circle")];
    if (cut.length) {
      traces.push(points(cut, byNumber, "pruned (last reported value)", COLORS.pruned, "x", lastOf));
    }
    // The best value so far, trial by trial, as a step line.
    var best = null;
    var bx = [];
    var by = [];
    completed.slice().sort(function (a, b) { return a.number - b.number; }).forEach(function (t) {
      if (best === null || (minimize ? t.value < best : t.value > best)) best = t.value;
      bx.push(t.number);
      by.push(best);
    });
    if (bx.length) {
      var lastNumber = data.trials.length ? data.trials[data.trials.length - 1].number : bx[bx.length - 1];
      if (lastNumber > bx[bx.length - 1]) { bx.push(lastNumber); by.push(best); }
      traces.push({
        type: "scatter", mode: "lines", name: "best so far", x: bx, y: by,
        line: { color: COLORS.best, width: 2, shape: "hv" },
        hovertemplate: "best after trial %{x}: %{y:.6g}<extra></extra>",
      });
    }
    var top = completed.filter(function (t) { return t.number === data.best; });
    if (top.length) {
      traces.push({
        type: "scatter", mode: "markers", name: "best trial", x: [top[0].number], y: [top[0].value],
        marker: { color: COLORS.best, size: 14, symbol: "star", line: { width: 1, color: "#fff" } },
        hovertemplate: "best: trial %{x}<br>" + paramText(top[0]) + "<br>" + esc(data.objective) +
          " %{y:.6g}<extra></extra>",
      });
    }
    Plotly.react(div, traces, layout("trial", { rangemode: "tozero" }, 320), CONFIG);
  }

  function drawParams() {
    data.params.forEach(function (p) {
      var div = document.querySelector('.tuning-chart[data-param-chart="' + CSS.escape(p.name) + '"]');
      if (!div) return;
      var has = function (t) { return Object.prototype.hasOwnProperty.call(t.params, p.name); };
      // Plotly reads a little HTML in category labels: a categorical value is shown as text.
      var x = p.type === "categorical"
        ? function (t) { return esc(t.params[p.name]); }
        : function (t) { return t.params[p.name]; };
      var traces = [points(completed.filter(has), x, "completed", COLORS.completed, "circle")];
      var pruned = cut.filter(has);
      if (pruned.length) traces.push(points(pruned, x, "pruned", COLORS.pruned, "x", lastOf));
      var xaxis = {};
      if (p.type === "categorical") {
        xaxis = { type: "category", categoryorder: "array", categoryarray: p.choices.map(esc) };
      } else if (p.log) {
        xaxis = { type: "log" };
      }
      Plotly.react(div, traces, layout(p.name, xaxis), CONFIG);
    });
  }

  drawObjective();
  drawParams();
})();
