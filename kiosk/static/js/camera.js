/* BCCDMS camera panel (kiosk image step) and phone upload page.
   Kiosk: the live view is an MJPEG stream in an <img>; a passive status poll shows what the
   camera is doing ("No camera found", "paused while the analysis runs") and enables Capture.
   A capture or a phone photo becomes the exam's image on the server; the image page's own
   poll (kiosk.js) then reloads the page.
   No inline scripts anywhere (the CSP forbids them): data comes in data-* attributes. */
(function () {
  "use strict";

  var STATUS_EVERY_MS = 1000;

  function csrf() { return (document.body && document.body.dataset.csrf) || ""; }

  function postJSON(url, data) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf(), "Content-Type": "application/json" },
      body: JSON.stringify(data || {})
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (r.status === 401) { window.location.href = "/login?expired=1"; }
        return { ok: r.ok, status: r.status, body: body };
      });
    });
  }

  function show(el, text) {
    if (!el) { return; }
    el.textContent = text || "";
    el.hidden = !text;
  }

  /* ---- kiosk: live view and capture ------------------------------------------------------ */
  function livePanel(panel) {
    var live = document.getElementById("camera-live");
    if (!live) { return; }
    var img = document.getElementById("camera-preview");
    var message = document.getElementById("camera-message");
    var hint = document.getElementById("camera-hint");
    var state = document.getElementById("camera-state");
    var button = document.getElementById("camera-capture");
    var streaming = false;
    var capturing = false;
    var stopped = false;

    function startStream() {
      if (streaming || stopped) { return; }
      streaming = true;
      // A fresh URL each time: after an error the browser must open a new connection.
      img.src = "/api/camera/stream.mjpg?passive=1&t=" + Date.now();
    }
    function stopStream() {
      if (!streaming) { return; }
      streaming = false;
      img.removeAttribute("src");
    }
    img.addEventListener("load", function () { img.hidden = false; });
    img.addEventListener("error", function () {
      // The stream ended (server restart, camera switched off): the status poll reopens it.
      streaming = false;
    });

    function render(s) {
      if (s.state === "live") {
        show(message, ""); show(hint, "");
      } else if (s.state === "paused") {
        show(message, panel.dataset.msgPaused); show(hint, "");
      } else if (s.state === "unavailable" || s.state === "none") {
        show(message, s.message || ""); show(hint, s.hint || "");
        img.hidden = true;
      } else {
        show(message, panel.dataset.msgStarting); show(hint, "");
      }
      // While the stream is open the server keeps trying a missing camera, so a camera that is
      // plugged back in shows up by itself. Only a camera switched off in the config is left alone.
      if (s.configured === "none") { stopStream(); } else { startStream(); }
      state.textContent = s.state === "live" && s.preview_fps ? (s.backend + " · " + s.preview_fps + " fps") : "";
      button.disabled = capturing || s.state !== "live";
    }

    function poll() {
      if (stopped) { return; }
      fetch("/api/camera?passive=1", { credentials: "same-origin", headers: { "X-Passive": "1" } })
        .then(function (r) {
          if (r.status === 401) { window.location.href = "/login?expired=1"; return null; }
          return r.ok ? r.json() : null;
        })
        .then(function (s) { if (s) { render(s); } })
        .catch(function () {})
        .then(function () { setTimeout(poll, STATUS_EVERY_MS); });
    }

    button.addEventListener("click", function () {
      if (capturing) { return; }
      capturing = true;
      button.disabled = true;
      button.classList.add("busy");
      show(message, panel.dataset.msgCapturing); show(hint, "");
      postJSON("/api/camera/capture", { draft: panel.dataset.draft }).then(function (res) {
        if (res.ok) {
          show(message, panel.dataset.msgCaptured);
          stopped = true;
          stopStream();
          // The image page's own poll reloads it for the new image (a second reload here would
          // abort that one); only a page without that poll reloads itself.
          if (!document.querySelector("[data-draft-poll]")) { window.location.reload(); }
          return;
        }
        show(message, res.body.error || panel.dataset.msgFailed);
        show(hint, res.body.hint || "");
        capturing = false;
        button.classList.remove("busy");
      }, function () {
        show(message, panel.dataset.msgFailed);
        capturing = false;
        button.classList.remove("busy");
      });
    });

    window.addEventListener("pagehide", function () { stopped = true; stopStream(); });
    poll();
  }

  /* ---- kiosk: QR code for the phone ------------------------------------------------------ */
  function phonePanel(panel) {
    var box = document.getElementById("camera-phone");
    if (!box) { return; }
    var button = document.getElementById("phone-link-button");
    var qr = document.getElementById("phone-qr");
    var status = document.getElementById("phone-status");
    var error = document.getElementById("phone-error");
    var timer = null;

    function expire() {
      qr.hidden = true;
      qr.textContent = "";
      qr.removeAttribute("data-url");
      show(status, panel.dataset.msgExpired);
      button.disabled = false;
    }

    function request() {
      button.disabled = true;
      show(error, "");
      postJSON("/api/camera/phone-link", { draft: panel.dataset.draft }).then(function (res) {
        button.disabled = false;
        if (!res.ok) {
          show(error, [res.body.error, res.body.hint].filter(Boolean).join(" "));
          return;
        }
        // The SVG is made by the server (segno) from the link; it holds no script.
        qr.innerHTML = res.body.qr_svg;
        qr.dataset.url = res.body.url;
        qr.hidden = false;
        button.textContent = panel.dataset.msgNewCode;
        var ends = Date.now() + res.body.expires_in * 1000;
        if (timer) { clearInterval(timer); }
        var tick = function () {
          var left = Math.ceil((ends - Date.now()) / 60000);
          if (Date.now() >= ends) { clearInterval(timer); timer = null; expire(); return; }
          show(status, panel.dataset.msgWaiting + " " + panel.dataset.msgExpires.replace("{m}", left));
        };
        tick();
        timer = setInterval(tick, 1000);
      }, function () { button.disabled = false; });
    }

    button.addEventListener("click", request);
    if (panel.dataset.phoneFirst === "1" && panel.dataset.hasImage !== "1") { request(); }
  }

  /* ---- phone: send the photo as soon as it is taken -------------------------------------- */
  function phonePage(form) {
    var input = form.querySelector("input[type=file]");
    var button = form.querySelector("button[type=submit]");
    var sending = document.getElementById("phone-sending");
    var tooLarge = document.getElementById("phone-too-large");
    var max = parseInt(form.dataset.maxBytes || "0", 10);
    form.addEventListener("submit", function (e) {
      if (!input.files || !input.files.length) { e.preventDefault(); input.click(); return; }
      button.disabled = true;
      if (sending) { sending.hidden = false; }
    });
    input.addEventListener("change", function () {
      var file = input.files && input.files[0];
      if (!file) { return; }
      if (max && file.size > max) {
        if (tooLarge) { tooLarge.hidden = false; }
        input.value = "";
        return;
      }
      if (tooLarge) { tooLarge.hidden = true; }
      if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
    });
  }

  /* ---- admin: one test picture on request (focus, orientation, colour) -------------------- */
  document.querySelectorAll("[data-camera-snapshot]").forEach(function (button) {
    button.addEventListener("click", function () {
      var target = document.getElementById(button.dataset.cameraSnapshot);
      target.hidden = false;
      target.src = "/api/camera/preview.jpg?passive=1&t=" + Date.now();
    });
  });

  var panel = document.getElementById("camera-panel");
  if (panel) {
    livePanel(panel);
    phonePanel(panel);
  }
  var phoneForm = document.getElementById("phone-form");
  if (phoneForm) { phonePage(phoneForm); }
})();
