"""The translation catalogues: complete against a fresh extraction, well-formed, and honest about review."""
from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import i18n
from appliance.i18n import LANGUAGES, TRANSLATED_LANGUAGES, get_translations
from appliance.i18n.extract import extract_messages, load_catalogue, missing_messages

REPO = Path(__file__).resolve().parents[1]
GLOSSARY = REPO / "appliance" / "i18n" / "glossary.csv"
REVIEW_NOTE = "needs review by a native-speaking clinician"
GLOSSARY_STATUSES = {"needs review", "draft", "reviewed", "international term", "fuzzy"}
_FIELD = re.compile(r"%\((\w+)\)[-#0 +]*\d*(?:\.\d+)?[sdifr]")


@pytest.fixture(scope="module")
def template():
    return extract_messages()


@pytest.fixture(scope="module", params=TRANSLATED_LANGUAGES)
def catalogue(request):
    return request.param, load_catalogue(request.param)


def _strings(message) -> list[str]:
    return list(message.string) if isinstance(message.string, (list, tuple)) else [message.string]


def _ids(message) -> list[str]:
    return list(message.id) if isinstance(message.id, (list, tuple)) else [message.id]


def test_languages():
    assert LANGUAGES == {"en": "English", "am": "አማርኛ", "om": "Afaan Oromoo"}
    assert i18n.language("am-ET") == "am" and i18n.language("om_ET") == "om"
    assert i18n.language("fr") == "en" and i18n.language(None) == "en"


def test_every_string_in_the_code_is_in_every_catalogue(template, catalogue):
    """Fails when a marked string (Python or template) has no translation: run
    `python -m appliance.i18n.extract`, translate what it lists, commit the .po files."""
    lang, po = catalogue
    missing = missing_messages(template, po)
    assert not missing, f"{lang}: {len(missing)} untranslated, e.g. {missing[:10]}"


def test_translations_keep_every_field(catalogue):
    lang, po = catalogue
    problems = []
    for message in po:
        if not message.id:
            continue
        wanted = {f for msgid in _ids(message) for f in _FIELD.findall(msgid)}
        for text in _strings(message):
            if text and set(_FIELD.findall(text)) != wanted:
                # A plural form may drop %(num)d where the language spells the number out.
                if not (isinstance(message.id, tuple) and set(_FIELD.findall(text)) <= wanted):
                    problems.append((message.id, text))
    assert not problems, problems[:5]
    assert not [errs for _msg, errs in po.check()], "Babel's format checks failed"


def test_plural_forms_follow_the_language(catalogue):
    lang, po = catalogue
    expected = {"am": "nplurals=2; plural=(n > 1);", "om": "nplurals=2; plural=(n != 1);"}[lang]
    assert po.plural_forms == expected
    t = get_translations(lang)
    assert t.ngettext("about %(num)d year", "about %(num)d years", 1) != "about %(num)d year"


def test_fuzzy_only_where_review_is_asked(catalogue):
    lang, po = catalogue
    unmarked = [m.id for m in po if m.id and m.fuzzy and not any(REVIEW_NOTE in c for c in m.user_comments)]
    assert not unmarked, f"{lang}: fuzzy entries must say why ({REVIEW_NOTE!r}): {unmarked[:5]}"


def test_fuzzy_translations_are_not_shown():
    for lang in TRANSLATED_LANGUAGES:
        t = get_translations(lang)
        for message in load_catalogue(lang):
            if message.id and message.fuzzy and isinstance(message.id, str):
                assert t.gettext(message.id) == message.id


def test_translations_are_used():
    assert get_translations("am").gettext("Benign") != "Benign"
    assert get_translations("om").gettext("Cervical histopathology") != "Cervical histopathology"
    assert get_translations("en").gettext("Benign") == "Benign"


def test_nothing_is_left_in_english_by_accident(catalogue):
    """A translation equal to the English is allowed only for text without words to translate
    (numbers, fields, symbols, the product name) or for terms the glossary keeps international."""
    lang, po = catalogue
    kept = {row["english"] for row in _glossary() if row[f"{_column(lang)}_status"] == "international term"}
    copies = []
    for message in po:
        if not message.id or not isinstance(message.id, str) or message.string != message.id:
            continue
        words = re.sub(r"%\(\w+\)\w|BCCDMS|DHIS2|CSV|USB|PDF|JPEG|PNG|ONNX|OpenVINO|INT8|QR|ID|H&E|\d+|x", " ", message.id)
        if re.search(r"[A-Za-z]{2,}", words) and message.id not in kept:
            copies.append(message.id)
    assert not copies, f"{lang}: translated as the English text: {copies[:10]}"


# -- glossary -----------------------------------------------------------------------------------
def _column(lang: str) -> str:
    return {"am": "amharic", "om": "afaan_oromo"}[lang]


def _glossary() -> list[dict]:
    with open(GLOSSARY, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_glossary_is_well_formed():
    rows = _glossary()
    assert len(rows) >= 30
    assert set(rows[0]) == {"english", "amharic", "amharic_status", "afaan_oromo", "afaan_oromo_status", "note"}
    for row in rows:
        assert row["english"] and row["amharic"] and row["afaan_oromo"], row
        assert row["amharic_status"] in GLOSSARY_STATUSES and row["afaan_oromo_status"] in GLOSSARY_STATUSES, row
    assert len({r["english"] for r in rows}) == len(rows)


def test_glossary_agrees_with_the_catalogues(catalogue):
    """The glossary is the reviewers' list: a term in the catalogue carries the same translation, and
    'needs review' / 'fuzzy' in the glossary are the translator comment / fuzzy flag in the .po."""
    lang, po = catalogue
    column = _column(lang)
    for row in _glossary():
        message = po.get(row["english"])
        if message is None:
            continue              # a glossary-only term (e.g. "Cancer"): no string uses it alone yet
        status = row[f"{column}_status"]
        assert message.string == row[column], (lang, row["english"], message.string, row[column])
        needs_review = any(REVIEW_NOTE in c for c in message.user_comments)
        assert needs_review == (status in ("needs review", "fuzzy", "international term")), (lang, row["english"])
        assert message.fuzzy == (status == "fuzzy"), (lang, row["english"])


# -- extraction -----------------------------------------------------------------------------------
def test_extraction_reads_python_and_templates(tmp_path):
    (tmp_path / "babel.cfg").write_text((REPO / "babel.cfg").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "appliance").mkdir()
    (tmp_path / "appliance" / "m.py").write_text(
        "from appliance.i18n import N_\n"
        "# TRANSLATORS: shown on the result screen\n"
        "LABEL = N_('Malignant')\n"
        "def f(t, n):\n    return t.ngettext('%(num)d image', '%(num)d images', n)\n", encoding="utf-8")
    (tmp_path / "kiosk" / "templates").mkdir(parents=True)
    (tmp_path / "kiosk" / "templates" / "page.html").write_text(
        "<h1>{{ _('Find a patient') }}</h1>\n{% trans %}Hello {{ name }}{% endtrans %}\n"
        "<p>{{ _('%(n)s left', n=3) }}</p>", encoding="utf-8")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ignored.py").write_text("N_('never extracted')", encoding="utf-8")
    found = extract_messages(tmp_path)
    ids = {m.id if isinstance(m.id, str) else m.id[0] for m in found if m.id}
    assert ids == {"Malignant", "%(num)d image", "Find a patient", "Hello %(name)s", "%(n)s left"}
    assert found.get("Malignant").auto_comments == ["shown on the result screen"]
    assert ("kiosk/templates/page.html", 1) in found.get("Find a patient").locations


def test_extract_check_command():
    done = subprocess.run([sys.executable, "-m", "appliance.i18n.extract", "--check"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert re.search(r"^am: \d+/\d+ translated", done.stdout, re.M), done.stdout + done.stderr
    assert re.search(r"^om: \d+/\d+ translated", done.stdout, re.M)
    assert done.returncode in (0, 1)
    assert (done.returncode == 0) == ("untranslated:" not in done.stdout)


# -- errors with variable parts ------------------------------------------------------------------
def test_errors_with_values_are_shown_translated():
    """Sentences with values are one msgid with %(fields)s: the CLI prints the English, the kiosk
    translates it; the exception keeps its class (a BadImage is still caught as a BadImage)."""
    from appliance import catalogue
    from appliance.errors import BadImage, UserError
    from appliance.i18n import error_text, translatable
    from appliance.inference.imageio import decode
    from appliance.store.users import check_password

    with pytest.raises(UserError) as exc:
        catalogue.analysis("lung")
    assert exc.value.message.startswith("There is no analysis called 'lung'.")
    message, hint = error_text(exc.value, "am")
    assert "'lung'" in message and message != exc.value.message and "pap_smear" in hint

    with pytest.raises(BadImage) as exc:
        decode(b"not an image", 10_000_000)
    assert "JPEG, PNG" in exc.value.message
    assert error_text(exc.value, "om")[0] != exc.value.message and "JPEG, PNG" in error_text(exc.value, "om")[0]

    with pytest.raises(UserError) as exc:
        check_password("short", "almaz")
    assert "8" in error_text(exc.value, "am")[0] and error_text(exc.value, "am")[0] != exc.value.message

    cls = translatable(BadImage)
    assert issubclass(cls, BadImage) and translatable(BadImage) is cls and translatable(cls) is cls
