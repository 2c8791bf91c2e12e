// Studio's shared behaviour: copy buttons, live relative times, "/" to search, the project
// switcher. Plain JavaScript, no build step.
"use strict";

(function () {
  // -- relative times: the server renders them; keep them fresh and show local exact time --
  function relative(date, now) {
    var s = (now - date) / 1000;
    var future = s < 0;
    s = Math.abs(s);
    if (s < 45) return "just now";
    var units = [["year", 31536000], ["month", 2592000], ["day", 86400], ["hour", 3600]];
    var text = null;
    for (var i = 0; i < units.length; i++) {
      if (s >= units[i][1] * 0.95) {
        var n = Math.max(1, Math.round(s / units[i][1]));
        text = n + " " + units[i][0] + (n === 1 ? "" : "s");
        break;
      }
    }
    if (text === null) {
      var m = Math.max(1, Math.round(s / 60));
      text = m + " minute" + (m === 1 ? "" : "s");
    }
    return future ? "in " + text : text + " ago";
  }

  function refreshTimes() {
    var now = Date.now();
    document.querySelectorAll("time[data-rel]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      el.textContent = relative(d, now);
      if (!el.dataset.localized) {
        el.title = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "long" }) +
          " (" + el.title + ")";
        el.dataset.localized = "1";
      }
    });
  }

  // -- copy buttons --------------------------------------------------------------------------
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain-http servers on another host are not a secure context: fall back to a selection.
    return new Promise(function (resolve, reject) {
      var ta = document.createElement("textarea");
      ta.value = text;
      ta.setAttribute("readonly", "");
      ta.style.position = "fixed";
      ta.style.opacity = "0";
      document.body.appendChild(ta);
      ta.select();
      try {
        document.execCommand("copy") ? resolve() : reject(new Error("copy refused"));
      } catch (e) {
        reject(e);
      } finally {
        document.body.removeChild(ta);
      }
    });
  }

  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest("button.copy");
    if (!btn) return;
    ev.preventDefault();
    var text = btn.dataset.copy;
    if (text === undefined && btn.dataset.copyFrom) {
      var src = document.getElementById(btn.dataset.copyFrom);
      text = src ? src.textContent : "";
    }
    copyText(text || "").then(
      function () { flash(btn, "Copied"); },
      function () { flash(btn, "Press Ctrl+C"); }
    );
  });

  function flash(btn, text) {
    var old = btn.dataset.label || btn.textContent;
    btn.dataset.label = old;
    btn.textContent = text;
    btn.classList.add("done");
    clearTimeout(btn._timer);
    btn._timer = setTimeout(function () {
      btn.textContent = old;
      btn.classList.remove("done");
    }, 1500);
  }

  // -- "/" focuses the page's search box ----------------------------------------------------
  document.addEventListener("keydown", function (ev) {
    if (ev.key !== "/" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var t = ev.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    var box = document.querySelector("[data-search]");
    if (!box) return;
    ev.preventDefault();
    box.focus();
    box.select();
  });

  // -- project switcher ----------------------------------------------------------------------
  function initSwitcher() {
    var sel = document.getElementById("project-switcher");
    if (!sel) return;
    sel.addEventListener("change", function () {
      if (sel.value) window.location.href = "/projects/" + encodeURIComponent(sel.value);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    refreshTimes();
    setInterval(refreshTimes, 30000);
    initSwitcher();
  });

  window.Studio = { relative: relative, copyText: copyText };
})();
