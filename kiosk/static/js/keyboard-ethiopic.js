/* Amharic (Ethiopic, Ge'ez script) layout for the kiosk's on-screen keyboard.
 *
 * The fidel has about 250 syllables, far too many keys for a touchscreen. Like Ethiopic phone
 * keyboards, typing takes two taps: a consonant key (in the ሀ ለ ሐ መ … order every pupil
 * learns) shows, in the same four rows, that consonant's seven vowel orders (ለ ሉ ሊ ላ ሌ ል ሎ),
 * its labialised form (ሏ) and, for ቀ ኀ ከ ኸ ገ, the labiovelars (ቈ ቊ ቋ ቌ ቍ); tapping one types
 * it and the consonants come back. "↩" goes back without typing. Space and ⌫ work in both steps.
 *
 * Self-contained: no dependencies. Exposes window.EthiopicKeyboard (the data and the pure
 * functions below) and, when the kiosk's keyboard (kiosk/static/js/keyboard.js) is on the page,
 * registers itself there as layout "ethiopic" for Amharic users:
 *   BCCDMS.keyboard.registerLayout("ethiopic", EthiopicKeyboard.layoutDefinition())
 * Load it after keyboard.js (or anywhere: it waits for DOMContentLoaded if needed).
 *
 * Afaan Oromo is written in the Latin alphabet (Qubee) and uses the kiosk's Latin layout, which
 * has the apostrophe (hudhaa) on its main rows; double vowels are typed as two letters.
 */
(function (root) {
  "use strict";

  // The consonants of Amharic in the traditional fidel order, four rows of nine keys.
  var CONSONANT_ROWS = [
    "ሀ ለ ሐ መ ሠ ረ ሰ ሸ ቀ",
    "በ ቨ ተ ቸ ኀ ነ ኘ አ ከ",
    "ኸ ወ ዐ ዘ ዠ የ ደ ጀ ገ",
    "ጠ ጨ ጰ ጸ ፀ ፈ ፐ ፣ ።"
  ];
  // Each consonant's row in the Unicode Ethiopic block holds its seven orders at base+0..6;
  // base+7 is its labialised "-wa" form where one exists (listed here: the others at base+7
  // are obsolete "-oa" syllables).
  var WA_FORMS = "ሏሗሟሧሯሷሿቧቯቷቿኗኟኧዟዧዷጇጧጯጷጿፏፗ";
  // Consonants with a separate labiovelar row (wä, wi, wa, we, wə at row+0, 2, 3, 4, 5).
  var LABIOVELAR_ROWS = { "ቀ": 0x1248, "ኀ": 0x1288, "ከ": 0x12B0, "ኸ": 0x12C0, "ገ": 0x1310 };
  var LABIOVELAR_ORDERS = [0, 2, 3, 4, 5];
  var BACK = "{back}";

  function isConsonant(key) {
    return key.length === 1 && CONSONANT_ROWS.join(" ").split(" ").indexOf(key) >= 0 &&
      key !== "፣" && key !== "።";
  }

  /* Every syllable typed from a consonant key, in the order shown. */
  function syllables(consonant) {
    var base = consonant.charCodeAt(0);
    var out = [];
    for (var order = 0; order < 7; order++) { out.push(String.fromCharCode(base + order)); }
    var wa = String.fromCharCode(base + 7);
    if (WA_FORMS.indexOf(wa) >= 0) { out.push(wa); }
    var row = LABIOVELAR_ROWS[consonant];
    if (row) {
      LABIOVELAR_ORDERS.forEach(function (o) { out.push(String.fromCharCode(row + o)); });
    }
    return out;
  }

  /* simple-keyboard layout objects: the consonants, and the vowel orders of one consonant.
     Both have four rows (the kiosk's keyboard keeps one height: nothing moves under a finger);
     the vowel orders get big keys, four to a row, the labiovelars (if any) a row of their own. */
  function consonantLayout() {
    var rows = CONSONANT_ROWS.slice();
    rows[0] = rows[0] + " {bksp}";
    rows[1] = rows[1] + " {enter}";
    rows[3] = rows[3] + " {space}";
    return { "default": rows };
  }

  function vowelLayout(consonant) {
    var all = syllables(consonant);
    var plain = all.slice(0, WA_FORMS.indexOf(all[7]) >= 0 ? 8 : 7);
    var labiovelars = all.slice(plain.length);
    var rows = [plain.slice(0, 4).join(" "), plain.slice(4).join(" "),
                labiovelars.length ? labiovelars.join(" ") : "{none}",
                BACK + " {space} {bksp}"];
    return { "default": rows };
  }

  /* The definition BCCDMS.keyboard.registerLayout expects (see keyboard.js). */
  function layoutDefinition(options) {
    options = options || {};
    var showing = null;       // the consonant whose vowel orders are on screen, or null
    var definition = {
      label: options.label || "ሀሁ",
      lang: "am",
      display: { "{back}": options.backLabel || "↩ ሀ ለ ሐ", "{space}": options.spaceLabel || " " },
      onKeyPress: function (button, api) {
        if (showing === null) {
          if (!isConsonant(button)) { return false; }   // ፣ ። space ⌫ enter: the kiosk's handling
          showing = button;
          api.setRows(vowelLayout(button));
          return true;
        }
        var back = function () { showing = null; api.setRows(consonantLayout()); };
        if (button === BACK) { back(); return true; }
        if (button.charAt(0) === "{") {
          if (button === "{space}" || button === "{bksp}") { back(); }
          return false;                                  // and the kiosk types the space / erases
        }
        api.insert(button);
        back();
        return true;
      }
    };
    // keyboard.js puts this layout back on screen (with its consonants) whenever the layout is
    // chosen or the keyboard reopens, by reading .layout; forget a half-typed syllable then, so
    // the next consonant key opens its vowels instead of being typed.
    Object.defineProperty(definition, "layout", {
      enumerable: true,
      get: function () { showing = null; return consonantLayout(); }
    });
    return definition;
  }

  var api = {
    CONSONANT_ROWS: CONSONANT_ROWS,
    consonants: function () {
      return CONSONANT_ROWS.join(" ").split(" ").filter(isConsonant);
    },
    syllables: syllables,
    consonantLayout: consonantLayout,
    vowelLayout: vowelLayout,
    layoutDefinition: layoutDefinition
  };
  root.EthiopicKeyboard = api;

  function register() {
    var kb = root.BCCDMS && root.BCCDMS.keyboard;
    if (!kb || !kb.registerLayout) { return false; }
    var body = root.document && root.document.body;
    // lang "am": keyboard.js opens this layout for Amharic pages (text fields with data-kb="default").
    kb.registerLayout("ethiopic", layoutDefinition({
      backLabel: body && body.dataset.kbBack,
      spaceLabel: body && body.dataset.kbSpace
    }));
    return true;
  }

  if (!register() && root.document) {
    root.document.addEventListener("DOMContentLoaded", register);
  }
})(window);
