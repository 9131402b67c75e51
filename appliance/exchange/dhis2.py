"""DHIS2 aggregate output: monthly counts per post as a ``dataValueSets`` document (JSON or CSV).

The mapping file (``dhis2_mapping.toml`` beside this module, or ``[exchange] dhis2_mapping``)
says which data element and category option combo each analysis and label goes to, and which
org unit each post is. Values are written with codes, to be posted with ``idScheme=code``.

Because DHIS2 silently ignores values whose ids it does not know, this module refuses to
write anything it would have to guess: a post with exams but no org unit, a label of a mapped
analysis with no combo, or an unknown analysis or label in the mapping all stop the export
with a sentence naming what is missing.
"""
from __future__ import annotations

import csv
import json
import os
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .. import catalogue
from ..errors import UserError
from . import stats

DEFAULT_MAPPING = Path(__file__).with_name("dhis2_mapping.toml")
CSV_COLUMNS = ("dataelement", "period", "orgunit", "catoptcombo", "attroptcombo", "value",
               "storedby", "lastupdated", "comment", "followup")


@dataclass
class AnalysisMapping:
    data_element: str
    total_data_element: str
    combos: dict[str, str]


@dataclass
class Mapping:
    path: Path
    data_set: str
    attribute_option_combo: str
    count_decided_only: bool
    include_demo: bool
    zeros: bool
    org_units: dict[str, str]
    analyses: dict[str, AnalysisMapping]


def _bad(path: Path, what: str) -> UserError:
    return UserError(f"The DHIS2 mapping file {path} {what}.",
                     "Fix it (see docs/supervisor-dhis2.md), then export again.")


def _code(value, path: Path, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 50:
        raise _bad(path, f"has no valid code at {where} (DHIS2 codes are 1 to 50 characters)")
    return value.strip()


def load_mapping(cfg) -> Mapping:
    path = Path(cfg.exchange.dhis2_mapping) if cfg.exchange.dhis2_mapping else DEFAULT_MAPPING
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"The DHIS2 mapping file {path} cannot be read ({exc.strerror}).",
                        "Check [exchange] dhis2_mapping in the configuration.") from None
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, f"is not valid TOML ({exc})") from None
    unknown = set(doc) - {"dhis2", "org_units", "analyses"}
    if unknown:
        raise _bad(path, f"has unknown sections {sorted(unknown)}")
    head = doc.get("dhis2", {})
    count = head.get("count", "decided")
    if count not in ("decided", "all"):
        raise _bad(path, f"has count = {count!r}; use \"decided\" or \"all\"")
    org_units = {str(k): _code(v, path, f"[org_units] {k}") for k, v in doc.get("org_units", {}).items()}
    analyses = {}
    for analysis_id, entry in doc.get("analyses", {}).items():
        if analysis_id not in catalogue.ANALYSES:
            raise _bad(path, f"names an unknown analysis [analyses.{analysis_id}]")
        labels = catalogue.all_label_ids()[analysis_id]
        combos = entry.get("category_option_combos", {})
        for label in combos:
            # Referrals (no class) may be mapped too, to report them; unmapped, they are left out.
            if label not in labels and not catalogue.is_referral(label):
                raise _bad(path, f"maps an unknown label {label!r} of {analysis_id}")
        missing = [label for label in labels if label not in combos]
        if missing:
            raise _bad(path, f"does not map the labels {missing} of {analysis_id} (their counts would be lost)")
        analyses[analysis_id] = AnalysisMapping(
            _code(entry.get("data_element"), path, f"[analyses.{analysis_id}] data_element"),
            _code(entry["total_data_element"], path, f"[analyses.{analysis_id}] total_data_element")
            if entry.get("total_data_element") else "",
            {label: _code(code, path, f"[analyses.{analysis_id}.category_option_combos] {label}")
             for label, code in combos.items()})
    return Mapping(path, str(head.get("data_set", "")).strip(), str(head.get("attribute_option_combo", "")).strip(),
                   count == "decided", bool(head.get("include_demo", False)), bool(head.get("zeros", True)),
                   org_units, analyses)


def period_of(month: str) -> str:
    """DHIS2's monthly ISO period: 2026-11 -> 202611."""
    return month.replace("-", "")


def data_values(cube: Counter, mapping: Mapping) -> list[dict]:
    """The data values of a count cube, summed per data element, period, org unit and combo."""
    values: Counter = Counter()
    totals: Counter = Counter()
    slices: set[tuple[str, str, str]] = set()
    unmapped_posts: set[str] = set()
    for cell, n in cube.items():
        spec = mapping.analyses.get(cell.analysis)
        if spec is None or (cell.demo and not mapping.include_demo) or cell.month == "unknown":
            continue
        if mapping.count_decided_only and not cell.decided:
            continue
        org_unit = mapping.org_units.get(cell.post_id)
        if org_unit is None:
            unmapped_posts.add(cell.post_id)
            continue
        period = period_of(cell.month)
        combo = spec.combos.get(cell.label)
        if combo is None:
            continue                     # an unmapped referral (no class), or a label outside the catalogue
        values[(spec.data_element, period, org_unit, combo)] += n
        totals[(cell.analysis, period, org_unit)] += n
        slices.add((cell.analysis, period, org_unit))
    if unmapped_posts:
        raise UserError(f"These posts have exams but no DHIS2 org unit in {mapping.path}: "
                        f"{', '.join(sorted(unmapped_posts))}.",
                        "Add each under [org_units] as  \"<post id>\" = \"<org unit code>\".")
    if mapping.zeros:
        for analysis_id, period, org_unit in slices:
            spec = mapping.analyses[analysis_id]
            for combo in set(spec.combos.values()):
                values.setdefault((spec.data_element, period, org_unit, combo), 0)
    out = [{"dataElement": de, "period": period, "orgUnit": ou, "categoryOptionCombo": coc, "value": str(n)}
           for (de, period, ou, coc), n in values.items()]
    for (analysis_id, period, org_unit), n in totals.items():
        spec = mapping.analyses[analysis_id]
        if spec.total_data_element:
            out.append({"dataElement": spec.total_data_element, "period": period, "orgUnit": org_unit,
                        "value": str(n)})
    if mapping.attribute_option_combo:
        for value in out:
            value["attributeOptionCombo"] = mapping.attribute_option_combo
    out.sort(key=lambda v: (v["orgUnit"], v["period"], v["dataElement"], v.get("categoryOptionCombo", "")))
    return out


def write_data_value_set(store, cfg, path, *, date_from: str | None = None, date_to: str | None = None) -> dict:
    """Write the DHIS2 data values of the whole store to ``path`` (``.csv``: CSV, else JSON).

    Returns a summary: path, format, number of values, periods and org units.
    """
    mapping = load_mapping(cfg)
    # The store's statistics cells (its index: a fraction of a second at 200,000 exams), not a pass
    # over every record; tests/test_exchange_stats.py checks both give the very same values.
    cube = stats.store_cube(store, date_from=date_from, date_to=date_to)
    values = data_values(cube, mapping)
    path = Path(path)
    fmt = "csv" if path.suffix.lower() == ".csv" else "json"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if fmt == "csv":
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(CSV_COLUMNS)
                for v in values:
                    writer.writerow([v["dataElement"], v["period"], v["orgUnit"], v.get("categoryOptionCombo", ""),
                                     v.get("attributeOptionCombo", ""), v["value"], "", "", "", ""])
        else:
            doc = {"dataValues": values}
            if mapping.data_set:
                doc = {"dataSet": mapping.data_set, **doc}
            tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"The DHIS2 file {path} cannot be written ({exc.strerror}).",
                        "Check the folder exists and has free space.") from None
    return {"path": str(path), "format": fmt, "values": len(values),
            "periods": sorted({v["period"] for v in values}), "org_units": sorted({v["orgUnit"] for v in values}),
            "mapping": str(mapping.path)}
