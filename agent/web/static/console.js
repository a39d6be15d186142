// The incidents page refreshes its table while open, keeping its filters: it fetches the
// same listing as HTML rendered (and escaped) by medic, and swaps it in. Pages work
// without this script; the Content-Security-Policy allows no other script.
(function () {
  "use strict";
  var region = document.getElementById("live-region");
  var state = document.getElementById("live-state");
  if (!region || !state) { return; }
  var toggle = document.getElementById("live");
  var updated = document.getElementById("updated");
  var every = Math.max(2, parseInt(region.getAttribute("data-every"), 10) || 10) * 1000;
  var src = region.getAttribute("data-src");
  state.hidden = false;

  function stamp(text) { updated.textContent = text; }

  function refresh() {
    if (!toggle.checked || document.hidden) { return; }
    fetch(src, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var next = new DOMParser().parseFromString(html, "text/html");
        region.replaceChildren.apply(region, Array.prototype.slice.call(next.body.childNodes));
        stamp("updated " + new Date().toLocaleTimeString());
      })
      .catch(function (error) { stamp("not updated: " + error.message); });
  }

  stamp("updates every " + every / 1000 + " s");
  window.setInterval(refresh, every);
  document.addEventListener("visibilitychange", refresh);
})();
