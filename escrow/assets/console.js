// netunlockd console: the only script, served from the appliance (no inline script is allowed by
// the Content-Security-Policy). It adds copy-to-clipboard; every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (btn) {
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var src = document.getElementById(btn.getAttribute("data-copy"));
      var status = document.getElementById(btn.getAttribute("data-status"));
      if (!src || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(src.getAttribute("data-value") || src.textContent.trim()).then(function () {
        if (status) { status.textContent = "Copied to the clipboard."; }
      }, function () {
        if (status) { status.textContent = "The browser refused to copy; select the digits and copy them by hand."; }
      });
    });
  });
});
