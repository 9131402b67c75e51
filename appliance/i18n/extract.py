"""Extract the English source strings and merge them into each language's catalogue.

    python -m appliance.i18n.extract          # write locale/messages.pot, update am and om .po
    python -m appliance.i18n.extract --check  # change nothing; exit 1 if a catalogue lacks a string

What is extracted is configured in ``babel.cfg`` at the repository root (Python files under
``appliance/``, Jinja2 templates under ``kiosk/templates/``). Comments starting with
``TRANSLATORS:`` right above a string reach the translators. New strings arrive in the ``.po``
files untranslated; strings that disappeared are kept at the end as obsolete (``#~``) so a
translation can be reused. No fuzzy guessing: a clinical term must never silently inherit the
translation of a similar-looking one.

Files are rewritten only when their messages change, so running this is safe and quiet.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
from importlib import metadata
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po, write_po

from . import DOMAIN, LOCALE_DIR, TRANSLATED_LANGUAGES, catalogue_path

CHECKOUT = Path(__file__).resolve().parents[2]
MAPPING_FILE = CHECKOUT / "babel.cfg"
TEMPLATE_FILE = LOCALE_DIR / f"{DOMAIN}.pot"
COMMENT_TAG = "TRANSLATORS:"
PROJECT = "BCCDMS"
COPYRIGHT_HOLDER = "BCCDMS project"
BUGS_ADDRESS = "the BCCDMS maintainers (issue tracker)"


def _version() -> str:
    try:
        return metadata.version("bccdms")
    except metadata.PackageNotFoundError:
        return ""


def extract_messages(root: Path = CHECKOUT) -> Catalog:
    """A fresh catalogue template of every marked string under ``root`` (per ``babel.cfg``)."""
    with open(root / MAPPING_FILE.name, encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh, str(root / MAPPING_FILE.name))
    # Walk only the folders the patterns start in: never .venv, data/ or datasets.
    tops = {pattern.split("/", 1)[0] for pattern, _method in method_map}

    def wanted(dirpath: str) -> bool:
        rel = Path(dirpath).resolve().relative_to(root.resolve())
        return not rel.parts or (rel.parts[0] in tops and not any(p.startswith((".", "__")) for p in rel.parts))

    catalog = Catalog(project=PROJECT, version=_version(), copyright_holder=COPYRIGHT_HOLDER,
                      msgid_bugs_address=BUGS_ADDRESS, charset="utf-8", fuzzy=False)
    for filename, lineno, message, comments, context in extract_from_dir(
            root, method_map, options_map, keywords=DEFAULT_KEYWORDS, comment_tags=(COMMENT_TAG,),
            strip_comment_tags=True, directory_filter=wanted):
        catalog.add(message, None, [(Path(filename).as_posix(), lineno)], auto_comments=comments,
                    context=context)
    return catalog


_VOLATILE_HEADERS = re.compile(rb'^"(POT-Creation-Date|PO-Revision-Date): .*\n', re.M)


def _serialise(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    # No line numbers: a location per file is enough to find a string, and line numbers
    # would rewrite every catalogue on each unrelated code change.
    write_po(buf, catalog, width=100, include_lineno=False)
    return buf.getvalue()


def _write_if_changed(path: Path, catalog: Catalog) -> bool:
    """Write ``catalog`` unless the file says the same (ignoring the header's timestamps)."""
    new = _serialise(catalog)
    if path.is_file() and _VOLATILE_HEADERS.sub(b"", path.read_bytes()) == _VOLATILE_HEADERS.sub(b"", new):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(new)
    tmp.replace(path)
    return True


def load_catalogue(lang: str) -> Catalog:
    """The language's ``.po`` as a Babel catalogue (an empty one if it does not exist yet)."""
    path = catalogue_path(lang)
    if not path.is_file():
        return Catalog(locale=lang, project=PROJECT, version=_version(),
                       copyright_holder=COPYRIGHT_HOLDER, charset="utf-8", fuzzy=False)
    with open(path, "rb") as fh:
        return read_po(fh, locale=lang, abort_invalid=True)


# Plural rules where Babel's default table differs from CLDR and GNU gettext: Amharic uses
# the singular for 0 and 1 ("one: i = 0 or n = 1").
PLURAL_FORMS = {"am": "nplurals=2; plural=(n > 1);"}


def merged(template: Catalog, lang: str) -> Catalog:
    catalog = load_catalogue(lang)
    catalog.update(template, no_fuzzy_matching=True, update_header_comment=False)
    catalog.msgid_bugs_address = BUGS_ADDRESS
    if lang in PLURAL_FORMS:
        catalog.mime_headers = [("Plural-Forms", PLURAL_FORMS[lang])]
    return catalog


def missing_messages(template: Catalog, catalog: Catalog) -> list[str]:
    """msgids of ``template`` that ``catalog`` lacks or leaves untranslated (fuzzy counts as present:
    it is a translation awaiting review, and the English is shown meanwhile)."""
    out = []
    for message in template:
        if not message.id:
            continue
        found = catalog.get(message.id, context=message.context)
        strings = found.string if found is not None else None
        if isinstance(strings, (list, tuple)):
            complete = all(strings)
        else:
            complete = bool(strings)
        if found is None or not complete:
            out.append(message.id if isinstance(message.id, str) else message.id[0])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.i18n.extract", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when a catalogue lacks a translation")
    args = parser.parse_args(argv)
    template = extract_messages()
    count = sum(1 for m in template if m.id)
    failed = False
    if not args.check:
        written = _write_if_changed(TEMPLATE_FILE, template)
        print(f"{TEMPLATE_FILE.relative_to(CHECKOUT)}: {count} messages{' (updated)' if written else ''}")
    for lang in TRANSLATED_LANGUAGES:
        catalog = merged(template, lang)
        missing = missing_messages(template, catalog)
        failed |= bool(missing)
        if not args.check:
            written = _write_if_changed(catalogue_path(lang), catalog)
            state = " (updated)" if written else ""
        else:
            state = ""
        print(f"{lang}: {count - len(missing)}/{count} translated{state}")
        for msgid in missing:
            print(f"  untranslated: {msgid!r}")
    return 1 if (args.check and failed) else 0


if __name__ == "__main__":
    sys.exit(main())
