// gantry's dashboard: keeps the live parts of a page fresh, follows a running job's log, pages
// a log backwards, searches it, copies share links, and says when the server cannot be reached.
(function () {
  "use strict";
  var body = document.body;
  var conn = document.getElementById("conn");
  var lost = false;

  function connection(ok) {
    if (ok === !lost) return;
    lost = !ok;
    conn.hidden = false;
    conn.className = "conn " + (ok ? "back" : "lost");
    conn.textContent = ok ? "Connected to the server again." : "Connection to the server lost; retrying…";
    if (ok) setTimeout(function () { if (!lost) conn.hidden = true; }, 3000);
  }

  // Live sections: every element with data-live and an id is replaced by its new self.
  var poll = parseInt(body.getAttribute("data-poll") || "0", 10);
  function refresh() {
    fetch(location.href, { headers: { "X-Gantry-Live": "1" }, cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { location.reload(); return null; }
        if (!r.ok) throw new Error(String(r.status));
        return r.text();
      })
      .then(function (html) {
        if (html === null) return;
        connection(true);
        var doc = new DOMParser().parseFromString(html, "text/html");
        // A run that had no jobs yet when the page was made has them now: start its log.
        if (!document.getElementById("log") && doc.getElementById("log")) { location.reload(); return; }
        document.querySelectorAll("[data-live][id]").forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (!fresh || el.contains(document.activeElement)) return;
          if (fresh.innerHTML !== el.innerHTML) el.innerHTML = fresh.innerHTML;
        });
        var again = parseInt(doc.body.getAttribute("data-poll") || "0", 10);
        if (again > 0) setTimeout(refresh, again);
      })
      .catch(function () { connection(false); setTimeout(refresh, poll); });
  }
  if (poll > 0) setTimeout(refresh, poll);

  // The log.
  var log = document.getElementById("log");
  var lines = document.getElementById("log-lines");
  var MAX_LINES = 20000;
  if (log && lines) {
    var follow = document.getElementById("log-follow");
    var run = log.getAttribute("data-run");
    var job = log.getAttribute("data-job");
    var q = encodeURIComponent(job);
    function atBottom() { log.scrollTop = log.scrollHeight; }
    if (location.hash) {
      var target = document.getElementById(location.hash.slice(1));
      if (target) target.scrollIntoView({ block: "center" });
    } else if (follow && follow.checked) {
      atBottom();
    }
    if (log.getAttribute("data-follow") && !log.getAttribute("data-finished")) {
      var es = new EventSource("/ui/runs/" + run + "/log/stream?job=" + q + "&after=" + log.getAttribute("data-cursor"));
      es.addEventListener("open", function () { connection(true); });
      es.addEventListener("error", function () { if (es.readyState !== 2) connection(false); });
      es.addEventListener("lines", function (ev) {
        connection(true);
        lines.insertAdjacentHTML("beforeend", ev.data);
        while (lines.children.length > MAX_LINES) lines.removeChild(lines.firstElementChild);
        applySearch();
        if (follow && follow.checked) atBottom();
      });
      es.addEventListener("end", function () { es.close(); });
    }
    var earlier = document.getElementById("log-earlier");
    if (earlier) earlier.addEventListener("click", function () {
      var first = lines.querySelector(".ln");
      if (!first) return;
      var before = first.id.slice(1);
      earlier.disabled = true;
      fetch("/ui/runs/" + run + "/log/earlier?job=" + q + "&before=" + before, { credentials: "same-origin" })
        .then(function (r) {
          if (!r.ok) throw new Error(String(r.status));
          var more = r.headers.get("X-Gantry-More") === "1";
          return r.text().then(function (html) { return [html, more]; });
        })
        .then(function (got) {
          var height = log.scrollHeight;
          lines.insertAdjacentHTML("afterbegin", got[0]);
          log.scrollTop += log.scrollHeight - height;
          earlier.disabled = false;
          if (!got[1]) earlier.remove();
          applySearch();
        })
        .catch(function () { earlier.disabled = false; connection(false); });
    });
    var search = document.getElementById("log-search");
    var count = document.getElementById("log-count");
    function applySearch() {
      if (!search) return;
      var needle = search.value.toLowerCase();
      var hits = 0;
      lines.querySelectorAll(".ln").forEach(function (ln) {
        var text = ln.lastChild ? ln.lastChild.textContent.toLowerCase() : "";
        var hit = needle === "" || text.indexOf(needle) >= 0;
        ln.hidden = !hit;
        if (hit && needle !== "") hits++;
      });
      count.textContent = needle === "" ? "" : hits + " matching lines";
    }
    if (search) search.addEventListener("input", applySearch);
  }

  // Copy buttons.
  document.querySelectorAll("[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var field = document.getElementById(b.getAttribute("data-copy"));
      field.select();
      var done = function () { b.textContent = "Copied"; };
      if (navigator.clipboard) navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
      else { document.execCommand("copy"); done(); }
    });
  });
})();
