"""The de-identified research export: no name, phone, address or birth date in any byte it holds."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
from PIL import Image

from appliance.exchange import deidentify, importer
from appliance.exchange.export import export_bundle

from test_exchange_support import world  # noqa: F401

NAME = "Almaz Zerihun Kebede"
NAME_GEEZ = "አልማዝ ዘሪሁን"
PHONE = "0911223344"
ADDRESS = "Kebele 07, Jimma Road"
BIRTH_DATE = "1984-02-11"
PID = "JU-000777"


def _photo_with_metadata(source: bytes, *, orientation: int = 1) -> bytes:
    """A real image carrying the patient's details the way phones and cameras add them."""
    with Image.open(io.BytesIO(source)) as im:
        exif = Image.Exif()
        exif[0x010E] = f"{NAME} {PHONE}"          # ImageDescription
        exif[0x013B] = NAME                       # Artist
        exif[0x9286] = b"ASCII\0\0\0" + ADDRESS.encode()   # UserComment
        exif[0x0112] = orientation
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=90, exif=exif.tobytes(), comment=f"{NAME_GEEZ} {BIRTH_DATE}".encode())
    # A "motion photo" style tail after the end of the image.
    return buf.getvalue() + f"TRAILER {NAME} {PHONE}".encode()


def _every_file(root):
    return [p for p in sorted(root.rglob("*")) if p.is_file()]


def test_deidentified_export_holds_no_personal_details_anywhere(world):
    w = world
    source = w.next_image("pap_smear").read_bytes()
    photo = _photo_with_metadata(source)
    patient, exam = w.add_exam(PID, NAME, image=photo, phone=PHONE, address=ADDRESS, birth_date=BIRTH_DATE)
    w.add_exam(PID, NAME, analysis="cervix_type", label="type_2",
               image=_photo_with_metadata(source, orientation=6))
    w.post.store.exams.decide(exam["uuid"], "abnormal", note=f"called {NAME} on {PHONE}", by="doctor1")

    result = export_bundle(w.post.store, w.post.cfg, w.stick, deidentified=True, csv=True)
    assert result.counts["exams"] == 2 and result.counts["images"] == 2
    out = importer.extract_bundle(w.supervisor.cfg, result.path, w.tmp / "research").extracted_to

    secrets = [NAME, "Almaz", "Zerihun", NAME_GEEZ, PHONE, "911223344", ADDRESS, "Jimma", BIRTH_DATE, PID,
               patient["uuid"], exam["uuid"], exam["image"]["sha256"], "nurse1", "doctor1", "TRAILER"]
    files = _every_file(out) + [result.path]
    assert len(files) >= 5
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            for encoded in {secret.encode("utf-8"), secret.encode("utf-16-le")}:
                assert encoded not in data, f"{secret!r} found in {path.relative_to(w.tmp)}"

    # What a researcher gets: an ImageFolder per analysis, records and a spreadsheet that agree.
    records = [json.loads(line) for line in (out / "records" / "exams.jsonl").read_text().splitlines()]
    by_analysis = {r["analysis"]: r for r in records}
    pap = by_analysis["pap_smear"]
    assert pap["final_label"] == "abnormal" and pap["decision"] == {"label": "abnormal", "agrees": False}
    assert pap["age_group"] == "40-49" and pap["month"] == exam["created_at"][:7]
    assert (out / pap["image"]).is_file() and pap["image"].startswith("images/pap_smear/abnormal/")
    # The cervix-type exam awaits a decision: its image is not in a class folder but under
    # unconfirmed/, named by the exam's pseudonym, with the exam's record beside it.
    cervix = by_analysis["cervix_type"]
    assert cervix["image"] == f"unconfirmed/cervix_type/{cervix['id']}.jpg" and (out / cervix["image"]).is_file()
    assert json.loads((out / f"unconfirmed/cervix_type/{cervix['id']}.json").read_text()) == cervix
    assert not (out / "images" / "cervix_type").exists()
    rows = list(csv.DictReader(io.StringIO((out / "exams.csv").read_text(encoding="utf-8-sig"))))
    assert {r["exam_id"] for r in rows} == {r["id"] for r in records}

    # Stripping is lossless for the pixels, and an image that had to be turned still shows upright.
    with Image.open(out / pap["image"]) as cleaned, Image.open(io.BytesIO(photo)) as original:
        assert np.array_equal(np.asarray(cleaned), np.asarray(original))
        assert dict(cleaned.getexif()) in ({}, {0x0112: 1})
    with Image.open(out / by_analysis["cervix_type"]["image"]) as turned:
        assert dict(turned.getexif()) == {0x0112: 6}


def test_pseudonyms_are_stable_per_post_and_differ_between_posts(world):
    w = world
    w.add_exam("JU-1", "Almaz Kebede")
    first = importer.extract_bundle(w.supervisor.cfg, export_bundle(w.post.store, w.post.cfg, w.stick,
                                                                    deidentified=True).path, w.tmp / "a")
    again = importer.extract_bundle(w.supervisor.cfg, export_bundle(w.post.store, w.post.cfg, w.stick,
                                                                    deidentified=True, full=True).path, w.tmp / "b")

    def ids(report):
        return [(r["id"], r["patient"], r["image"]) for r in map(json.loads, (
            report.extracted_to / "records" / "exams.jsonl").read_text().splitlines())]

    assert ids(first) == ids(again)
    other = deidentify.Pseudonyms(b"another post's secret".ljust(32, b"\0"))
    assert ids(first)[0][0] != other.of("exam", w.post.store.exams.query()[0][0]["uuid"])


def test_png_text_chunks_and_unknown_formats_are_cleaned(world):
    from PIL import PngImagePlugin
    w = world
    with Image.open(w.next_image("pap_smear")) as im:
        info = PngImagePlugin.PngInfo()
        info.add_text("Author", NAME)
        info.add_itxt("Comment", NAME_GEEZ)
        png = io.BytesIO()
        im.save(png, "PNG", pnginfo=info)
        tiff = io.BytesIO()
        im.save(tiff, "TIFF", description=NAME)
    cleaned_png = deidentify.strip_metadata(png.getvalue(), "png")
    cleaned_tiff = deidentify.strip_metadata(tiff.getvalue(), "tif")
    for data in (cleaned_png, cleaned_tiff):
        assert NAME.encode() not in data and NAME_GEEZ.encode() not in data
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG"
    assert deidentify.output_ext("tif") == "png" and deidentify.output_ext("jpg") == "jpg"
