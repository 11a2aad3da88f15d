// Kengele dashboard: refresh the parts of a page marked data-refresh, without reloading it.
// Everything still works without this file (reload to see new incidents, forms post as usual).
"use strict";
(function () {
  var PERIOD = 4000; // ms between polls: new incidents show within 5 s
  var offline = document.getElementById("offline");
  var failures = 0;

  function refresh(el) {
    if (document.hidden) return schedule(el);
    // The browser revalidates with the ETag it kept: an unchanged list costs a 304 and no body.
    fetch(el.getAttribute("data-refresh"), { credentials: "same-origin", cache: "no-cache", headers: { "X-Requested-With": "kengele" } })
      .then(function (r) {
        if (r.status === 401 || r.redirected) { window.location.reload(); return null; }
        if (!r.ok) throw new Error(String(r.status));
        return r.text();
      })
      .then(function (html) {
        failures = 0;
        if (offline) offline.hidden = true;
        if (html !== null && html !== el.getAttribute("data-last")) {
          el.setAttribute("data-last", html);
          el.innerHTML = html;
          el.dispatchEvent(new CustomEvent("kengele:refreshed", { bubbles: true }));
        }
      })
      .catch(function () {
        failures += 1;
        if (offline) offline.hidden = false;
      })
      .then(function () { schedule(el); });
  }

  function schedule(el) {
    // Back off on a bad link (up to 30 s), so a dead connection is not hammered.
    window.setTimeout(function () { refresh(el); }, Math.min(PERIOD * Math.pow(2, failures), 30000));
  }

  document.querySelectorAll("[data-refresh]").forEach(function (el) {
    el.setAttribute("data-last", el.innerHTML);
    schedule(el);
  });
  document.querySelectorAll("select[data-autosubmit]").forEach(function (el) {
    el.addEventListener("change", function () { el.form.submit(); });
  });
})();
