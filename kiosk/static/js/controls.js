/* The kiosk's own touch controls (Jinja macros in kiosk/templates/_macros.html): no native
 * file, select or date widget, and no browser validation bubble, is ever shown.
 *
 * - File chooser (`file_field`, [data-file-field]): the chosen file names (or the translated
 *   "No file chosen" from data-none) beside the big button; a file over data-max-bytes is refused
 *   in the page (its message shown); data-autosubmit sends the form once a file is chosen. A page
 *   shown again from the back/forward cache starts with no file chosen.
 * - Choice sheet (`choice_sheet`, [data-choice-sheet]): a <details> of big radio options; choosing
 *   one writes it into the summary and closes the sheet (after the tap's click, so nothing lands on
 *   the page beneath). A tap beside the sheet lands on the summary's backdrop, which closes it.
 * - Segmented buttons (`choice_buttons`) are plain radio inputs styled by kiosk.css: no script.
 * No inline scripts (CSP): everything comes from data-* attributes.
 */
(function () {
  "use strict";

  /* -- file chooser ------------------------------------------------------------------------ */
  function fileNames(input) {
    return Array.prototype.map.call(input.files || [], function (f) { return f.name; }).join(", ");
  }

  function showFiles(box) {
    var input = box.querySelector("input[type=file]");
    var status = box.querySelector(".file-status");
    var names = fileNames(input);
    status.textContent = names || box.dataset.none;
    box.classList.toggle("has-file", !!names);
  }

  function tooLarge(input) {
    var max = parseInt(input.dataset.maxBytes || "0", 10);
    return !!max && Array.prototype.some.call(input.files || [], function (f) { return f.size > max; });
  }

  document.querySelectorAll("[data-file-field]").forEach(function (box) {
    var input = box.querySelector("input[type=file]");
    var message = document.getElementById(input.dataset.messageId || "");
    input.addEventListener("change", function () {
      var refused = tooLarge(input);
      if (refused) { input.value = ""; }
      if (message) { message.hidden = !refused; }
      showFiles(box);
      if (!refused && input.files && input.files.length && input.form && input.dataset.autosubmit !== undefined) {
        input.form.requestSubmit();
      }
    });
    showFiles(box);
  });
  // Back to a page whose file was already sent: nothing is chosen any more.
  window.addEventListener("pageshow", function (e) {
    if (!e.persisted) { return; }
    document.querySelectorAll("[data-file-field]").forEach(function (box) {
      box.querySelector("input[type=file]").value = "";
      showFiles(box);
    });
  });

  /* -- choice sheet ------------------------------------------------------------------------ */
  document.querySelectorAll("[data-choice-sheet]").forEach(function (control) {
    var details = control.querySelector("details");
    var current = control.querySelector(".sheet-current");
    control.addEventListener("change", function (e) {
      if (!e.target.matches("input[type=radio]")) { return; }
      var text = e.target.parentNode.querySelector("span");
      current.textContent = text ? text.textContent : e.target.value;
    });
    // Any tap on an option closes the sheet, the one already chosen too (it fires no change).
    // The click has been delivered by then; closing moves nothing under it.
    control.addEventListener("click", function (e) {
      if (e.target.closest && e.target.closest(".sheet-option")) {
        setTimeout(function () { details.open = false; }, 0);
      }
    });
    details.addEventListener("toggle", function () {
      if (!details.open) { return; }
      var checked = control.querySelector("input:checked");
      if (checked) { checked.parentNode.scrollIntoView({ block: "nearest" }); }
      if (window.BCCDMS && window.BCCDMS.keyboard) { window.BCCDMS.keyboard.hide(); }
    });
  });
})();
