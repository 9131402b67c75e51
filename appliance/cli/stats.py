"""``appliance stats [--json] [--dhis2 FILE] [--from DATE] [--to DATE] [--include-demo]``: counts of the records.

Prevalence (``by_class``) counts only exams a clinician decided; exams made with demo models are
counted apart (``demo_exams``) and exams without a decision in ``awaiting_decision``.
"""
from __future__ import annotations

import json

from ..errors import UserError


def register(subparsers, common) -> None:
    p = subparsers.add_parser("stats", parents=[common], help="statistics of the exams (text, JSON or DHIS2)",
                              description="Counts of exams by analysis, class, month, decision, post and age group.")
    p.add_argument("--json", action="store_true", help="print one JSON object (exams, patients, by_analysis, by_class, "
                                                       "demo_exams, awaiting_decision, …)")
    p.add_argument("--dhis2", metavar="FILE", help="also write a DHIS2 data value set to FILE")
    p.add_argument("--from", dest="date_from", metavar="DATE", help="first day counted (YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", metavar="DATE", help="last day counted (YYYY-MM-DD)")
    p.add_argument("--include-demo", action="store_true",
                   help="count exams made with demo (untrained) models like the others (left out by default)")
    p.set_defaults(func=cmd_stats)


def cmd_stats(args, cfg) -> int:
    from ..store import Store
    with Store.open(cfg) as store:
        stats = store.stats(date_from=args.date_from, date_to=args.date_to, include_demo=args.include_demo)
        # The screening programme's indicators (visits, treatment, referral, follow-up), by post too.
        stats["screening"] = store.care.summary(date_from=args.date_from, date_to=args.date_to, by_post=True)
        if args.dhis2:
            try:
                from ..exchange.dhis2 import write_data_value_set
            except ImportError:
                raise UserError("The DHIS2 export is not available in this version of the appliance.",
                                "Use 'appliance stats --json' or the CSV export instead.") from None
            write_data_value_set(store, cfg, args.dhis2, date_from=args.date_from, date_to=args.date_to)
    if args.json:
        print(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        print(render(stats))
    if args.dhis2 and not args.json:
        print(f"DHIS2 data value set written to {args.dhis2}.")
    return 0


def render(stats: dict) -> str:
    from .. import catalogue
    span = ""
    if stats.get("date_from") or stats.get("date_to"):
        span = f" from {(stats.get('date_from') or '…')[:10]} to {(stats.get('date_to') or '…')[:10]}"
    demo = "included" if stats.get("include_demo") else "not counted"
    lines = [f"{stats.get('post_name', '')} ({stats.get('post_id', '')}){span}",
             f"exams: {stats['exams']}   patients registered: {stats['patients']}   "
             f"patients examined: {stats['patients_examined']}",
             f"decided: {stats['decided']}   awaiting decision: {stats['awaiting_decision']}   "
             f"referred without a class: {stats['referred']}   made with demo models ({demo}): {stats['demo_exams']}",
             "classes are the clinicians' decisions; exams awaiting a decision are not counted in a class"]
    for analysis, n in stats["by_analysis"].items():
        name = catalogue.ANALYSES[analysis].name if analysis in catalogue.ANALYSES else analysis
        classes = ", ".join(f"{label} {count}" for label, count in stats["by_class"].get(analysis, {}).items())
        waiting = stats["awaiting_by_analysis"].get(analysis, 0)
        lines.append(f"  {name}: {n}  (decided: {classes or 'none'}; awaiting decision: {waiting})")
    if stats["by_decision"]:
        lines.append("decisions: " + ", ".join(f"{k} {v}" for k, v in stats["by_decision"].items()))
    if stats["by_month"]:
        lines.append("by month: " + ", ".join(f"{k} {v}" for k, v in stats["by_month"].items()))
    screening = (stats.get("screening") or {}).get("indicators")
    if screening:
        from ..pathway.indicators import DEFINITIONS
        lines.append("screening programme (numerator / denominator):")
        for key, (name, _num, den) in DEFINITIONS.items():
            entry = screening[key]
            if den is None:
                lines.append(f"  {name}: {entry['numerator']}")
            else:
                share = f" = {entry['percent']} %" if entry["percent"] is not None else ""
                lines.append(f"  {name}: {entry['numerator']} / {entry['denominator']}{share}")
    return "\n".join(lines)
