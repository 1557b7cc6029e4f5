// Live updates without a reload: on each event of GET /events (server-sent events: `sample`,
// `alert`, `server`) the regions marked data-live are fetched again and swapped in place.
// When /events cannot be opened, the same refresh runs every POLL_MS instead.
(function () {
  "use strict";
  // A burst of events costs one fetch (DEBOUNCE_MS), and a page refreshes at most every MIN_GAP_MS
  // however many processes report: an update still lands within the second.
  var POLL_MS = 1000, DEBOUNCE_MS = 150, MIN_GAP_MS = 500;
  var timer = null, polling = null, busy = false, last = 0, scope = null;
  function status(text) { var el = document.getElementById("live-status"); if (el) el.textContent = text; }
  function refresh() {
    timer = null;
    last = Date.now();
    if (busy) { soon(); return; }
    busy = true;
    fetch(location.href, { headers: { "X-Procwatch-Live": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          // Leave a region alone while the keyboard is in it: a swap would lose the focus.
          if (!fresh || el.contains(document.activeElement) || fresh.innerHTML === el.innerHTML) return;
          el.replaceWith(fresh);
        });
        document.dispatchEvent(new CustomEvent("procwatch:refreshed"));
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  function soon() {
    if (!timer) timer = setTimeout(refresh, Math.max(DEBOUNCE_MS, last + MIN_GAP_MS - Date.now()));
  }
  // A server's or a process's page ignores the samples and liveness of other servers.
  function concerns(detail) {
    return scope === null || !detail || detail.server_id === undefined || String(detail.server_id) === scope;
  }
  function poll() { if (!polling) { polling = setInterval(soon, POLL_MS); status("live (polling)"); } }
  function confirmForms() {
    document.addEventListener("submit", function (e) {
      var message = e.target.getAttribute && e.target.getAttribute("data-confirm");
      if (message && !window.confirm(message)) e.preventDefault();
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    confirmForms();
    if (!document.querySelector("[data-live]")) return;
    scope = document.getElementById("main").getAttribute("data-server-id");
    if (!window.EventSource) { poll(); return; }
    var opened = false, source = new EventSource("/events");
    ["sample", "alert", "server"].forEach(function (kind) {
      source.addEventListener(kind, function (e) {
        var detail = null;
        try { detail = JSON.parse(e.data); } catch (err) { /* keep null */ }
        document.dispatchEvent(new CustomEvent("procwatch:" + kind, { detail: detail }));
        if (kind === "alert" || concerns(detail)) soon();
      });
    });
    source.onopen = function () { opened = true; status("live"); if (polling) { clearInterval(polling); polling = null; } };
    // Never opened (no /events here, or refused): poll. Opened then lost: EventSource reconnects
    // by itself with Last-Event-ID; poll meanwhile so nothing is missed.
    source.onerror = function () {
      if (!opened) { source.close(); }
      poll();
    };
  });
})();
