/* BCCDMS kiosk behaviour: idle logout, activity keep-alive, busy buttons, result bars,
   heatmap toggle, image-step polling. No inline scripts (the CSP forbids them):
   pages pass data in data-* attributes. */
(function () {
  "use strict";
  var body = document.body;
  var csrf = body.dataset.csrf || "";

  function post(url, data) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
      body: JSON.stringify(data || {})
    });
  }
  window.BCCDMS = window.BCCDMS || {};
  window.BCCDMS.post = post;
  window.BCCDMS.csrf = csrf;

  /* -- idle logout: the client timer mirrors the server's session expiry ----------------- */
  var idleSeconds = parseInt(body.dataset.idleSeconds || "0", 10);
  if (idleSeconds > 0) {
    var lastActivity = Date.now();
    var lastTouchSent = Date.now();
    var onActivity = function () {
      lastActivity = Date.now();
      // Tell the server at most once a minute (typing a long note never reaches it otherwise).
      if (Date.now() - lastTouchSent > 60000) {
        lastTouchSent = Date.now();
        post("/api/session/touch").catch(function () {});
      }
    };
    ["pointerdown", "keydown", "touchstart", "input", "wheel"].forEach(function (ev) {
      document.addEventListener(ev, onActivity, { passive: true, capture: true });
    });
    window.BCCDMS.activity = onActivity;
    setInterval(function () {
      if (Date.now() - lastActivity >= idleSeconds * 1000) {
        var form = document.getElementById("idle-logout");
        if (form) { form.submit(); } else { window.location.href = "/login?expired=1"; }
      }
    }, 1000);
  }

  /* -- buttons that start slow work show that they are busy and cannot be pressed twice -- */
  document.querySelectorAll("form[data-busy]").forEach(function (form) {
    form.addEventListener("submit", function () {
      var button = form.querySelector("button[type=submit], button:not([type])");
      if (button) {
        button.classList.add("busy");
        button.setAttribute("aria-busy", "true");
        if (form.dataset.busy) { button.textContent = form.dataset.busy; }
      }
    });
  });

  /* -- result bars: widths from data-value (0..1) --------------------------------------- */
  document.querySelectorAll(".bar-fill[data-value]").forEach(function (bar) {
    var v = Math.max(0, Math.min(1, parseFloat(bar.dataset.value) || 0));
    bar.style.width = (v * 100).toFixed(1) + "%";
  });

  /* -- history back links (no inline javascript: URLs) ---------------------------------- */
  document.querySelectorAll("[data-action=back]").forEach(function (link) {
    link.addEventListener("click", function (e) {
      if (window.history.length > 1) { e.preventDefault(); window.history.back(); }
    });
  });

  /* -- print button -------------------------------------------------------------------- */
  document.querySelectorAll("[data-action=print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });

  /* -- heatmap toggle on the result page ------------------------------------------------ */
  var toggle = document.getElementById("heatmap-toggle");
  if (toggle) {
    var heat = document.getElementById("heatmap-image");
    toggle.addEventListener("click", function () {
      if (heat.hidden && !heat.getAttribute("src")) { heat.setAttribute("src", heat.dataset.src); }
      heat.hidden = !heat.hidden;
      toggle.setAttribute("aria-pressed", heat.hidden ? "false" : "true");
      toggle.textContent = heat.hidden ? toggle.dataset.show : toggle.dataset.hide;
      var note = document.getElementById("heatmap-note");
      if (note) { note.hidden = heat.hidden; }
    });
  }

  /* -- decision form: "agree" and "another label" ---------------------------------------- */
  var decision = document.getElementById("decision-form");
  if (decision) {
    var other = document.getElementById("decision-label");     // the choice sheet's fieldset
    var sync = function () {
      var agrees = decision.querySelector("[name=agrees]:checked");
      if (other) { other.disabled = !agrees || agrees.value !== "no"; }
    };
    decision.addEventListener("change", sync);
    sync();
  }

  /* -- a saved decision's "Change" opens its form; "Cancel" closes it again -------------- */
  document.querySelectorAll("[data-reveal]").forEach(function (button) {
    button.addEventListener("click", function () {
      var target = document.getElementById(button.dataset.reveal);
      if (!target) { return; }
      target.hidden = false;
      button.hidden = true;
      target.scrollIntoView({ block: "start" });
    });
  });
  document.querySelectorAll("[data-conceal]").forEach(function (button) {
    button.addEventListener("click", function () {
      var target = document.getElementById(button.dataset.conceal);
      if (!target) { return; }
      target.hidden = true;
      document.querySelectorAll('[data-reveal="' + target.id + '"]').forEach(function (b) { b.hidden = false; });
    });
  });

  /* -- the field a page wants typed into first (data-autofocus="<field name>") -------------- */
  var autofocus = document.querySelector("[data-autofocus]");
  if (autofocus) {
    var first = autofocus.querySelector('[name="' + autofocus.dataset.autofocus + '"]');
    if (first) { first.focus(); }
  }

  /* -- table rows that open a record ---------------------------------------------------- */
  document.querySelectorAll("tr[data-href]").forEach(function (row) {
    row.classList.add("clickable");
    row.addEventListener("click", function (e) {
      if (e.target.closest("a, button, input, form")) { return; }
      window.location.href = row.dataset.href;
    });
  });

  /* -- image step: show an image as soon as the camera or the phone delivers it --------- */
  var waiter = document.querySelector("[data-draft-poll]");
  if (waiter) {
    var url = waiter.dataset.draftPoll;
    var seen = parseInt(waiter.dataset.version || "0", 10);
    var poll = function () {
      fetch(url + "?version=" + seen, { credentials: "same-origin", headers: { "X-Passive": "1" } })
        .then(function (r) {
          if (r.status === 401) { window.location.href = "/login?expired=1"; return null; }
          return r.ok ? r.json() : null;
        })
        .then(function (d) {
          if (d && d.exam) { window.location.href = "/exams/" + d.exam; return; }  /* processed */
          if (d && d.version !== seen) { window.location.reload(); return; }
          setTimeout(poll, d ? 200 : 3000);
        })
        .catch(function () { setTimeout(poll, 3000); });
    };
    setTimeout(poll, 500);
  }
})();
