/* On-screen keyboard for every text field (Chromium in kiosk mode has none).
 *
 * Built on the vendored simple-keyboard. One keyboard panel at the bottom of the screen
 * opens when a text field gets focus and types into that field. Fields choose a layout with
 * data-kb="default" (the layout of the page's language: Ethiopic for Amharic once
 * keyboard-ethiopic.js has registered it, Latin otherwise) | "latin" (usernames, passwords,
 * card numbers) | "numeric" (phones, ages) | "date" (digits and "/") | "none" (no keyboard).
 * A layout the user picks in the keyboard bar stays for the other default fields of the page.
 *
 * The keyboard owns every tap that starts on it. A key acts on pointerdown (simple-keyboard), but
 * nothing under the finger changes until every finger has lifted: a new set of keys (Ethiopic
 * vowels, shift, another layout) or hiding the panel waits for the last pointerup. The panel
 * cancels its touchstart/touchend (so the browser makes no mouse events and no click out of the
 * touch: focus stays in the field, and nothing lands on the page beneath) and stops its mouse
 * events and clicks from reaching the page; a click that still arrives outside the panel right
 * after a press on it is swallowed. The panel's height is fixed (every layout has 4 rows), so
 * what is under a finger is always the keyboard.
 *
 * Layout hook (for other scripts, e.g. an Ethiopic layout):
 *   BCCDMS.keyboard.registerLayout(id, {
 *     label: "ሀ",                      // text of its button in the keyboard bar
 *     layout: {default: [...rows], shift: [...rows]},   // simple-keyboard layout object, 4 rows each
 *     display: {...},                  // optional simple-keyboard display map
 *     wide: "{space}",                 // optional: keys twice as wide as the others
 *     onKeyPress: function (button, api) { return true if handled }  // optional
 *   });
 * api: insert(text), backspace(), setRows(layoutObject), layoutName(name), field() —
 * enough for two-step layouts (consonant key → a row of its vowel orders). The key "{none}" is an
 * empty, inert place (a row with nothing to offer keeps the keyboard's 4 rows).
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
    layout: { "default": ["1 2 3 {bksp}", "4 5 6 -", "7 8 9 {space}", "+ 0 {enter}"] },
    wide: "{enter}",
    hidden: true
  };
  // Dates are typed day/month/year (as written in Ethiopia, in either calendar).
  var DATE = {
    label: "31/12",
    layout: { "default": ["1 2 3 {bksp}", "4 5 6 -", "7 8 9 {space}", "/ 0 {enter}"] },
    wide: "{enter}",
    hidden: true
  };
  var LATIN = {
    label: "ABC",
    // The apostrophe is on the main rows: Afaan Oromo (Qubee) writes it as a letter (hudhaa).
    layout: {
      "default": ["1 2 3 4 5 6 7 8 9 0 {bksp}", "q w e r t y u i o p '", "a s d f g h j k l - {enter}",
                  "{shift} z x c v b n m , . {space}"],
      "shift": ["! ? # % & ( ) / + _ {bksp}", "Q W E R T Y U I O P '", "A S D F G H J K L @ {enter}",
                "{shift} Z X C V B N M : = {space}"]
    },
    wide: "{space}"
  };

  /* -- typing into the field ------------------------------------------------------------ */
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
    setRows: function (layoutObject) { redraw({ layout: layoutObject }); },
    layoutName: function (name) { redraw({ layoutName: name }); }
  };

  /* -- nothing changes under a finger ---------------------------------------------------- */
  var held = {};              // pointerId -> true, for pointers pressed on the panel and not lifted
  var waiting = null;         // simple-keyboard options to apply once every finger has lifted
  var afterRelease = [];      // other changes (hide the panel, the bar's selection) waiting the same way

  function fingersDown() { return Object.keys(held).length > 0; }

  function redraw(options) {
    if (fingersDown()) { waiting = Object.assign(waiting || {}, options); return; }
    keyboard.setOptions(options);
  }

  function whenReleased(fn) {
    if (fingersDown()) { afterRelease.push(fn); } else { fn(); }
  }

  function release() {
    if (fingersDown()) { return; }
    var options = waiting;
    var fns = afterRelease;
    waiting = null;
    afterRelease = [];
    if (options) { keyboard.setOptions(options); }
    fns.forEach(function (fn) { fn(); });
  }

  /* -- layouts and the bar --------------------------------------------------------------- */
  function baseDisplay() {
    return { "{bksp}": "⌫", "{enter}": "↵", "{shift}": "⇧", "{space}": " ", "{lock}": "⇪", "{none}": " " };
  }

  function layoutOptions(def) {
    var theme = [{ "class": "osk-inert", buttons: "{none}" }];
    if (def.wide) { theme.push({ "class": "osk-wide", buttons: def.wide }); }
    return { layout: def.layout, layoutName: "default", buttonTheme: theme,
             display: Object.assign(baseDisplay(), def.display || {}) };
  }

  function applyLayout(id) {
    var def = layouts[id];
    if (!def) { return; }
    current = id;
    redraw(layoutOptions(def));
    whenReleased(markLayoutButtons);
  }

  /* The bar's buttons are made once per set of layouts; a tap only moves the selection. */
  function renderLayoutButtons() {
    var bar = document.getElementById("osk-layouts");
    if (!bar) { return; }
    var shown = order.filter(function (id) { return !layouts[id].hidden; });
    var have = Array.prototype.map.call(bar.children, function (b) { return b.dataset.layout; });
    if (have.join(" ") !== shown.join(" ")) {
      bar.textContent = "";
      shown.forEach(function (id) {
        var b = document.createElement("button");
        b.type = "button";
        b.className = "btn osk-layout";
        b.textContent = layouts[id].label;
        b.dataset.layout = id;
        bar.appendChild(b);
      });
    }
    markLayoutButtons();
  }

  function markLayoutButtons() {
    var bar = document.getElementById("osk-layouts");
    if (!bar) { return; }
    Array.prototype.forEach.call(bar.children, function (b) {
      b.classList.toggle("btn-selected", b.dataset.layout === current);
      b.setAttribute("aria-pressed", b.dataset.layout === current ? "true" : "false");
    });
  }

  function chooseLayout(id) { chosen = id; applyLayout(id); }

  /* -- keys ------------------------------------------------------------------------------ */
  function onKeyPress(button) {
    if (button === "{none}") { return; }
    var def = layouts[current];
    if (def && def.onKeyPress && def.onKeyPress(button, api)) { return; }
    var shifted = (waiting && waiting.layoutName) || keyboard.options.layoutName;
    if (button === "{shift}" || button === "{lock}") {
      var name = shifted === "shift" ? "default" : "shift";
      if (keyboard.options.layout[name]) { redraw({ layoutName: name }); }
      return;
    }
    if (button === "{enter}") { enter(); return; }
    if (button === "{bksp}") { api.backspace(); return; }
    if (button === "{space}") { api.insert(" "); return; }
    if (button.charAt(0) === "{") { return; }
    api.insert(button);
    if (shifted === "shift" && current === "latin") { redraw({ layoutName: "default" }); }
  }

  /* ↵: the next field of the same form (in page order), or the form's submission on the last one. */
  function enter() {
    if (!active) { return; }
    if (active.tagName === "TEXTAREA") { api.insert("\n"); return; }
    var form = active.form;
    if (!form) { var el = active; whenReleased(function () { el.blur(); hide(); }); return; }
    var next = nextField(active);
    if (next) { next.focus(); return; }
    var submit = form.querySelector("button[type=submit], button:not([type]), input[type=submit]");
    whenReleased(hide);
    if (submit && submit.form === form) { form.requestSubmit(submit); } else { form.requestSubmit(); }
  }

  function nextField(el) {
    var fields = Array.prototype.filter.call(el.form.elements, function (f) {
      return f === el || (wants(f) && f.getClientRects().length > 0);
    });
    return fields[fields.indexOf(el) + 1] || null;
  }

  // Holding ⌫ erases one character after another (simple-keyboard's own hold repeats letters
  // too, which a gloved finger resting on a key would fill the field with: it is turned off).
  var repeat = null;
  function startRepeat(button) {
    stopRepeat();
    if (button !== "{bksp}") { return; }
    repeat = setTimeout(function tick() { onKeyPress("{bksp}"); repeat = setTimeout(tick, 120); }, 600);
  }
  function stopRepeat() { if (repeat) { clearTimeout(repeat); repeat = null; } }

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
    keepVisible(el);
    setTimeout(function () { if (active === el) { keepVisible(el); } }, 50);
  }

  /* Scroll the field into the part of the screen the keyboard leaves free (at 800×480 the
     keyboard covers the lower half, so "center" would put the field behind it; the page has
     the panel's height as bottom padding while it is open, so the last field can go above it).
     The form's next button (Log in, Search) comes along when field and button fit there
     together: it is what the nurse taps after typing. */
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
    stopRepeat();
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
    disableButtonHold: true,          // see startRepeat
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
    use: chooseLayout,
    show: show,
    hide: function () { whenReleased(hide); },
    api: api
  };
  // Afaan Oromo is written in the Latin alphabet (Qubee): same keys, apostrophe included.
  window.BCCDMS.keyboard.registerLayout("latin", Object.assign({ lang: "en", langs: ["en", "om"] }, LATIN));
  window.BCCDMS.keyboard.registerLayout("numeric", NUMERIC);
  window.BCCDMS.keyboard.registerLayout("date", DATE);

  /* -- the panel owns its events ------------------------------------------------------------ */
  function onPanel(e) { return e.composedPath().indexOf(panel) >= 0; }

  function barAction(target) {
    var button = target.closest && target.closest("#osk-layouts [data-layout], #osk-hide");
    if (!button || !panel.contains(button)) { return null; }
    if (button.id === "osk-hide") {
      return function () { var el = active; whenReleased(function () { if (el) { el.blur(); } hide(); }); };
    }
    return function () { chooseLayout(button.dataset.layout); };
  }

  // Capture on the panel runs before simple-keyboard's handler on the key itself.
  panel.addEventListener("pointerdown", function (e) {
    e.preventDefault();                     // no mouse events from this press: the field keeps focus
    if (waiting) {                          // the keys on screen are about to change: a second
      e.stopPropagation();                  // finger on the old ones types nothing
      return;
    }
    held[e.pointerId] = true;
    var key = e.target.closest && e.target.closest(".hg-button");
    if (key) { startRepeat(key.dataset.skbtn); }
    var action = barAction(e.target);
    if (action) { action(); }
  }, true);
  function lifted(e) {
    if (!held[e.pointerId]) { return; }
    delete held[e.pointerId];
    pressEnded = Date.now();
    stopRepeat();
    // After this event's own touchend and click (same task), so they still find the old keys.
    setTimeout(release, 0);
  }
  window.addEventListener("pointerup", lifted, true);
  window.addEventListener("pointercancel", lifted, true);

  // A cancelled touch makes no mouse events and no click: nothing of it reaches the page.
  ["touchstart", "touchmove", "touchend", "touchcancel"].forEach(function (type) {
    panel.addEventListener(type, function (e) { if (e.cancelable) { e.preventDefault(); } }, { capture: true, passive: false });
  });
  ["mousedown", "mouseup", "click", "dblclick", "contextmenu"].forEach(function (type) {
    panel.addEventListener(type, function (e) { e.preventDefault(); }, true);
    panel.addEventListener(type, function (e) { e.stopPropagation(); });
  });
  // A layout button or Hide activated from a physical keyboard (a technician): no pointer.
  panel.addEventListener("click", function (e) {
    var action = e.detail === 0 && barAction(e.target);
    if (action) { action(); }
  });

  // Hide on "click", not "pointerdown": hiding reflows the page, and a button that moved
  // between pointerdown and pointerup would never receive its click. Where the press *started*
  // decides: a tap on a field that opens the keyboard (which then covers the finger) ends on the
  // keyboard. A click outside the panel right after a press on it (a browser that still made one)
  // is the keyboard's, not the page's.
  var pressOnPanel = false;
  var pressOnField = false;
  var pressEnded = 0;
  window.addEventListener("pointerdown", function (e) {
    pressOnPanel = onPanel(e);
    pressOnField = wants(e.target);
  }, true);
  window.addEventListener("click", function (e) {
    if (onPanel(e)) { return; }
    if (pressOnPanel && (fingersDown() || Date.now() - pressEnded < 800)) {
      e.preventDefault();
      e.stopImmediatePropagation();
      return;
    }
    var fromField = pressOnField;
    pressOnPanel = pressOnField = false;    // a click from the physical keyboard has no press
    if (!panel.hidden && !fromField && !wants(e.target)) { hide(); }
  }, true);
  document.addEventListener("focusin", function (e) {
    if (wants(e.target)) { show(e.target); }
  });
  document.addEventListener("input", function (e) {
    // A physical keyboard (technician) typed: keep the on-screen keyboard in step.
    if (e.target === active && keyboard) { keyboard.setInput(active.value); }
  });
  var hideButton = document.getElementById("osk-hide");
  if (hideButton) { hideButton.textContent = hideLabel; }
})();
