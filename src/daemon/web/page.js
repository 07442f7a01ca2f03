// drover's status page: fetch /live (the page's sections, rendered by the
// daemon) every data-poll-ms and swap them in when they changed. Nothing
// else: no state, no templates, nothing that changes the daemon.
"use strict";
(function () {
  var main = document.getElementById("live");
  if (!main || !window.fetch) { return; }
  var every = parseInt(main.getAttribute("data-poll-ms"), 10) || 500;
  var last = main.innerHTML;
  var busy = false;
  function poll() {
    if (busy) { return; }
    busy = true;
    fetch("/live", { cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        if (html !== last) {
          last = html;
          main.innerHTML = html;
        }
        document.body.removeAttribute("data-stale");
      })
      .catch(function () { document.body.setAttribute("data-stale", "true"); })
      .then(function () { busy = false; });
  }
  setInterval(poll, every);
})();
