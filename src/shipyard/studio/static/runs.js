// The runs table: the selection lives in the URL (sel=...), so a link or Back restores it and
// pagination keeps it; the Compare button opens the chosen runs. Rows per page and the column
// chooser's search box are the rest.
"use strict";

(function () {
  var MIN = 2;
  var MAX = 10;

  function currentSelection() {
    return new URLSearchParams(window.location.search).getAll("sel");
  }

  function withSelection(href, sel) {
    var url = new URL(href, window.location.href);
    url.searchParams.delete("sel");
    sel.forEach(function (id) { url.searchParams.append("sel", id); });
    return url.pathname + (url.search ? url.search : "");
  }

  function render(sel) {
    var count = document.getElementById("selected-count");
    if (count) count.textContent = sel.length + " selected";
    var btn = document.getElementById("compare-button");
    if (btn) {
      var ok = sel.length >= MIN && sel.length <= MAX;
      var url = "/projects/" + encodeURIComponent(btn.dataset.project) + "/compare?" +
        sel.map(function (id) { return "run=" + encodeURIComponent(id); }).join("&");
      btn.setAttribute("href", url);
      if (ok) {
        btn.removeAttribute("aria-disabled");
        btn.title = "Compare the " + sel.length + " selected runs";
      } else {
        btn.setAttribute("aria-disabled", "true");
        btn.title = sel.length > MAX ? "Choose at most " + MAX + " runs" : "Choose 2 to " + MAX + " runs";
      }
    }
    document.querySelectorAll("#runs-table tbody tr").forEach(function (tr) {
      var on = sel.indexOf(tr.dataset.runId) >= 0;
      tr.classList.toggle("selected", on);
      var box = tr.querySelector("input.run-select");
      if (box) box.checked = on;
    });
    var all = document.getElementById("select-page");
    if (all) {
      var boxes = document.querySelectorAll("#runs-table input.run-select");
      var checked = Array.prototype.filter.call(boxes, function (b) { return b.checked; }).length;
      all.checked = boxes.length > 0 && checked === boxes.length;
      all.indeterminate = checked > 0 && checked < boxes.length;
    }
    // Links that lead to another view of this table carry the selection along.
    document.querySelectorAll(".pager a, th a.sort, .chooser-actions a").forEach(function (a) {
      a.setAttribute("href", withSelection(a.getAttribute("href"), sel));
    });
    document.querySelectorAll("form.filter, #column-chooser form").forEach(function (form) {
      form.querySelectorAll("input[type=hidden][name=sel]").forEach(function (i) { i.remove(); });
      sel.forEach(function (id) {
        var i = document.createElement("input");
        i.type = "hidden";
        i.name = "sel";
        i.value = id;
        form.appendChild(i);
      });
    });
  }

  function setSelection(sel) {
    var url = withSelection(window.location.href, sel);
    // Ticking boxes refines this view rather than opening a new one: replace, don't push.
    window.history.replaceState(window.history.state, "", url);
    render(sel);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("runs-table");
    if (table) {
      table.addEventListener("change", function (ev) {
        var t = ev.target;
        var sel = currentSelection();
        if (t.id === "select-page") {
          table.querySelectorAll("input.run-select").forEach(function (b) {
            var i = sel.indexOf(b.value);
            if (t.checked && i < 0) sel.push(b.value);
            if (!t.checked && i >= 0) sel.splice(i, 1);
          });
        } else if (t.classList.contains("run-select")) {
          var i = sel.indexOf(t.value);
          if (t.checked && i < 0) sel.push(t.value);
          if (!t.checked && i >= 0) sel.splice(i, 1);
        } else {
          return;
        }
        setSelection(sel);
      });
    }
    var btn = document.getElementById("compare-button");
    if (btn) {
      btn.addEventListener("click", function (ev) {
        if (btn.getAttribute("aria-disabled") === "true") ev.preventDefault();
      });
    }
    var size = document.getElementById("page-size");
    if (size) {
      size.addEventListener("change", function () {
        var url = new URL(size.dataset.urlTemplate, window.location.href);
        url.searchParams.set("size", size.value);
        window.location.href = withSelection(url.pathname + url.search, currentSelection());
      });
    }
    var find = document.querySelector("#column-chooser .chooser-filter");
    if (find) {
      find.addEventListener("input", function () {
        var q = find.value.toLowerCase();
        document.querySelectorAll("#column-chooser label.choice").forEach(function (l) {
          l.hidden = q && l.textContent.toLowerCase().indexOf(q) < 0;
        });
      });
      find.addEventListener("keydown", function (ev) {
        if (ev.key === "Enter") ev.preventDefault();
      });
    }
    render(currentSelection());
  });
})();
