"""``appliance diagnose IMAGE... --analysis ID [--json] [--models DIR] [--save --patient PID [--name NAME]]``

Runs the analysis on each image with the models loaded once (batch digitising of a slide
archive uses it). A bad image gets its error line and the others still run; the exit
status is non-zero at the end if any failed. ``--save`` stores each result through the
record store exactly as the kiosk does.
"""
from __future__ import annotations

import json
import os
import sys

from .. import catalogue
from ..errors import UserError

ACTOR = "cli"


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "diagnose", parents=[common], help="run an analysis on image files",
        description="Classify one or more images with the installed models and print the result.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, TIFF, BMP, WebP)")
    p.add_argument("--analysis", required=True, metavar="ID",
                   help=f"which analysis: {', '.join(catalogue.ANALYSES)}")
    p.add_argument("--json", action="store_true", help="print one JSON object per image, one per line")
    p.add_argument("--models", metavar="DIR", help="use only the model pack in DIR (it must verify)")
    p.add_argument("--save", action="store_true", help="store each result as an exam of --patient")
    p.add_argument("--patient", metavar="PID", help="the patient's id (with --save)")
    p.add_argument("--name", metavar="NAME", help="the patient's full name, to register a new PID (with --save)")
    p.set_defaults(func=run)


def run(args, cfg) -> int:
    analysis = catalogue.analysis(args.analysis)
    if args.save and not args.patient:
        raise UserError("--save needs the patient: add --patient PID.", "Example: --save --patient JU-000123.")
    if not args.save and (args.patient or args.name):
        raise UserError("--patient and --name are only used with --save.", "Add --save to store the results.")
    from ..inference.engine import Engine

    engine = Engine.from_config(cfg, models_dir=args.models)
    if analysis.id not in engine.analyses():
        engine.runtime()                       # a missing runtime says so itself
        raise UserError(f"No model for {analysis.name} is installed"
                        + (f" ({engine.problems[0].rstrip('.')})." if engine.problems else "."),
                        "Install a model pack with 'appliance models install PATH', or build the demo pack "
                        "with 'bccdms-export demo --out weights/demo'.")
    saver = ExamSaver(cfg, args.patient, args.name) if args.save else None
    failures, user_errors_only = 0, True
    try:
        for path in args.images:
            try:
                result = engine.diagnose(path, analysis.id, name=path)
                saved = saver.save(result) if saver else None
            except UserError as exc:
                failures += 1
                report_error(path, exc.message, exc.hint, args.json)
                continue
            except Exception as exc:  # noqa: BLE001 - one image's bug must not stop a batch
                failures += 1
                user_errors_only = False
                report_error(path, f"an unexpected error happened ({type(exc).__name__}: {exc}).",
                             "Run again with BCCDMS_DEBUG=1 and send the output to the technician.", args.json)
                if os.environ.get("BCCDMS_DEBUG"):
                    raise
                continue
            if args.json:
                doc = result.to_json()
                if saved is not None:
                    doc["saved"] = saved
                print(json.dumps(doc, ensure_ascii=False), flush=True)
            else:
                print(human_report(result, saved, colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ),
                      flush=True)
    finally:
        if saver:
            saver.close()
    if failures:
        print(f"appliance: {failures} of {len(args.images)} images could not be analysed.", file=sys.stderr)
        return UserError.exit_code if user_errors_only else 1
    return 0


def report_error(path: str, message: str, hint: str | None, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"image": path, "error": message, "hint": hint}, ensure_ascii=False), flush=True)
    print(f"appliance: {path}: {message}" + (f" {hint}" if hint else ""), file=sys.stderr, flush=True)


class ExamSaver:
    """Writes results through the record store as the kiosk does; the patient is registered
    (when new) with the first result that is saved, so bad images change nothing."""

    def __init__(self, cfg, pid: str, name: str | None):
        from ..store import Store

        self.store = Store.open(cfg)
        self.pid = pid
        self.name = name
        self.patient = self.store.patients.by_pid(pid)
        if self.patient is None and not (name and name.strip()):
            self.store.close()
            raise UserError(f"There is no patient {pid} yet.", "Give the patient's full name with --name to register them.")

    def save(self, result) -> dict:
        from ..store.images import ImageFacts

        if self.patient is None:
            self.patient = self.store.patients.register(self.pid, self.name.strip(), by=ACTOR)
        # The engine's decode found the image's facts: the store neither hashes nor parses it again.
        exam = {"patient_uuid": self.patient["uuid"], "analysis": result.analysis, "source": "cli",
                "result": result.to_json(), "label": result.label, "demo": result.demo}
        saved = self.store.exams.save(exam, result.image_bytes, by=ACTOR, patient=self.patient,
                                      image_facts=ImageFacts.from_info(result.image_info))
        return {"exam": saved["uuid"], "patient": self.pid}

    def close(self) -> None:
        self.store.close()


# The out-of-scope gate's reason (result "out_of_scope.reason") in the human report.
OUT_OF_SCOPE_REASONS = {"features": " (what the model sees)", "appearance": " (its colours and texture)",
                        "blank": " (a blank or empty frame)"}


def human_report(result, saved: dict | None, colour: bool = False) -> str:
    red = ("\033[1;31m", "\033[0m") if colour else ("", "")
    analysis = catalogue.analysis(result.analysis)
    lines = [f"{result.image_name or 'image'}"]
    if result.demo:
        lines.append(f"  {red[0]}DEMO: untrained demo models; this result means nothing.{red[1]}")
    scope = result.out_of_scope or {}
    if scope.get("flagged"):
        why = OUT_OF_SCOPE_REASONS.get(scope.get("reason"), "")
        lines.append(f"  {red[0]}OUT OF SCOPE: the image does not look like the images the model was trained on"
                     f"{why}; the result may be meaningless: check the image and the analysis.{red[1]}")
    lines.append(f"  {analysis.name}: {label_text(result)}"
                 + ("  (UNCERTAIN: refer for a second opinion)" if result.uncertain else ""))
    for number, step in enumerate(result.steps, 1):
        spec = catalogue.model(step.model)
        lines.append(f"  Step {number}: {spec.name}  [{step.model} {step.version}"
                     f"{', DEMO' if step.demo else ''}]" + ("  uncertain" if step.uncertain else ""))
        for class_id, p in sorted(step.probabilities.items(), key=lambda kv: -kv[1]):
            mark = "  <" if class_id == step.top else ""
            lines.append(f"      {spec.class_name(class_id):<28}{100 * p:6.1f} %{mark}")
    lines.append("  Path: " + " -> ".join(catalogue.model(m).class_name(c) for m, c in result.path))
    for skipped in result.skipped:
        lines.append(f"  Not run: {catalogue.model(skipped['model']).name} ({skipped['reason']})")
    if result.quality.ok:
        lines.append("  Quality: OK")
    for warning in result.quality.warnings:
        lines.append(f"  Quality: {warning['message']}")
    timings = ", ".join(f"{k} {v:.0f} ms" for k, v in result.timings_ms.items())
    lines.append(f"  Timings: {timings}")
    lines.append(f"  Models: pack {result.pack['id']} {result.pack['version']}, {result.runtime} {result.precision}")
    if saved:
        lines.append(f"  Saved: exam {saved['exam']} for patient {saved['patient']}")
    return "\n".join(lines)


def label_text(result) -> str:
    """'Ductal carcinoma (Grade 2)': the label, with attribute steps such as the grade."""
    analysis = catalogue.analysis(result.analysis)
    names = {m: catalogue.model(m) for m, _ in result.path}
    label_model = next(m for m, c in reversed(result.path)
                       if c == result.label and m not in analysis.attribute_models())
    text = names[label_model].class_name(result.label)
    extras = [names[m].class_name(c) for m, c in result.path if m in analysis.attribute_models()]
    return text + (f" ({', '.join(extras)})" if extras else "")
