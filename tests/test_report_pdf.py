"""The exam report PDF prints right in every language and for every image shape (issue 14, item 5).

Real server, real tiny models, real images from ../shared/datasets cut to a square (Pap smear
fields), a 4:3 (colposcope photos) and a wide frame. Each report is read back with pdfplumber
(the boxes of every character, bar and image) and rendered to PNG with pdftoppm (Debian's
poppler-utils): no text or bar may touch the image's box, every character must be drawn by a
font that has its glyph, and the extracted text must carry the percentages and arrows of the
cascade exactly as the result page shows them.
"""
from __future__ import annotations

import io
import re
import subprocess
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from PIL import Image

from appliance.i18n import fonts
from appliance.web import views
from webutil import first_image, make_users, start_server, web_config

PASSWORD = "report-pass-2026"
SHAPES = {"square": (900, 900), "four-three": (1024, 768), "wide": (1600, 700)}
LANGUAGES = ("en", "am", "om")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pack, pack_key):
    from appliance.config import load_config
    cfg = web_config(load_config(data_dir=tmp_path_factory.mktemp("report-data"), environ={}), tiny_pack, pack_key)
    live = start_server(cfg)
    make_users(live)
    try:
        yield live
    finally:
        live.stop()


def _shaped_jpeg(datasets: Path, shape: str) -> bytes:
    """A real BreakHis image cut to the shape (the breast cascade has two or three steps: arrows)."""
    width, height = SHAPES[shape]
    with Image.open(first_image(datasets, "breakhis", "ductal_carcinoma")) as im:
        im = im.convert("RGB")
        target = width / height
        w, h = im.size
        if w / h > target:
            crop = (int((w - h * target) / 2), 0, int((w + h * target) / 2), h)
        else:
            crop = (0, int((h - w / target) / 2), w, int((h + w / target) / 2))
        out = io.BytesIO()
        im.crop(crop).resize((width, height)).save(out, "JPEG", quality=90)
        return out.getvalue()


def _font_cmaps() -> dict[str, set[int]]:
    """The embedded fonts by their PDF name (NotoSans, NotoSansEthiopicBold, ...) -> their code points."""
    out = {}
    for kind in fonts.FONT_KINDS:
        font = TTFont(str(fonts.font_path(kind)), lazy=True)
        name = re.sub("[ ()]", "", font["name"].getBestFullName())   # the PDF's BaseFont, as fpdf2 names it
        out[name] = set(font.getBestCmap())
    return out


def _overlaps(a: dict, b: dict, slack: float = 0.1) -> bool:
    return not (a["x1"] <= b["x0"] + slack or b["x1"] <= a["x0"] + slack
                or a["bottom"] <= b["top"] + slack or b["bottom"] <= a["top"] + slack)


@pytest.fixture(scope="module")
def reports(server, datasets, tmp_path_factory):
    """{(language, shape): (pdf bytes, result JSON)} for one exam of each shape, read by each language."""
    out = {}
    for lang in LANGUAGES:
        name = f"report.{lang}"
        server.ctx.store.users.create(name, PASSWORD, "doctor", display_name=f"Dr {lang.upper()} Report",
                                      language=lang)
        client = server.client()
        assert client.login(name, PASSWORD).status == 303
        res = client.register_patient(f"RP-{lang}", {"en": "Almaz Tesfaye", "am": "አልማዝ ተስፋዬ",
                                                      "om": "Caaltuu Gammachuu"}[lang])
        patient = res.location.rsplit("/", 1)[-1]
        for shape in SHAPES:
            draft = client.new_draft(patient, "breast_histopathology")
            assert client.upload(draft, _shaped_jpeg(datasets, shape)).status == 303
            processed = client.process(draft)
            assert processed.status == 303, processed.text[:400]
            uuid = processed.location.rsplit("/", 1)[-1]
            decided = client.post(f"/exams/{uuid}/decide", {"agrees": "yes", "note": "Seen by the doctor."})
            assert decided.status == 303
            pdf = client.get(f"/exams/{uuid}/report.pdf")
            assert pdf.status == 200 and pdf.body.startswith(b"%PDF")
            out[(lang, shape)] = (pdf.body, server.ctx.store.exams.get(uuid))
    return out


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("shape", SHAPES)
def test_text_never_touches_the_image_and_every_glyph_has_its_font(reports, lang, shape, artifacts_dir, tmp_path):
    import pdfplumber
    pdf_bytes, _exam = reports[(lang, shape)]
    cmaps = _font_cmaps()
    with pdfplumber.open(io.BytesIO(pdf_bytes)) as pdf:
        images = [im for page in pdf.pages for im in page.images]
        assert len(images) == 1, "the analysed image is printed once"
        image_page = next(page for page in pdf.pages if page.images)
        box = image_page.images[0]
        width, height = SHAPES[shape]
        # The image keeps its aspect inside its box.
        assert (box["x1"] - box["x0"]) / (box["bottom"] - box["top"]) == pytest.approx(width / height, rel=0.02)
        drawn = [c for c in image_page.chars if c["text"].strip()] + image_page.rects
        touching = [c.get("text", "rect") for c in drawn if _overlaps(c, box)]
        assert not touching, f"drawn over the image: {touching[:20]}"
        # Everything after the title block is below the image (text flows under it, never beside).
        below = [c for c in image_page.chars if c["top"] > box["top"]]
        assert below and all(c["top"] >= box["bottom"] for c in below)
        for page in pdf.pages:
            for char in page.chars:
                if not char["text"].strip():
                    continue
                font = char["fontname"].split("+", 1)[-1]
                assert font in cmaps, font
                assert ord(char["text"]) in cmaps[font], (char["text"], font)
    # The rendered page, for people to look at (and a check that poppler reads the file).
    pdf_path = tmp_path / f"report-{lang}-{shape}.pdf"
    pdf_path.write_bytes(pdf_bytes)
    shots = artifacts_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    subprocess.run(["pdftoppm", "-r", "50", "-png", "-f", "1", "-l", "1", str(pdf_path),
                    str(shots / f"report-{lang}-{shape}")], check=True, timeout=60)
    png = next(shots.glob(f"report-{lang}-{shape}*.png"))
    with Image.open(png) as page_image:
        assert page_image.size == pytest.approx((413, 585), abs=3)      # A4 at 50 dpi
        low, high = page_image.convert("L").getextrema()
        assert high - low > 100                                         # not a blank page


@pytest.mark.parametrize("lang", LANGUAGES)
def test_extracted_text_has_the_percentages_and_arrows_of_the_result(reports, lang):
    import pdfplumber
    for shape in SHAPES:
        pdf_bytes, exam = reports[(lang, shape)]
        with pdfplumber.open(io.BytesIO(pdf_bytes)) as pdf:
            # y_tolerance: the symbol font's taller box puts the arrow's top 3.3 pt below the letters'.
            text = "\n".join(page.extract_text(y_tolerance=5) or "" for page in pdf.pages)
        result = exam["result"]
        steps = {s["model"]: s for s in result["steps"]}
        expected = [views.probability_text(steps[m]["probabilities"][c]) for m, c in result["path"]]
        path_lines = [line for line in text.splitlines() if "→" in line]
        if len(expected) > 1:
            assert len(path_lines) == 1, text
            parts = path_lines[0].split(" → ")
            assert len(parts) == len(expected)
            assert [re.search(r"(?:[<>] )?\d+\.\d %$", p).group(0) for p in parts] == expected
        for step in result["steps"]:
            for p in step["probabilities"].values():
                assert views.probability_text(p) in text, (views.probability_text(p), text)
        # People by their display name, not their username.
        assert f"Dr {lang.upper()} Report" in text and f"report.{lang}" not in text
        assert "Seen by the doctor." in text


def test_one_rounding_rule_for_probabilities():
    assert views.probability_text(0.9996) == "> 99.9 %"
    assert views.probability_text(0.9994) == "99.9 %"
    assert views.probability_text(1.0) == "100.0 %"
    assert views.probability_text(0.751) == "75.1 %"
    assert views.probability_text(0.0004) == "< 0.1 %"
    assert views.probability_text(0.0) == "0.0 %"
