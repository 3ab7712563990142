// The console's live parts, without a framework: an element with data-poll="URL" has its
// content replaced by a fresh server-rendered fragment every data-every milliseconds,
// until the fragment marks itself done (an element with data-done). A 401 means the
// session ended: reload, which leads to the sign-in page.
"use strict";
(function () {
  function poll(el) {
    var url = el.getAttribute("data-poll");
    var every = parseInt(el.getAttribute("data-every") || "3000", 10);
    function tick() {
      fetch(url, { headers: { "X-Console-Fragment": "1" }, credentials: "same-origin" })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== undefined) { el.innerHTML = html; }
          if (!el.querySelector("[data-done]")) { window.setTimeout(tick, every); }
        })
        .catch(function () { window.setTimeout(tick, every * 2); });
    }
    window.setTimeout(tick, every);
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
  });
})();
