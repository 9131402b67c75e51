"""The pathway table (``pathway.toml``): which next visit a visit proposes, and the referral facilities.

The built-in table (``pathway.toml`` beside this module) follows WHO's 2021 guideline; an admin's
copy (``[pathway] rules_file``, else ``pathway.toml`` beside the configuration file or in the
data folder) replaces it section by section. ``load(cfg)`` reads and checks it (a mistake is a
``UserError`` naming the rule), ``Pathway.propose(situation, hiv, visit_day)`` gives the date.
"""
from __future__ import annotations

import calendar
import os
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ..errors import UserError
from .codes import FOLLOWUP_PURPOSE, HIV_STATUS

BUILT_IN = Path(__file__).with_name("pathway.toml")
FILE_NAME = "pathway.toml"

# What a visit can come to, in the order a visit is classified (appliance.pathway.records.situation).
SITUATIONS = ("treated", "referred", "positive_untreated", "hpv_positive_triage_negative", "hpv_negative",
              "via_or_cytology_negative", "not_screened")
_RULE_KEYS = {"id", "when", "hiv", "months", "purpose"}
_FACILITY_KEYS = {"id", "name", "registry_code"}
MAX_MONTHS = 120


@dataclass(frozen=True)
class Rule:
    id: str
    when: str
    hiv: tuple[str, ...]
    months: int
    purpose: str


@dataclass(frozen=True)
class Facility:
    id: str
    name: str
    registry_code: str = ""


@dataclass(frozen=True)
class Proposal:
    """The next visit a rule proposes: ``due_date`` None when the rule proposes none."""
    rule: str
    purpose: str
    months: int
    due_date: str | None


@dataclass(frozen=True)
class Pathway:
    source: Path
    rules: tuple[Rule, ...]
    facilities: tuple[Facility, ...]

    def rule_for(self, situation: str, hiv: str) -> Rule | None:
        for rule in self.rules:
            if rule.when == situation and hiv in rule.hiv:
                return rule
        return None

    def propose(self, situation: str, hiv: str, visit_day: str) -> Proposal | None:
        """The next visit for a visit on ``visit_day`` (ISO date) that came to ``situation``."""
        rule = self.rule_for(situation, hiv)
        if rule is None:
            return None
        due = add_months(date.fromisoformat(visit_day), rule.months).isoformat() if rule.months else None
        return Proposal(rule.id, rule.purpose, rule.months, due)

    def facility(self, facility_id: str) -> Facility | None:
        return next((f for f in self.facilities if f.id == facility_id), None)


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later (the month's last day when it is shorter: 31 Jan + 1 = 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def rules_path(cfg) -> Path:
    """The table in use: the configured file, the admin's copy, or the built-in one."""
    if cfg.pathway.rules_file:
        return Path(cfg.pathway.rules_file)
    candidates = []
    if cfg.config_file:
        candidates.append(Path(cfg.config_file).with_name(FILE_NAME))
    candidates.append(Path(cfg.data_dir) / FILE_NAME)
    return next((p for p in candidates if p.is_file()), BUILT_IN)


def _bad(path: Path, what: str) -> UserError:
    return UserError(f"The pathway table {path} {what}.",
                     f"Fix it (the built-in {BUILT_IN.name} explains every setting), then restart the appliance.")


def _read(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"The pathway table {path} cannot be read ({exc.strerror}).",
                        "Check [pathway] rules_file in the configuration.") from None
    except tomllib.TOMLDecodeError as exc:
        raise _bad(path, f"is not valid TOML ({exc})") from None


def _rules(path: Path, entries) -> tuple[Rule, ...]:
    if not isinstance(entries, list) or not entries:
        raise _bad(path, "has no [[rule]] entries")
    rules, seen = [], set()
    for number, entry in enumerate(entries, 1):
        where = f"[[rule]] number {number}" + (f" ({entry.get('id')!r})" if isinstance(entry, dict) else "")
        if not isinstance(entry, dict):
            raise _bad(path, f"has a {where} that is not a table")
        unknown = set(entry) - _RULE_KEYS
        if unknown:
            raise _bad(path, f"has an unknown setting {sorted(unknown)[0]!r} in {where}")
        rule_id = entry.get("id")
        if not isinstance(rule_id, str) or not rule_id.strip() or rule_id in seen:
            raise _bad(path, f"needs a unique id in {where}")
        seen.add(rule_id)
        if entry.get("when") not in SITUATIONS:
            raise _bad(path, f"has when = {entry.get('when')!r} in {where}; use one of {', '.join(SITUATIONS)}")
        hiv = entry.get("hiv", list(HIV_STATUS.ids))
        hiv = [hiv] if isinstance(hiv, str) else hiv
        if not isinstance(hiv, list) or not hiv or any(h not in HIV_STATUS for h in hiv):
            raise _bad(path, f"has hiv = {entry.get('hiv')!r} in {where}; use a list of {', '.join(HIV_STATUS.ids)}")
        months = entry.get("months")
        if isinstance(months, bool) or not isinstance(months, int) or not 0 <= months <= MAX_MONTHS:
            raise _bad(path, f"has months = {months!r} in {where}; use a whole number from 0 to {MAX_MONTHS}")
        purpose = entry.get("purpose", "rescreen")
        if purpose not in FOLLOWUP_PURPOSE:
            raise _bad(path, f"has purpose = {purpose!r} in {where}; use one of {', '.join(FOLLOWUP_PURPOSE.ids)}")
        rules.append(Rule(rule_id.strip(), entry["when"], tuple(hiv), months, purpose))
    return tuple(rules)


def _facilities(path: Path, entries) -> tuple[Facility, ...]:
    if not isinstance(entries, list):
        raise _bad(path, "has a [[facility]] list that is not a list of tables")
    out, seen = [], set()
    for number, entry in enumerate(entries, 1):
        where = f"[[facility]] number {number}"
        if not isinstance(entry, dict) or set(entry) - _FACILITY_KEYS:
            raise _bad(path, f"has an unknown setting in {where} (known: {', '.join(sorted(_FACILITY_KEYS))})")
        fid, name = entry.get("id"), entry.get("name")
        if not isinstance(fid, str) or not fid.strip() or fid in seen or fid == "other" or len(fid) > 64:
            raise _bad(path, f"needs a unique short id (not 'other') in {where}")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise _bad(path, f"needs a name in {where}")
        code = entry.get("registry_code", "")
        if not isinstance(code, str) or len(code) > 64:
            raise _bad(path, f"has a registry_code that is not a short text in {where}")
        seen.add(fid)
        out.append(Facility(fid.strip(), name.strip(), code.strip()))
    return tuple(out)


def parse(path: Path, doc: dict, base: dict | None = None) -> Pathway:
    unknown = set(doc) - {"rule", "facility"}
    if unknown:
        raise _bad(path, f"has an unknown section {sorted(unknown)[0]!r} (known: rule, facility)")
    merged = {**(base or {}), **doc}
    return Pathway(path, _rules(path, merged.get("rule")), _facilities(path, merged.get("facility", [])))


_cache: dict[tuple, Pathway] = {}


def load_built_in() -> Pathway:
    """The built-in table (WHO's intervals, no facilities)."""
    return parse(BUILT_IN, _read(BUILT_IN))


def load(cfg) -> Pathway:
    """The pathway table in use (read again when the file changes)."""
    path = rules_path(cfg)
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = None
    key = (str(path), stamp)
    found = _cache.get(key)
    if found is None:
        base = _read(BUILT_IN)
        found = parse(path, _read(path), base if path != BUILT_IN else None)
        _cache.clear()
        _cache[key] = found
    return found
