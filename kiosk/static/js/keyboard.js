/* On-screen keyboard for every text field (Chromium in kiosk mode has none).
 *
 * Built on the vendored simple-keyboard. One keyboard panel at the bottom of the screen
 * opens when a text field gets focus and types into that field. Fields choose a layout with
 * data-kb="default" (the layout of the page's language: Ethiopic for Amharic once
 * keyboard-ethiopic.js has registered it, Latin otherwise) | "latin" (usernames, passwords,
 * card numbers) | "numeric" (phones, ages) | "date" (digits and "/") | "none" (no keyboard).
 * A layout the user picks in the keyboard bar stays for the other default fields of the page.
 *
 * Layout hook (for other scripts, e.g. an Ethiopic layout):
 *   BCCDMS.keyboard.registerLayout(id, {
 *     label: "ሀ",                      // text of its button in the keyboard bar
 *     layout: {default: [...rows], shift: [...rows]},   // simple-keyboard layout object
 *     display: {...},                  // optional simple-keyboard display map
 *     onKeyPress: function (button, api) { return true if handled }  // optional
 *   });
 * api: insert(text), backspace(), setRows(layoutObject), layoutName(name), field() —
 * enough for two-step layouts (consonant key → a row of its vowel orders).
 */
(function () {
  "use strict";
  var SK = window.SimpleKeyboard && (window.SimpleKeyboard.default || window.SimpleKeyboard);
  var panel = document.getElementById("osk-panel");
  if (!SK || !panel) { return; }

  var layouts = {};
  var order = [];
  var current = null;         // the layout on screen
  var chosen = null;          // the layout the user picked in the bar (for default fields)
  var active = null;          // the field being typed into
  var keyboard = null;
  var hideLabel = document.body.dataset.kbHide || "Hide";

  var NUMERIC = {
    label: "123",
    layout: { "default": ["1 2 3", "4 5 6", "7 8 9", "+ 0 -", "{bksp} {enter}"] },
    hidden: true
  };
  // Dates are typed day/month/year (as written in Ethiopia, in either calendar).
  var DATE = {
    label: "31/12",
    layout: { "default": ["1 2 3", "4 5 6", "7 8 9", "/ 0 {bksp}", "{enter}"] },
    hidden: true
  };
  var LATIN = {
    label: "ABC",
    // The apostrophe is on the main rows: Afaan Oromo (Qubee) writes it as a letter (hudhaa).
    layout: {
      "default": ["1 2 3 4 5 6 7 8 9 0 {bksp}", "q w e r t y u i o p '", "a s d f g h j k l -",
                  "{shift} z x c v b n m , . /", "@ {space} {enter}"],
      "shift": ["! ? # % & ( ) = + _ {bksp}", "Q W E R T Y U I O P '", "A S D F G H J K L :",
                "{shift} Z X C V B N M ; . /", "@ {space} {enter}"]
    }
  };

  function field() { return active; }

  function setFieldValue(value, caret) {
    if (!active) { return; }
    var max = active.maxLength > 0 ? active.maxLength : Infinity;
    if (value.length > max) { value = value.slice(0, max); }
    active.value = value;
    if (typeof caret === "number" && active.setSelectionRange && active.type !== "number") {
      try { active.setSelectionRange(caret, caret); } catch (e) { /* some types refuse */ }
    }
    active.dispatchEvent(new Event("input", { bubbles: true }));
    if (window.BCCDMS && window.BCCDMS.activity) { window.BCCDMS.activity(); }
  }

  function caretPos() {
    if (!active) { return 0; }
    try {
      return typeof active.selectionStart === "number" ? active.selectionStart : active.value.length;
    } catch (e) { return active.value.length; }
  }

  var api = {
    field: field,
    insert: function (text) {
      if (!active) { return; }
      var pos = caretPos();
      var end = active.selectionEnd != null ? active.selectionEnd : pos;
      var v = active.value;
      setFieldValue(v.slice(0, pos) + text + v.slice(end), pos + text.length);
      keyboard.setInput(active.value);
    },
    backspace: function () {
      if (!active) { return; }
      var pos = caretPos();
      var end = active.selectionEnd != null ? active.selectionEnd : pos;
      var v = active.value;
      if (end > pos) { setFieldValue(v.slice(0, pos) + v.slice(end), pos); }
      else if (pos > 0) {
        // Remove one whole character (code point), not half of a surrogate pair.
        var before = Array.from(v.slice(0, pos));
        before.pop();
        var head = before.join("");
        setFieldValue(head + v.slice(pos), head.length);
      }
      keyboard.setInput(active.value);
    },
    setRows: function (layoutObject) { keyboard.setOptions({ layout: layoutObject }); },
    layoutName: function (name) { keyboard.setOptions({ layoutName: name }); }
  };

  function applyLayout(id) {
    var def = layouts[id];
    if (!def) { return; }
    current = id;
    keyboard.setOptions({ layout: def.layout, layoutName: "default", display: Object.assign(baseDisplay(), def.display || {}) });
    renderLayoutButtons();
  }

  function baseDisplay() {
    return { "{bksp}": "⌫", "{enter}": "↵", "{shift}": "⇧", "{space}": " ", "{lock}": "⇪" };
  }

  function renderLayoutButtons() {
    var bar = document.getElementById("osk-layouts");
    if (!bar) { return; }
    bar.textContent = "";
    order.forEach(function (id) {
      if (layouts[id].hidden) { return; }
      var b = document.createElement("button");
      b.type = "button";
      b.className = "btn" + (id === current ? " btn-selected" : "");
      b.textContent = layouts[id].label;
      b.dataset.layout = id;
      b.addEventListener("mousedown", function (e) { e.preventDefault(); });
      b.addEventListener("click", function () { chosen = id; applyLayout(id); });
      bar.appendChild(b);
    });
  }

  function onKeyPress(button) {
    var def = layouts[current];
    if (def && def.onKeyPress && def.onKeyPress(button, api)) { return; }
    if (button === "{shift}" || button === "{lock}") {
      var name = keyboard.options.layoutName === "shift" ? "default" : "shift";
      if (keyboard.options.layout[name]) { keyboard.setOptions({ layoutName: name }); }
      return;
    }
    if (button === "{enter}") {
      if (active && active.tagName === "TEXTAREA") { api.insert("\n"); return; }
      if (active && active.form) { active.form.requestSubmit(); }
      hide();
      return;
    }
    if (button === "{bksp}") { api.backspace(); return; }
    if (button === "{space}") { api.insert(" "); return; }
    if (button.charAt(0) === "{") { return; }
    api.insert(button);
    if (keyboard.options.layoutName === "shift" && current === "latin") {
      keyboard.setOptions({ layoutName: "default" });
    }
  }

  function wants(el) {
    if (!el || el.readOnly || el.disabled) { return false; }
    if (el.dataset.kb === "none") { return false; }
    if (el.tagName === "TEXTAREA") { return true; }
    if (el.tagName !== "INPUT") { return false; }
    return ["text", "password", "search", "tel", "number", "email", "url", ""].indexOf(el.type) >= 0;
  }

  /* The layout a field opens with: its own kind, else the user's pick, else the language's. */
  function layoutFor(el) {
    var kind = el.dataset.kb;
    if (kind === "numeric" || el.type === "tel" || el.type === "number") { return "numeric"; }
    if (kind === "date") { return "date"; }
    if (kind === "latin" || el.type === "password") { return "latin"; }
    return chosen && layouts[chosen] ? chosen : preferredLayout();
  }

  function show(el) {
    active = el;
    panel.hidden = false;
    document.body.classList.add("osk-open");
    applyLayout(layoutFor(el));     // also forgets a half-typed Ethiopic syllable or a shift
    keyboard.setInput(el.value);
    setTimeout(function () { keepVisible(el); }, 50);
  }

  /* Scroll the field into the part of the screen the keyboard leaves free (at 800×480 the
     keyboard covers the lower half, so "center" would put the field behind it). The form's
     next button (Log in, Search) comes along when field and button fit there together: it is
     what the nurse taps after typing, and a tap on a button behind the keyboard does nothing. */
  function keepVisible(el) {
    var box = el.getBoundingClientRect();
    var free = panel.hidden ? window.innerHeight : panel.getBoundingClientRect().top;
    var margin = 12;
    var bottom = box.bottom;
    var button = nextSubmitButton(el);
    if (button) {
      var b = button.getBoundingClientRect();
      if (b.bottom > bottom && b.bottom - box.top <= free - 2 * margin) { bottom = b.bottom; }
    }
    if (bottom > free - margin) { window.scrollBy(0, bottom - free + margin); }
    else if (box.top < margin) { window.scrollBy(0, box.top - margin); }
  }

  function nextSubmitButton(el) {
    if (!el.form) { return null; }
    var buttons = el.form.querySelectorAll("button[type=submit], button:not([type]), input[type=submit]");
    for (var i = 0; i < buttons.length; i++) {
      if (el.compareDocumentPosition(buttons[i]) & Node.DOCUMENT_POSITION_FOLLOWING) { return buttons[i]; }
    }
    return null;
  }

  function hide() {
    panel.hidden = true;
    document.body.classList.remove("osk-open");
    active = null;
  }

  function preferredLayout() {
    var lang = document.body.dataset.lang;
    for (var i = 0; i < order.length; i++) {
      var def = layouts[order[i]];
      if (!def.hidden && (def.lang === lang || (def.langs && def.langs.indexOf(lang) >= 0))) { return order[i]; }
    }
    return "latin";
  }

  keyboard = new SK({
    onKeyPress: onKeyPress,
    preventMouseDownDefault: true,    // tapping a key must not take the focus from the field
    stopMouseDownPropagation: true,
    disableCaretPositioning: true,    // the field's own caret is the truth (see api.insert)
    useMouseEvents: false,
    mergeDisplay: true,
    display: baseDisplay(),
    layout: LATIN.layout
  });

  window.BCCDMS = window.BCCDMS || {};
  window.BCCDMS.keyboard = {
    registerLayout: function (id, def) {
      if (!layouts[id]) { order.push(id); }
      layouts[id] = def;
      renderLayoutButtons();
      // A layout for the page's language that arrives while a default field is open takes over.
      if (active && layoutFor(active) === id && current !== id) { applyLayout(id); }
    },
    use: function (id) { chosen = id; applyLayout(id); },
    show: show,
    hide: hide,
    api: api
  };
  // Afaan Oromo is written in the Latin alphabet (Qubee): same keys, apostrophe included.
  window.BCCDMS.keyboard.registerLayout("latin", Object.assign({ lang: "en", langs: ["en", "om"] }, LATIN));
  window.BCCDMS.keyboard.registerLayout("numeric", NUMERIC);
  window.BCCDMS.keyboard.registerLayout("date", DATE);

  document.addEventListener("focusin", function (e) {
    if (wants(e.target)) { show(e.target); }
  });
  // Hide on "click", not "pointerdown": hiding reflows the page, and a button that moved
  // between pointerdown and pointerup would never receive its click. Where the press *started*
  // decides, not the click's target: a tap on a field that opens the keyboard (which then covers
  // the finger) ends on the keyboard, and Chromium sends that click to <body>; a layout button
  // or key the keyboard redraws while handling the tap is no longer in the panel when its click
  // arrives (its event path still is).
  var pressInside = false;
  function inside(e) { return e.composedPath().indexOf(panel) >= 0 || wants(e.target); }
  document.addEventListener("pointerdown", function (e) { pressInside = inside(e); }, true);
  document.addEventListener("click", function (e) {
    var started = pressInside;
    pressInside = false;                 // a click from the physical keyboard has no press
    if (panel.hidden || started || inside(e)) { return; }
    hide();
  });
  document.addEventListener("input", function (e) {
    // A physical keyboard (technician) typed: keep the on-screen keyboard in step.
    if (e.target === active && keyboard) { keyboard.setInput(active.value); }
  });
  var hideButton = document.getElementById("osk-hide");
  if (hideButton) {
    hideButton.textContent = hideLabel;
    hideButton.addEventListener("mousedown", function (e) { e.preventDefault(); });
    hideButton.addEventListener("click", function () { if (active) { active.blur(); } hide(); });
  }
})();
