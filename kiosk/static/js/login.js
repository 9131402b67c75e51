/* The login screen's people and PIN pad (kiosk/templates/login.html).
 *
 * Tapping a name that has a PIN opens the pad for that person; the form is sent by itself
 * once the last digit is typed (6 taps). A name without a PIN fills the username of the
 * password form and moves to its password field. "Not me" goes back to the names. The pad is
 * our own control: no text field, so the on-screen keyboard never opens over it.
 */
(function () {
  "use strict";
  var grid = document.getElementById("people-grid");
  var form = document.getElementById("pin-form");
  if (!grid || !form) { return; }
  var length = parseInt(form.dataset.length || "6", 10);
  var value = document.getElementById("pin-value");
  var who = document.getElementById("pin-username");
  var name = document.getElementById("pin-name");
  var dots = form.querySelectorAll(".pin-dot");
  var sent = false;

  function draw() {
    for (var i = 0; i < dots.length; i++) { dots[i].classList.toggle("filled", i < value.value.length); }
  }
  function openPad(username, displayName) {
    who.value = username;
    name.textContent = displayName;
    value.value = "";
    sent = false;
    draw();
    grid.hidden = true;
    form.hidden = false;
  }
  function closePad() {
    value.value = "";
    who.value = "";
    form.hidden = true;
    grid.hidden = false;
  }

  grid.addEventListener("click", function (e) {
    var person = e.target.closest(".person");
    if (!person) { return; }
    if (person.dataset.pin === "1") { openPad(person.dataset.username, person.dataset.name); return; }
    var username = document.querySelector("#password-form input[name=username]");
    var password = document.querySelector("#password-form input[name=password]");
    if (username) { username.value = person.dataset.username; }
    if (password) { password.focus(); }
  });

  form.addEventListener("click", function (e) {
    var key = e.target.closest(".pin-key");
    if (!key || sent) { return; }
    var k = key.dataset.key;
    if (k === "other") { closePad(); return; }
    if (k === "back") { value.value = value.value.slice(0, -1); draw(); return; }
    if (value.value.length >= length) { return; }
    value.value += k;
    draw();
    if (value.value.length === length) {
      sent = true;
      form.submit();
    }
  });

  // After a wrong PIN the page comes back with that person's pad open.
  if (who.value) { openPad(who.value, name.textContent); }
})();
