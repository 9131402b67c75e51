"""The exam report as a PDF (fpdf2): health post, patient, image, model result, decision.

Written in the reader's language; dates in their calendar with the other calendar beside them
(a report travels to a hospital that may count in the other one). Fonts are the box's Noto TTFs
(Latin, with Ethiopic and symbols as fallbacks), embedded, so Amharic text and the cascade's
arrows print correctly on any computer the PDF is opened on and can be extracted back as text.

Layout: one column, top to bottom. The image sits in a fixed box (its aspect kept inside it,
whatever its shape: square Pap smear fields, 4:3 colposcope photos, wide slides) and every line
of text flows below that box, never beside or over it. A block that does not fit in what is
left of the page (the image box, the decision with its signature line) starts a new page.
"""
from __future__ import annotations

import io

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from PIL import Image

from ..i18n.fonts import register_pdf_fonts
from . import views
from .context import AppContext
from .request import _, request_language

BRAND = (140, 31, 85)
RED = (179, 18, 27)
AMBER = (154, 91, 0)
GREY = (91, 91, 102)
# The image box (mm): the image is scaled to fit inside it, keeping its aspect.
IMAGE_BOX_W = 110
IMAGE_BOX_H = 80
GAP = 4
# The decision block (heading, class, note, who and when, signature) is kept on one page.
DECISION_BLOCK_H = 48


class _Report(FPDF):
    """An A4 report in the box's Noto fonts; ``say`` writes full-width lines that break pages themselves."""
    footer_text = ""

    def setup(self, lang: str) -> None:
        self.family_name = register_pdf_fonts(self)
        self.footer_text = _("Decision support only: the clinician's decision is the diagnosis.")
        self.set_title(_("Breast and cervical cancer diagnosis support: report"))
        self.set_creator("BCCDMS")
        self.set_lang(lang)
        self.set_auto_page_break(True, margin=16)
        self.add_page()

    def _render_styled_text_line(self, *args, **kwargs):
        # fpdf2 2.8.9 sets the font of a line that starts in a fallback font (Ethiopic) inside
        # that line's q/Q, yet notes it as set for the page: the next line, drawn without a
        # font change, then came out in the Ethiopic font ("os06 (" for "75.1 %"). Each line
        # states its own font.
        try:
            return super()._render_styled_text_line(*args, **kwargs)
        finally:
            self.current_font_is_set_on_page = False

    def footer(self):
        self.set_y(-12)
        self.set_font(self.family_name, "", 8)
        self.set_text_color(*GREY)
        self.cell(0, 5, f"{self.footer_text}  ·  {self.page_no()}/{{nb}}", align="C")

    def say(self, text: str, size: float = 10, style: str = "", color=(0, 0, 0), h: float = 5.5):
        self.set_x(self.l_margin)
        self.set_font(self.family_name, style, size)
        self.set_text_color(*color)
        self.multi_cell(self.epw, h, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(self, text: str):
        self.ln(2)
        self.say(text, 12, "B", BRAND, 7)

    def room_for(self, height: float) -> None:
        """Start a new page unless ``height`` mm still fit above the bottom margin."""
        if self.get_y() + height > self.page_break_trigger:
            self.add_page()


def exam_report_pdf(ctx: AppContext, exam: dict, patient: dict) -> bytes:
    r = views.result_view(exam["result"])
    pdf = _Report(format="A4", unit="mm")
    pdf.setup(request_language(ctx))
    _title(pdf, ctx, exam, r)
    _patient(pdf, exam, patient)
    pdf.heading(r["analysis_name"])
    _image(pdf, ctx, exam)
    _result(pdf, r)
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


def image_box(width_px: int, height_px: int) -> tuple[float, float]:
    """The image's size on the page (mm): as large as fits in the fixed box, aspect kept."""
    scale = min(IMAGE_BOX_W / max(1, width_px), IMAGE_BOX_H / max(1, height_px))
    return width_px * scale, height_px * scale


def _image(pdf: _Report, ctx: AppContext, exam: dict) -> None:
    """The analysed image in its box; the text goes on below it."""
    try:
        jpeg = ctx.store.images.thumbnail(exam["image"]["sha256"], size=1024)
        with Image.open(io.BytesIO(jpeg)) as im:
            w, h = image_box(*im.size)
    except (OSError, KeyError, ValueError):
        pdf.say(_("The image is not on this box."), 9, color=GREY)
        return
    pdf.ln(1)
    pdf.room_for(h + GAP)
    top = pdf.get_y()
    pdf.image(io.BytesIO(jpeg), x=pdf.l_margin, y=top, w=w, h=h)
    pdf.set_y(top + h + GAP)


def _result(pdf: _Report, r: dict) -> None:
    if r["out_of_scope"]:
        pdf.say(_("This image does not look like the images the model was trained on. The result may be meaningless: check the image and the chosen analysis."), 9, "B", RED)
    if r["uncertain"]:
        pdf.say(_("Uncertain — refer: the model is not confident. Refer the patient or the slide for expert review."), 9, "B", AMBER)
    if r["quality_poor"]:
        pdf.say(_("Image quality poor: the image was analysed although it failed the quality check."), 9, "B", AMBER)
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


def _probability_row(pdf: _Report, row: dict) -> None:
    """One class: its name, a bar and the percentage, in fixed columns of one line."""
    pdf.room_for(5)
    left, width = pdf.l_margin, pdf.epw
    name_w, bar_w, value_w = width * 0.5, width * 0.32, width * 0.18
    y = pdf.get_y()
    pdf.set_x(left)
    pdf.set_font(pdf.family_name, "B" if row["top"] else "", 9)
    pdf.set_text_color(0, 0, 0)
    pdf.cell(name_w, 5, row["name"])
    bar_x = left + name_w
    pdf.set_fill_color(236, 232, 229)
    pdf.rect(bar_x, y + 1, bar_w, 3, style="F")
    pdf.set_fill_color(*(BRAND if row["top"] else (154, 143, 137)))
    pdf.rect(bar_x, y + 1, max(0.3, bar_w * row["p"]), 3, style="F")
    pdf.set_xy(bar_x + bar_w, y)
    pdf.cell(value_w, 5, views.probability_text(row["p"]), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _decision(pdf: _Report, exam: dict) -> None:
    pdf.ln(2)
    pdf.room_for(DECISION_BLOCK_H)
    pdf.heading(_("Clinician's decision"))
    decision = exam.get("decision")
    if decision:
        relation = views.decision_relation(decision)
        pdf.say(f"{views.label_name(exam['analysis'], decision.get('label'))} ({relation})", 11, "B")
        if decision.get("reason"):
            pdf.say(f"{_('Reason for the change')}: {decision['reason']}", 10)
        if decision.get("note"):
            pdf.say(decision["note"], 10)
        pdf.say(f"{views.person_name(decision.get('by'))} · {views.local_time(decision.get('at'))}", 9, color=GREY)
    else:
        pdf.say(_("Not decided yet."), 10)
    pdf.ln(8)
    pdf.say(f"{_('Signature')}: ______________________", 10)
