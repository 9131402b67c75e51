"""Where a champion/challenger comparison is kept: in the challenger's model card and manifest.

- ``compare`` on model folders (from ``export``) writes it into each ``model.json`` (key
  ``comparison``: the post's summary and the model's own section) and each model card;
  ``pack`` then carries it into the pack manifest (``comparison`` at the top, the verdict the post
  reads) and the pack's cards.
- ``compare`` on a pack, with ``--key``, writes it into the pack's manifest and cards and signs
  the manifest again (without the key, only the JSON file is written).
- ``pack --recommended`` refuses models whose comparison fails the rule (``promotion.py``) unless
  ``--override "reason"``; the reason is printed on the cards and carried in the manifest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from appliance.errors import UserError

from .compare import summary
from .packing import read_model_folder, write_model_json

MARK = "<!-- bccdms: champion/challenger comparison -->"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def card_section(doc: dict[str, Any], model_id: str, override: str | None = None) -> str:
    """The card's comparison section (from a model's ``comparison`` in model.json)."""
    s, head = doc["model"], doc["summary"]
    lines = [MARK, "## Champion / challenger (locked held-out set)", "",
             f"Against {head['champion'].get('pack_id') or 'the champion'} {head['champion'].get('version') or ''} "
             f"on {s['exams']} exams ({s['images']} images) of {s['patients']} patients from {s['posts']} posts, held-out "
             f"set `{head['holdout_id'][:12]}`; labels: "
             + ", ".join(f"{k} {v}" for k, v in sorted(head["label_sources"].items())) + ". Exam level: "
             "the mean of the first model's calibrated probabilities over the exam's usable fields.", "",
             "| figure | champion | challenger | change (95 % interval, patients resampled) |", "|---|---|---|---|"]
    for key in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "ece", "refer_coverage"):
        a, b = s["champion"].get(key), s["challenger"].get(key)
        if a is None and b is None:
            continue
        d = s["difference"].get(key) or {}
        change = "" if d.get("point") is None else (
            f"{100 * d['point']:+.1f} points" + (f" ({100 * d['low']:+.1f} to {100 * d['high']:+.1f})"
                                                 if d.get("low") is not None else ""))
        lines.append(f"| {key.replace('_', ' ')} | {_pct(a)} | {_pct(b)} | {change} |")
    m = s["mcnemar"]
    lines += ["", f"McNemar (exact): champion alone right on {m['champion_only_right']} exams, challenger alone on "
                  f"{m['challenger_only_right']}, p = {m['p_value']:.3g}.", "",
              f"Promotion rule (`export/promotion.py`): {head['rule']}.", ""]
    lines += [f"- {c}" for c in s.get("checks", [])]
    verdict = "passes the rule" if s.get("passes") else "FAILS the rule: " + "; ".join(s.get("reasons") or [])
    lines += ["", f"This model {verdict}."]
    if override:
        lines += ["", f"**Recommended by the ML team against the rule.** Reason given: {override}"]
    return "\n".join(lines) + "\n"


def _with_section(text: str, section: str) -> str:
    return text.split(MARK)[0].rstrip() + "\n\n" + section


def _rewrite(path: Path, text: str) -> None:
    """A new file (never through a hard link or symlink into another pack)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def model_record(comparison: dict[str, Any], model_id: str) -> dict[str, Any]:
    return {"summary": summary(comparison), "model": comparison["models"][model_id]}


def write_into_model_folders(comparison: dict[str, Any], folders: dict[str, Path]) -> list[Path]:
    """Each compared model folder's ``model.json`` and card get the comparison; returns the files."""
    written = []
    for model_id, folder in folders.items():
        if model_id not in comparison["models"]:
            continue
        meta, files = read_model_folder(folder)
        meta["comparison"] = model_record(comparison, model_id)
        written.append(write_model_json(folder, meta))
        if "card" in files:
            _rewrite(files["card"], _with_section(files["card"].read_text(), card_section(meta["comparison"], model_id)))
            written.append(files["card"])
    return written


def write_into_pack(comparison: dict[str, Any], pack: Path, private_key) -> Path:
    """The pack's manifest (summary at the top, each model's section in its entry) and cards, re-signed."""
    from appliance.inference.pack import write_manifest
    manifest = json.loads((pack / "manifest.json").read_text())
    manifest.pop("files", None)
    manifest["comparison"] = summary(comparison)
    for model_id in comparison["models"]:
        entry = manifest["models"][model_id]
        entry["comparison"] = comparison["models"][model_id]
        card = entry["files"].get("card")
        if card:
            path = pack / card
            _rewrite(path, _with_section(path.read_text(), card_section(model_record(comparison, model_id), model_id)))
    return write_manifest(pack, manifest, private_key)


def pack_comparison(entries: dict[str, dict], metas: dict[str, dict], recommended: bool,
                    override: str | None) -> dict[str, Any] | None:
    """The manifest's ``comparison`` for a pack built from model folders (None: none was compared).

    ``recommended``: refuse (UserError) unless every model has a comparison that passes the rule,
    or ``override`` gives the reason to recommend it anyway."""
    records = {m: meta["comparison"] for m, meta in metas.items() if meta.get("comparison")}
    if recommended:
        missing = [m for m in metas if m not in records]
        if missing:
            raise UserError(f"{', '.join(missing)} has no champion/challenger comparison, so it cannot be "
                            "recommended.", "Run 'bccdms-export compare --challenger MODEL_DIR ...' first.")
    if not records:
        return None
    head = dict(next(iter(records.values()))["summary"])
    ids = {r["summary"]["holdout_id"] for r in records.values()}
    if len(ids) > 1:
        raise UserError("The models were compared on different held-out sets.",
                        "Compare every model of the pack on the same held-out set.")
    head["models"] = {m: r["summary"]["models"][m] for m, r in records.items()}
    failing = {m: r["model"]["reasons"] for m, r in records.items() if not r["model"].get("passes")}
    head["rule_passed"] = not failing
    head["recommended"] = not failing
    head["override"] = None
    if failing and recommended:
        why = "; ".join(f"{m}: {', '.join(r)}" for m, r in failing.items())
        if not override:
            raise UserError(f"The challenger fails the promotion rule ({why}).",
                            "Do not recommend it; or, if the ML team has a reason, pass --override \"reason\" "
                            "(the reason is printed on the model cards).")
        head["recommended"], head["override"] = True, override.strip()
    for model_id, record in records.items():
        entries[model_id]["comparison"] = record["model"]
    return head


def card_text(card: Path, metas: dict[str, dict], model_id: str, override: str | None) -> str | None:
    """The card of a model in a new pack, with its comparison section (and the override's reason)."""
    record = metas[model_id].get("comparison")
    if not record or not card.is_file():
        return None
    return _with_section(card.read_text(), card_section(record, model_id, override))

