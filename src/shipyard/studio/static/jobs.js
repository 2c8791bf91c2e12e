// The training job page: a live log tail and the job's charts (its metrics and its resource
// profile), drawn with Plotly.js. While the job is active the log is polled with after_seq and
// new text appended (following the end unless the reader scrolled up), the charts are redrawn
// every few seconds, and the page reloads once the job is final (to show its report).
"use strict";

(function () {
  var liveEl = document.getElementById("job-live");
  if (!liveEl) return;
  var live = JSON.parse(liveEl.textContent);
  var dataEl = document.getElementById("job-chart-data");
  var data = dataEl ? JSON.parse(dataEl.textContent) : null;
  var logEl = document.getElementById("job-log");
  var stateEl = document.getElementById("log-state");
  var follow = document.getElementById("log-follow");
  var status = live.status;
  var seq = 0;
  var shown = 0;
  var stopped = false;
  // The page keeps at most this much log text; older text is dropped from the top.
  var MAX_CHARS = 2000000;
  var POLL_MS = 1000;
  var CHARTS_MS = 2500;
  var STATUS_CLASS = {
    queued: "queued", starting: "running", running: "running",
    completed: "finished", failed: "failed", stopped: "killed",
  };

  // -- the log ------------------------------------------------------------------------------

  function atBottom() {
    return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 24;
  }

  function textOf(chunks) {
    return chunks.map(function (c) {
      if (!live.ranks || c.rank === null || c.rank === undefined) return c.data;
      // Several instances write to one log: each line says which rank wrote it.
      return c.data.replace(/^(?=.)/gm, "[rank " + c.rank + "] ");
    }).join("");
  }

  function append(chunks) {
    var text = textOf(chunks);
    if (!text) return;
    logEl.appendChild(document.createTextNode(text));
    shown += text.length;
    if (shown > MAX_CHARS) {
      var all = logEl.textContent;
      var keep = all.slice(all.length - Math.floor(MAX_CHARS / 2));
      logEl.textContent = "… earlier lines are not shown here (see shipyard jobs logs) …\n" + keep;
      shown = logEl.textContent.length;
    }
    if (follow && follow.checked) logEl.scrollTop = logEl.scrollHeight;
  }

  if (follow) {
    logEl.addEventListener("scroll", function () { follow.checked = atBottom(); });
    follow.addEventListener("change", function () {
      if (follow.checked) logEl.scrollTop = logEl.scrollHeight;
    });
  }

  function setState(text) {
    if (stateEl) stateEl.textContent = text;
  }

  function showStatus(s) {
    var holder = document.getElementById("job-status");
    if (!holder) return;
    var label = document.createElement("span");
    label.className = "status status-" + (STATUS_CLASS[s] || "queued");
    label.dataset.status = s;
    var dot = document.createElement("span");
    dot.className = "status-dot";
    dot.setAttribute("aria-hidden", "true");
    label.appendChild(dot);
    label.appendChild(document.createTextNode(s.charAt(0).toUpperCase() + s.slice(1)));
    holder.replaceChildren(label);
  }

  function finished() {
    stopped = true;
    if (!live.final) {
      // The job ended while the page was open: show its report, findings and final charts.
      setState("the job is " + status + "; loading its report…");
      setTimeout(function () {
        window.location.replace(window.location.pathname + window.location.hash);
      }, 300);
    } else {
      setState(seq ? "end of log" : "the log is empty");
    }
  }

  function poll() {
    if (stopped) return;
    fetch(live.log_url + "?after_seq=" + seq, {
      headers: { accept: "application/json" },
      credentials: "same-origin",
      cache: "no-store",
    }).then(function (res) {
      var type = res.headers.get("content-type") || "";
      if (res.redirected || type.indexOf("json") < 0) {
        throw new Error(res.status === 404 ? "the job was deleted" : "signed out? reload the page");
      }
      if (!res.ok) throw new Error("HTTP " + res.status);
      return res.json();
    }).then(function (body) {
      if (body.data.length) {
        append(body.data);
        seq = body.next_seq;
      }
      if (body.status !== status) {
        status = body.status;
        showStatus(status);
      }
      if (body.done) return finished();
      setState(live.final ? "loading…" : "following the log");
      setTimeout(poll, body.data.length >= 1000 ? 0 : POLL_MS);
    }).catch(function (err) {
      setState("cannot read the log: " + err.message + "; trying again");
      setTimeout(poll, 3 * POLL_MS);
    });
  }

  // -- charts ---------------------------------------------------------------------------------

  var CONFIG = {
    responsive: true,
    displaylogo: false,
    modeBarButtonsToRemove: ["lasso2d", "select2d", "toImage"],
  };
  var FONT = { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#2b2f36" };

  function layout(xTitle, unit, legend) {
    var y = { gridcolor: "#eef0f3", zeroline: false, exponentformat: "SI", rangemode: "tozero" };
    if (unit && unit !== "%") y.ticksuffix = unit;
    if (unit === "%") y.ticksuffix = "%";
    return {
      height: 240,
      margin: { l: 64, r: 16, t: 8, b: 40 },
      xaxis: { title: { text: xTitle, font: { size: 11 } }, gridcolor: "#eef0f3", zeroline: false },
      yaxis: y,
      showlegend: legend,
      legend: { orientation: "h", y: -0.3, font: { size: 11 } },
      hovermode: "closest",
      font: FONT,
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
    };
  }

  function figure(container, id, title, attr, value) {
    var fig = document.createElement("figure");
    fig.className = "chart-card";
    fig.id = id;
    var cap = document.createElement("figcaption");
    cap.textContent = title;
    var div = document.createElement("div");
    div.className = "chart job-chart";
    div.setAttribute("data-" + attr, value);
    div.setAttribute("role", "img");
    div.setAttribute("aria-label", title);
    fig.appendChild(cap);
    fig.appendChild(div);
    container.appendChild(fig);
    return div;
  }

  function chartFor(attr, value, containerId, id, title) {
    var div = document.querySelector('.job-chart[data-' + attr + '="' + CSS.escape(value) + '"]');
    if (div) return div;
    var container = document.getElementById(containerId);
    if (!container) return null;
    var empty = document.querySelector('[data-empty="' + (attr === "metric" ? "metrics" : "profile") + '"]');
    if (empty) empty.hidden = true;
    return figure(container, id, title, attr, value);
  }

  function drawMetrics() {
    Object.keys(data.metrics).sort().forEach(function (key) {
      var h = data.metrics[key];
      var div = chartFor("metric", key, "metric-charts", "m-" + key, key);
      if (!div) return;
      var trace = {
        type: "scatter", mode: h.values.length === 1 ? "markers" : "lines+markers",
        x: h.steps, y: h.values, name: key,
        line: { color: data.color, width: 2 }, marker: { color: data.color, size: 4 },
        hovertemplate: "step %{x}: %{y:.6g}<extra></extra>",
      };
      Plotly.react(div, [trace], layout("step", "", false), CONFIG);
    });
  }

  function drawProfile() {
    var t0 = null;
    Object.keys(data.profile).forEach(function (k) {
      var ts = data.profile[k].timestamps;
      if (ts.length && (t0 === null || ts[0] < t0)) t0 = ts[0];
    });
    data.profile_charts.forEach(function (spec) {
      var traces = [];
      spec.series.forEach(function (s, i) {
        var h = data.profile[s[0]];
        if (!h) return;
        var hover = spec.unit === "%" ? "%{y:.1f}%" : "%{y:.3s}" + spec.unit;
        traces.push({
          type: "scatter", mode: h.values.length === 1 ? "markers" : "lines",
          x: h.timestamps.map(function (t) { return (t - t0) / 1000; }), y: h.values, name: s[1],
          line: { color: data.palette[i % data.palette.length], width: 2 },
          marker: { color: data.palette[i % data.palette.length], size: 6 },
          hovertemplate: "%{x:.0f} s: " + hover + "<extra>" + s[1] + "</extra>",
        });
      });
      if (!traces.length) return;
      var div = chartFor("profile", spec.id, "profile-charts", "r-" + spec.id, spec.title);
      if (!div) return;
      Plotly.react(div, traces, layout("seconds since the first sample", spec.unit, traces.length > 1), CONFIG);
    });
  }

  // The same words as the server's: 0.8s, 42s, 3m 04s, 2h 05m.
  function seconds(s) {
    if (s < 10) return s.toFixed(1) + "s";
    var n = Math.round(s);
    var pad = function (v) { return (v < 10 ? "0" : "") + v; };
    if (n < 60) return n + "s";
    if (n < 3600) return Math.floor(n / 60) + "m " + pad(n % 60) + "s";
    if (n < 86400) return Math.floor(n / 3600) + "h " + pad(Math.floor(n % 3600 / 60)) + "m";
    return Math.floor(n / 86400) + "d " + Math.floor(n % 86400 / 3600) + "h";
  }

  function showFigures() {
    var runtime = document.querySelector('[data-figure="runtime"]');
    if (runtime && typeof data.runtime_s === "number") runtime.textContent = seconds(data.runtime_s);
    var attempt = document.querySelector('[data-figure="attempt"]');
    if (attempt && data.attempt) attempt.textContent = data.attempt + " of " + data.attempts;
  }

  function drawAll() {
    if (!data || typeof Plotly === "undefined") return;
    drawMetrics();
    drawProfile();
  }

  function refreshCharts() {
    if (stopped || live.final) return;
    fetch(live.charts_url, { headers: { accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (res) {
        var type = res.headers.get("content-type") || "";
        if (!res.ok || type.indexOf("json") < 0) throw new Error("HTTP " + res.status);
        return res.json();
      })
      .then(function (body) { data = body; showFigures(); drawAll(); })
      .catch(function () { /* the log's state line already says when the server is away */ })
      .then(function () { if (!stopped) setTimeout(refreshCharts, CHARTS_MS); });
  }

  drawAll();
  poll();
  if (!live.final) setTimeout(refreshCharts, CHARTS_MS);
})();
