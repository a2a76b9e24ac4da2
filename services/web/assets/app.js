// Live updates: the server sends an event on /events/stream for every change
// in the cluster; the page then reads itself again and swaps the contents
// of each [data-live] element, so tables update without a reload.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var timer = null;
  function status(text, ok) {
    if (!live) return;
    live.textContent = text;
    live.className = "live " + (ok ? "on" : "off");
  }
  function refresh() {
    timer = null;
    fetch(location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (fresh && fresh.innerHTML !== el.innerHTML) {
            el.innerHTML = fresh.innerHTML;
          }
        });
        wire(document);
        status("live · " + new Date().toLocaleTimeString(), true);
      })
      .catch(function () { status("update failed", false); });
  }
  function soon() {
    if (!timer) timer = setTimeout(refresh, 100);
  }
  if (window.EventSource) {
    var es = new EventSource("/events/stream");
    es.addEventListener("ready", function () { status("live", true); });
    es.addEventListener("change", soon);
    es.onerror = function () { status("reconnecting…", false); };
  }
  var poll = parseInt(document.body.getAttribute("data-poll") || "0", 10);
  if (poll > 0) setInterval(soon, poll);

  // Sortable tables: click a header; the order survives live updates.
  var sorts = {};
  function key(td) {
    var v = td.getAttribute("data-v");
    var t = v !== null ? v : td.textContent.trim();
    var n = parseFloat(t);
    return isNaN(n) || !/^-?[0-9.]+/.test(t) ? t.toLowerCase() : n;
  }
  function sortTable(table, col, dir) {
    var tb = table.tBodies[0];
    var rows = Array.prototype.slice.call(tb.rows).filter(function (r) { return r.cells.length > col; });
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    rows.forEach(function (r) { tb.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.className = i === col ? (dir > 0 ? "asc" : "desc") : "";
    });
  }
  function wire(root) {
    root.querySelectorAll("table.sortable").forEach(function (table) {
      var id = table.parentNode.id || "";
      if (sorts[id]) sortTable(table, sorts[id].col, sorts[id].dir);
      if (table.dataset.wired) return;
      table.dataset.wired = "1";
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
        th.addEventListener("click", function () {
          var cur = sorts[id];
          var dir = cur && cur.col === i ? -cur.dir : 1;
          sorts[id] = { col: i, dir: dir };
          sortTable(table, i, dir);
        });
      });
    });
    root.querySelectorAll("form[data-confirm]").forEach(function (f) {
      if (f.dataset.wired) return;
      f.dataset.wired = "1";
      f.addEventListener("submit", function (e) {
        if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
      });
    });
    var log = document.getElementById("log-text");
    if (log && poll > 0) log.scrollTop = log.scrollHeight;
  }
  wire(document);
})();
