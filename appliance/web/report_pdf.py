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
from .context import AppContext, _, request_language

BRAND = (140, 31, 85)
RED = (179, 18, 27)
AMBER = (154, 91, 0)
GREY = (91, 91, 102)


class _Report(FPDF):
    footer_text = ""

    def footer(self):
        self.set_y(-12)
        self.set_font(self.family_name, "", 8)
        self.set_text_color(*GREY)
        self.cell(0, 5, f"{self.footer_text}  ·  {self.page_no()}/{{nb}}", align="C")


def exam_report_pdf(ctx: AppContext, exam: dict, patient: dict) -> bytes:
    r = views.result_view(exam["result"])
    pdf = _Report(format="A4", unit="mm")
    pdf.family_name = register_pdf_fonts(pdf)
    pdf.footer_text = _("Decision support only: the clinician's decision is the diagnosis.")
    pdf.set_title(_("Breast and cervical cancer diagnosis support: report"))
    pdf.set_creator("BCCDMS")
    pdf.set_lang(request_language(ctx))
    pdf.set_auto_page_break(True, margin=16)
    pdf.add_page()
    family = pdf.family_name
    width = pdf.epw

    def line(text: str, size: float = 10, style: str = "", color=(0, 0, 0), h: float = 5.5):
        pdf.set_font(family, style, size)
        pdf.set_text_color(*color)
        pdf.multi_cell(width, h, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(text: str):
        pdf.ln(2)
        line(text, 12, "B", BRAND, 7)

    # Title block
    line(_("Breast and cervical cancer diagnosis support: report"), 15, "B", BRAND, 8)
    line(f"{ctx.cfg.post.name} ({ctx.store.post_id})", 10, color=GREY)
    line(f"{_('Exam')} {exam['uuid'][:8]} · {views.local_time(exam.get('created_at'), both=True)}", 9, color=GREY)
    if r["demo"]:
        pdf.ln(1)
        pdf.set_fill_color(*RED)
        pdf.set_text_color(255, 255, 255)
        pdf.set_font(family, "B", 11)
        pdf.multi_cell(width, 7, _("DEMO RESULT: made by untrained demo models. Do not use it for a diagnosis."),
                       fill=True, align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    heading(_("Patient"))
    for label, value in ((_("Name"), patient.get("full_name", "")), (_("Card no."), patient.get("pid", "")),
                         (_("Date of birth"), views.date_text(patient.get("birth_date"), both=True)),
                         (_("Age at the exam"), views.age_text(patient, on=exam.get("created_at"))),
                         (_("Phone"), views.phone_text(patient.get("phone"))),
                         (_("Address"), patient.get("address", ""))):
        if value:
            line(f"{label}: {value}", 10)

    heading(r["analysis_name"])
    top = pdf.get_y()
    image_w = width * 0.42
    try:
        jpeg = ctx.store.images.thumbnail(exam["image"]["sha256"], size=1024)
        pdf.image(io.BytesIO(jpeg), x=pdf.l_margin, y=top, w=image_w)
        image_bottom = pdf.get_y()
    except (OSError, KeyError, ValueError):
        image_bottom = top
    # Result beside the image
    left = pdf.l_margin + image_w + 6
    col = width - image_w - 6
    pdf.set_xy(left, top)

    def right(text: str, size: float = 10, style: str = "", color=(0, 0, 0), h: float = 5.5):
        pdf.set_x(left)
        pdf.set_font(family, style, size)
        pdf.set_text_color(*color)
        pdf.multi_cell(col, h, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    if r["out_of_scope"]:
        right(_("This image does not look like the images the model was trained on. The result may be meaningless: check the image and the chosen analysis."), 9, "B", RED)
    if r["uncertain"]:
        right(_("Uncertain — refer: the model is not confident. Refer the patient or the slide for expert review."), 9, "B", AMBER)
    right(views.path_text(r), 12, "B")
    for skipped in r["skipped"]:
        right(skipped["text"], 9, "B", AMBER)
    for step in r["steps"]:
        pdf.ln(1)
        right(step["model_name"], 9, "B", GREY)
        for row in step["rows"]:
            y = pdf.get_y()
            pdf.set_x(left)
            pdf.set_font(family, "B" if row["top"] else "", 9)
            pdf.set_text_color(0, 0, 0)
            pdf.cell(col * 0.45, 5, row["name"])
            bar_x, bar_w = left + col * 0.45, col * 0.38
            pdf.set_fill_color(236, 232, 229)
            pdf.rect(bar_x, y + 1, bar_w, 3, style="F")
            pdf.set_fill_color(*(BRAND if row["top"] else (154, 143, 137)))
            pdf.rect(bar_x, y + 1, max(0.3, bar_w * row["p"]), 3, style="F")
            pdf.set_xy(bar_x + bar_w, y)
            pdf.cell(col * 0.17, 5, f"{row['p'] * 100:.1f} %", align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for warning in r["quality_warnings"]:
        right(_(warning), 8, color=AMBER)
    mixed = len(r["packs"]) > 1
    packs = (f"{_('Model packs')} {', '.join(r['packs'])}" if mixed
             else f"{_('Model pack')} {r['pack'].get('id', '')} {r['pack'].get('version', '')}")
    right(f"{packs} · " + ", ".join(f"{s['model']} {s['version']}" + (f" ({s['pack']})" if mixed else "")
                                     for s in r["steps"]), 7, color=GREY, h=4)
    pdf.set_y(max(pdf.get_y(), image_bottom) + 2)

    heading(_("Clinician's decision"))
    decision = exam.get("decision")
    if decision:
        relation = views.decision_relation(decision)
        line(f"{views.label_name(exam['analysis'], decision.get('label'))} ({relation})", 11, "B")
        if decision.get("note"):
            line(decision["note"], 10)
        line(f"{decision.get('by', '')} · {views.local_time(decision.get('at'))}", 9, color=GREY)
    else:
        line(_("Not decided yet."), 10)
    pdf.ln(8)
    line(f"{_('Signature')}: ______________________", 10)
    return bytes(pdf.output())
