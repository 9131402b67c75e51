"""DHIS2 aggregate output: monthly counts per post as a ``dataValueSets`` document (JSON or CSV).

The mapping file (``dhis2_mapping.toml`` beside this module, or ``[exchange] dhis2_mapping``)
says which data element and category option combo each analysis and label goes to, which data
elements receive the screening programme's indicators (numerator and denominator), which org
unit each post is, and the period type: Gregorian months or Ethiopian-calendar months
(``appliance.exchange.periods``; Pagume joined to Nehase or to the next Meskerem). Values are
written with codes, to be posted with ``idScheme=code``.

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
from ..i18n.age import AGE_GROUPS
from ..pathway.codes import HIV_STATUS
from ..pathway.indicators import DEFINITIONS as INDICATORS
from ..pathway.indicators import TARGET_GROUP
from . import periods, stats

DEFAULT_MAPPING = Path(__file__).with_name("dhis2_mapping.toml")
CSV_COLUMNS = ("dataelement", "period", "orgunit", "catoptcombo", "attroptcombo", "value",
               "storedby", "lastupdated", "comment", "followup")


@dataclass
class AnalysisMapping:
    data_element: str
    total_data_element: str
    combos: dict[str, str]


@dataclass
class IndicatorMapping:
    numerator: str
    denominator: str                 # "" for a count (and when not sent)
    disaggregate: str                # "" (default combo), "hiv", "age_group" or "age_group/hiv" (screened only)
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
    indicators: dict[str, IndicatorMapping] = None
    period_type: str = periods.GREGORIAN_MONTHLY
    pagume: str = periods.PAGUME_TO_NEHASE

    def period_of(self) -> periods.PeriodOf:
        return periods.PeriodOf(self.period_type, self.pagume)


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
    unknown = set(doc) - {"dhis2", "org_units", "analyses", "indicators"}
    if unknown:
        raise _bad(path, f"has unknown sections {sorted(unknown)}")
    head = doc.get("dhis2", {})
    count = head.get("count", "decided")
    if count not in ("decided", "all"):
        raise _bad(path, f"has count = {count!r}; use \"decided\" or \"all\"")
    period_type = head.get("period_type", periods.GREGORIAN_MONTHLY)
    if period_type not in periods.PERIOD_TYPES:
        raise _bad(path, f"has period_type = {period_type!r}; use one of {', '.join(periods.PERIOD_TYPES)}")
    pagume = head.get("pagume", periods.PAGUME_TO_NEHASE)
    if pagume not in periods.PAGUME_CHOICES:
        raise _bad(path, f"has pagume = {pagume!r}; use one of {', '.join(periods.PAGUME_CHOICES)}")
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
                   org_units, analyses, _indicator_mappings(path, doc.get("indicators", {})), period_type, pagume)


_DISAGGREGATIONS = {"": ("",), "hiv": HIV_STATUS.ids, "age_group": (*AGE_GROUPS, TARGET_GROUP),
                    "age_group/hiv": tuple(f"{a}/{h}" for a in AGE_GROUPS for h in HIV_STATUS.ids)}


def _indicator_mappings(path: Path, entries: dict) -> dict[str, IndicatorMapping]:
    out = {}
    for key, entry in entries.items():
        where = f"[indicators.{key}]"
        if key not in INDICATORS:
            raise _bad(path, f"names an unknown indicator {where} (known: {', '.join(INDICATORS)})")
        if not isinstance(entry, dict) or set(entry) - {"numerator", "denominator", "disaggregate",
                                                       "category_option_combos"}:
            raise _bad(path, f"has unknown settings in {where} (known: numerator, denominator, disaggregate, "
                             "category_option_combos)")
        counts_only = INDICATORS[key][2] is None
        if counts_only and entry.get("denominator"):
            raise _bad(path, f"gives {where} a denominator, but it is a count")
        disaggregate = entry.get("disaggregate", "")
        if disaggregate not in _DISAGGREGATIONS or (disaggregate and key != "screened"):
            raise _bad(path, f"has disaggregate = {disaggregate!r} in {where}; only [indicators.screened] takes "
                             "\"hiv\", \"age_group\" or \"age_group/hiv\"")
        combos = entry.get("category_option_combos", {})
        if not isinstance(combos, dict) or set(combos) - set(_DISAGGREGATIONS[disaggregate]):
            raise _bad(path, f"maps unknown groups in [indicators.{key}.category_option_combos]")
        missing = [g for g in _DISAGGREGATIONS[disaggregate] if g and g not in combos and g != TARGET_GROUP]
        if disaggregate and missing:
            raise _bad(path, f"does not map the groups {missing[:5]} of [indicators.{key}] (their counts would be lost)")
        out[key] = IndicatorMapping(
            _code(entry.get("numerator"), path, f"{where} numerator"),
            _code(entry["denominator"], path, f"{where} denominator") if entry.get("denominator") else "",
            disaggregate, {g: _code(c, path, f"[indicators.{key}.category_option_combos] {g}")
                           for g, c in combos.items()})
    return out


def period_of(month: str) -> str:
    """DHIS2's monthly ISO period: 2026-11 -> 202611."""
    return month.replace("-", "")


def data_values(cube: Counter, mapping: Mapping) -> list[dict]:
    """The data values of a count cube, summed per data element, period, org unit and combo
    (cells by month, or by day for Ethiopian-calendar periods)."""
    period_of_day = mapping.period_of()
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
        period = period_of(cell.month) if len(cell.month) == 7 else period_of_day(cell.month)
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
    _with_attribute_combo(out, mapping)
    return _sorted(out)


def _with_attribute_combo(values: list[dict], mapping: Mapping) -> None:
    if mapping.attribute_option_combo:
        for value in values:
            value["attributeOptionCombo"] = mapping.attribute_option_combo


def _sorted(values: list[dict]) -> list[dict]:
    return sorted(values, key=lambda v: (v["orgUnit"], v["period"], v["dataElement"], v.get("categoryOptionCombo", "")))


def indicator_values(groups: dict, mapping: Mapping) -> list[dict]:
    """The data values of the screening indicators: ``groups`` maps (post id, period) to the
    ``pathway.indicators.Figures`` of that slice (``store.care.indicators(group_of=...)``)."""
    if not mapping.indicators:
        return []
    unmapped = sorted({post for post, _ in groups if post not in mapping.org_units})
    if unmapped:
        raise UserError(f"These posts have screening visits but no DHIS2 org unit in {mapping.path}: "
                        f"{', '.join(unmapped)}.", "Add each under [org_units] as  \"<post id>\" = \"<org unit code>\".")
    out = []

    def add(element: str, period: str, org_unit: str, value: int, combo: str = "") -> None:
        if value or mapping.zeros:
            entry = {"dataElement": element, "period": period, "orgUnit": org_unit, "value": str(value)}
            if combo:
                entry["categoryOptionCombo"] = combo
            out.append(entry)

    for (post, period), figures in groups.items():
        org_unit = mapping.org_units[post]
        for key, spec in mapping.indicators.items():
            counts = figures.counts[key]
            if spec.disaggregate:
                split = {"hiv": figures.by_hiv, "age_group": figures.by_age_group,
                         "age_group/hiv": {f"{a}/{h}": n for (a, h), n in figures.by_age_and_hiv.items()}}
                for group, combo in spec.combos.items():
                    add(spec.numerator, period, org_unit, split[spec.disaggregate].get(group, 0), combo)
            else:
                add(spec.numerator, period, org_unit, counts.numerator)
            if spec.denominator:
                add(spec.denominator, period, org_unit, counts.denominator)
    _with_attribute_combo(out, mapping)
    return _sorted(out)


def write_data_value_set(store, cfg, path, *, date_from: str | None = None, date_to: str | None = None) -> dict:
    """Write the DHIS2 data values of the whole store to ``path`` (``.csv``: CSV, else JSON).

    Returns a summary: path, format, number of values, periods and org units.
    """
    mapping = load_mapping(cfg)
    # The store's statistics cells (its index: a fraction of a second at 200,000 exams), not a pass
    # over every record; tests/test_exchange_stats.py checks both give the very same values.
    ethiopian = mapping.period_type == periods.ETHIOPIAN_MONTHLY
    cube = stats.store_cube(store, date_from=date_from, date_to=date_to, by_day=ethiopian)
    values = data_values(cube, mapping)
    if mapping.indicators:
        period_of_day = mapping.period_of()
        _total, groups = store.care.indicators(date_from=date_from, date_to=date_to,
                                               group_of=lambda post, day: (post, period_of_day(day)))
        values = _sorted(values + indicator_values(groups, mapping))
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
            "mapping": str(mapping.path), "period_type": mapping.period_type}
