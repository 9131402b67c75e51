"""The exam report as a PDF (fpdf2): health post, patient, image, model result, decision.

Written in the reader's language; dates in their calendar with the other calendar beside them
(a report travels to a hospital that may count in the other one). Fonts are the box's Noto TTFs
(Latin + Ethiopic as fallback), embedded, so Amharic text prints correctly on any computer the
PDF is opened on and can be extracted back as text.
"""
from __future__ import annotations

import io

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from ..i18n.fonts import register_pdf_fonts
from . import views
from .context import AppContext
from .request import _, request_language

BRAND = (140, 31, 85)
RED = (179, 18, 27)
AMBER = (154, 91, 0)
GREY = (91, 91, 102)


class _Report(FPDF):
    """An A4 report in the box's Noto font; ``column_box`` (left, width) is where ``say`` writes (the full width,
    or the result's column beside the image)."""
    footer_text = ""

    def setup(self, lang: str) -> None:
        self.family_name = register_pdf_fonts(self)
        self.footer_text = _("Decision support only: the clinician's decision is the diagnosis.")
        self.set_title(_("Breast and cervical cancer diagnosis support: report"))
        self.set_creator("BCCDMS")
        self.set_lang(lang)
        self.set_auto_page_break(True, margin=16)
        self.add_page()
        self.column_box = (self.l_margin, self.epw)

    def footer(self):
        self.set_y(-12)
        self.set_font(self.family_name, "", 8)
        self.set_text_color(*GREY)
        self.cell(0, 5, f"{self.footer_text}  ·  {self.page_no()}/{{nb}}", align="C")

    def say(self, text: str, size: float = 10, style: str = "", color=(0, 0, 0), h: float = 5.5):
        left, width = self.column_box
        self.set_x(left)
        self.set_font(self.family_name, style, size)
        self.set_text_color(*color)
        self.multi_cell(width, h, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(self, text: str):
        self.ln(2)
        self.say(text, 12, "B", BRAND, 7)


def exam_report_pdf(ctx: AppContext, exam: dict, patient: dict) -> bytes:
    r = views.result_view(exam["result"])
    pdf = _Report(format="A4", unit="mm")
    pdf.setup(request_language(ctx))
    _title(pdf, ctx, exam, r)
    _patient(pdf, exam, patient)
    pdf.heading(r["analysis_name"])
    _result(pdf, ctx, exam, r)
    _decision(pdf, exam)
    return bytes(pdf.output())


def _title(pdf: _Report, ctx: AppContext, exam: dict, r: dict) -> None:
    pdf.say(_("Breast and cervical cancer diagnosis support: report"), 15, "B", BRAND, 8)
    pdf.say(f"{ctx.cfg.post.name} ({ctx.store.post_id})", 10, color=GREY)
    pdf.say(f"{_('Exam')} {exam['uuid'][:8]} · {views.local_time(exam.get('created_at'), both=True)}", 9, color=GREY)
    if r["demo"]:
        pdf.ln(1)
        pdf.set_fill_color(*RED)
        pdf.set_text_color(255, 255, 255)
        pdf.set_font(pdf.family_name, "B", 11)
        pdf.multi_cell(pdf.epw, 7, _("DEMO RESULT: made by untrained demo models. Do not use it for a diagnosis."),
                       fill=True, align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _patient(pdf: _Report, exam: dict, patient: dict) -> None:
    pdf.heading(_("Patient"))
    for label, value in ((_("Name"), patient.get("full_name", "")), (_("Card no."), patient.get("pid", "")),
                         (_("Date of birth"), views.date_text(patient.get("birth_date"), both=True)),
                         (_("Age at the exam"), views.age_text(patient, on=exam.get("created_at"))),
                         (_("Phone"), views.phone_text(patient.get("phone"))),
                         (_("Address"), patient.get("address", ""))):
        if value:
            pdf.say(f"{label}: {value}", 10)


def _result(pdf: _Report, ctx: AppContext, exam: dict, r: dict) -> None:
    """The image on the left, the result in a column beside it."""
    top = pdf.get_y()
    image_w = pdf.epw * 0.42
    try:
        jpeg = ctx.store.images.thumbnail(exam["image"]["sha256"], size=1024)
        pdf.image(io.BytesIO(jpeg), x=pdf.l_margin, y=top, w=image_w)
        image_bottom = pdf.get_y()
    except (OSError, KeyError, ValueError):
        image_bottom = top
    pdf.column_box = (pdf.l_margin + image_w + 6, pdf.epw - image_w - 6)
    pdf.set_xy(pdf.column_box[0], top)
    if r["out_of_scope"]:
        pdf.say(_("This image does not look like the images the model was trained on. The result may be meaningless: check the image and the chosen analysis."), 9, "B", RED)
    if r["uncertain"]:
        pdf.say(_("Uncertain — refer: the model is not confident. Refer the patient or the slide for expert review."), 9, "B", AMBER)
    pdf.say(views.path_text(r), 12, "B")
    for skipped in r["skipped"]:
        pdf.say(skipped["text"], 9, "B", AMBER)
    for step in r["steps"]:
        pdf.ln(1)
        pdf.say(step["model_name"], 9, "B", GREY)
        for row in step["rows"]:
            _probability_row(pdf, row)
    for warning in r["quality_warnings"]:
        pdf.say(_(warning), 8, color=AMBER)
    mixed = len(r["packs"]) > 1
    packs = (f"{_('Model packs')} {', '.join(r['packs'])}" if mixed
             else f"{_('Model pack')} {r['pack'].get('id', '')} {r['pack'].get('version', '')}")
    pdf.say(f"{packs} · " + ", ".join(f"{s['model']} {s['version']}" + (f" ({s['pack']})" if mixed else "")
                                       for s in r["steps"]), 7, color=GREY, h=4)
    pdf.set_y(max(pdf.get_y(), image_bottom) + 2)
    pdf.column_box = (pdf.l_margin, pdf.epw)


def _probability_row(pdf: _Report, row: dict) -> None:
    """One class: its name, a bar and the percentage."""
    left, col = pdf.column_box
    y = pdf.get_y()
    pdf.set_x(left)
    pdf.set_font(pdf.family_name, "B" if row["top"] else "", 9)
    pdf.set_text_color(0, 0, 0)
    pdf.cell(col * 0.45, 5, row["name"])
    bar_x, bar_w = left + col * 0.45, col * 0.38
    pdf.set_fill_color(236, 232, 229)
    pdf.rect(bar_x, y + 1, bar_w, 3, style="F")
    pdf.set_fill_color(*(BRAND if row["top"] else (154, 143, 137)))
    pdf.rect(bar_x, y + 1, max(0.3, bar_w * row["p"]), 3, style="F")
    pdf.set_xy(bar_x + bar_w, y)
    pdf.cell(col * 0.17, 5, f"{row['p'] * 100:.1f} %", align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _decision(pdf: _Report, exam: dict) -> None:
    pdf.heading(_("Clinician's decision"))
    decision = exam.get("decision")
    if decision:
        relation = views.decision_relation(decision)
        pdf.say(f"{views.label_name(exam['analysis'], decision.get('label'))} ({relation})", 11, "B")
        if decision.get("note"):
            pdf.say(decision["note"], 10)
        pdf.say(f"{decision.get('by', '')} · {views.local_time(decision.get('at'))}", 9, color=GREY)
    else:
        pdf.say(_("Not decided yet."), 10)
    pdf.ln(8)
    pdf.say(f"{_('Signature')}: ______________________", 10)
