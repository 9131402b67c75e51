"""The engine as the kiosk and the CLI use it: where models come from (current pack, demo
fallback, clinical mode), lazy loading, reload, tampering after start, bad images, the
result JSON and heatmap, concurrency and the busy flag."""
from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
from PIL import Image

from appliance.errors import BadImage, PackError, UserError
from appliance.inference.engine import Engine

from inference_helpers import ORIGINAL_IMAGE, clone_pack, make_demo_pack, own_copy, reseal, trusting

RESULT_FIELDS = {"analysis", "image", "demo", "pack", "runtime", "precision", "steps", "path", "label",
                 "uncertain", "out_of_scope", "quality", "image_info", "timings_ms"}
STEP_FIELDS = {"model", "version", "demo", "probabilities", "top", "confidence", "uncertain"}


@pytest.fixture(scope="module")
def demo_pack(tiny_pack, tmp_path_factory):
    return make_demo_pack(tiny_pack, tmp_path_factory.mktemp("demo") / "demo")


def install_current(cfg, pack) -> None:
    """What `appliance models install` leaves: <data>/packs/current -> the pack folder."""
    cfg.packs_dir.mkdir(parents=True, exist_ok=True)
    link = cfg.packs_dir / "current"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(pack)


def subset_pack(tiny_pack, key, dst, models: set[str], version: str = "2.0.0"):
    pack = clone_pack(tiny_pack, dst)

    def keep(manifest):
        manifest["models"] = {m: e for m, e in manifest["models"].items() if m in models}
        manifest["version"], manifest["pack_id"] = version, f"clinical-{version}"
    return reseal(pack, key, keep)


def test_from_config_is_cheap_and_preload_compiles_everything(cfg, pack_key, tiny_pack):
    engine = Engine.from_config(trusting(cfg, pack_key), models_dir=tiny_pack)
    status = engine.status()
    assert len(status["models"]) == 7 and not any(m["loaded"] for m in status["models"].values())
    assert status["runtime"] == "openvino" and status["precision"] == "int8" and status["demo"] is False
    assert engine.analyses() == ["breast_histopathology", "cervical_histopathology", "pap_smear", "cervix_type"]
    engine.preload()
    assert all(m["loaded"] and m["precision"] == "int8" for m in engine.status()["models"].values())


def test_current_pack_first_then_demo_for_the_models_it_lacks(cfg, pack_key, tiny_pack, demo_pack, tmp_path, datasets):
    cfg = trusting(cfg, pack_key)
    cfg.inference.demo_pack = str(demo_pack)
    install_current(cfg, subset_pack(tiny_pack, pack_key, tmp_path / "p2", {"pap_smear", "cervix_type"}))
    engine = Engine.from_config(cfg)
    models = engine.status()["models"]
    assert models["pap_smear"]["source"] == "current" and models["pap_smear"]["version"] == "0.1.0"
    assert models["breast_binary"]["source"] == "demo" and models["breast_binary"]["demo"]
    clinical = engine.diagnose(datasets / ORIGINAL_IMAGE, "pap_smear")
    assert clinical.demo is False and clinical.pack["id"] == "clinical-2.0.0"
    demo = engine.diagnose(datasets / ORIGINAL_IMAGE, "cervical_histopathology")
    assert demo.demo is True and demo.to_json()["steps"][0]["version"].endswith("-demo")


def test_clinical_mode_never_uses_the_demo_pack(cfg, demo_pack, datasets):
    cfg.inference.demo_pack = str(demo_pack)
    cfg.post.mode = "clinical"
    engine = Engine.from_config(cfg)
    assert engine.analyses() == [] and engine.status()["models"] == {}
    assert "No model pack is installed" in engine.status()["problems"][0]
    with pytest.raises(PackError) as err:
        engine.diagnose(datasets / ORIGINAL_IMAGE, "pap_smear")
    assert "No model for" in err.value.message and "appliance models install" in err.value.hint


def test_a_broken_current_pack_is_reported_and_the_demo_pack_still_serves(cfg, pack_key, tiny_pack, demo_pack, tmp_path):
    cfg = trusting(cfg, pack_key)
    cfg.inference.demo_pack = str(demo_pack)
    broken = clone_pack(tiny_pack, tmp_path / "broken")
    (broken / "manifest.json").write_text((broken / "manifest.json").read_text().replace("0.1.0", "9.9.9"))
    install_current(cfg, broken)
    status = Engine.from_config(cfg).status()
    assert any("signature" in p for p in status["problems"])
    assert {m["source"] for m in status["models"].values()} == {"demo"} and status["demo"]


def test_an_explicit_models_dir_that_fails_verification_raises(cfg, tiny_pack, tmp_path):
    with pytest.raises(PackError, match="does not trust"):
        Engine.from_config(cfg, models_dir=tiny_pack)       # the test key is not trusted by this cfg
    with pytest.raises(PackError, match="no manifest.json"):
        Engine.from_config(cfg, models_dir=tmp_path)


def test_a_model_file_altered_after_start_is_refused_when_loaded(cfg, pack_key, tiny_pack, tmp_path, datasets):
    pack = clone_pack(tiny_pack, tmp_path / "pack")
    engine = Engine.from_config(trusting(cfg, pack_key), models_dir=pack)
    target = own_copy(pack / "pap_smear" / "model.int8.bin")
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(PackError, match="does not match its checksum"):
        engine.diagnose(datasets / ORIGINAL_IMAGE, "pap_smear")
    assert not engine.status()["models"]["pap_smear"]["loaded"]
    assert engine.diagnose(datasets / ORIGINAL_IMAGE, "cervix_type").label    # the others still work


def test_reload_picks_up_a_newly_installed_pack(cfg, pack_key, tiny_pack, tmp_path, datasets):
    cfg = trusting(cfg, pack_key)
    install_current(cfg, subset_pack(tiny_pack, pack_key, tmp_path / "a", {"pap_smear"}, "1.0.0"))
    engine = Engine.from_config(cfg)
    assert engine.diagnose(datasets / ORIGINAL_IMAGE, "pap_smear").pack["version"] == "1.0.0"
    install_current(cfg, subset_pack(tiny_pack, pack_key, tmp_path / "b", {"pap_smear", "cervix_type"}, "1.1.0"))
    engine.reload()
    assert not engine.status()["models"]["pap_smear"]["loaded"]
    assert engine.diagnose(datasets / ORIGINAL_IMAGE, "pap_smear").pack["version"] == "1.1.0"
    assert "cervix_type" in engine.analyses()


@pytest.fixture(scope="module")
def engine(tiny_pack, pack_key, tmp_path_factory):
    from appliance.config import load_config
    cfg = trusting(load_config(data_dir=tmp_path_factory.mktemp("data"), environ={}), pack_key)
    return Engine.from_config(cfg, models_dir=tiny_pack)


def truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((400, 300), 50).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()[:5000]


@pytest.mark.parametrize("data, words", [
    (b"", "empty"), (truncated_jpeg(), "incomplete"), (b"plain text", "not an image"),
])
def test_bad_images_are_user_errors_and_change_nothing(engine, data, words):
    before = engine.status()
    with pytest.raises(BadImage) as err:
        engine.diagnose(data, "pap_smear")
    assert words in err.value.message
    assert engine.status() == before and not engine.busy.is_set()


def test_unknown_analysis_is_a_user_error(engine, datasets):
    with pytest.raises(UserError, match="no analysis called 'lung'"):
        engine.diagnose(datasets / ORIGINAL_IMAGE, "lung")


def test_result_json_has_every_contract_field(engine, datasets):
    path = datasets / ORIGINAL_IMAGE
    result = engine.diagnose(path.read_bytes(), "cervix_type", name="upload.png")
    doc = result.to_json()
    assert RESULT_FIELDS <= set(doc)
    assert doc["image"] == "upload.png" and doc["analysis"] == "cervix_type" and doc["demo"] is False
    assert doc["pack"] == {"id": "tiny-test", "version": "0.1.0"}
    assert doc["runtime"] == "openvino" and doc["precision"] == "int8"
    (step,) = doc["steps"]
    assert STEP_FIELDS <= set(step) and set(step["probabilities"]) == {"type_1", "type_2", "type_3"}
    assert sum(step["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert step["top"] == max(step["probabilities"], key=step["probabilities"].get) == doc["label"]
    assert doc["path"] == [["cervix_type", doc["label"]]]
    assert doc["out_of_scope"]["flagged"] is False and "score" in doc["out_of_scope"]
    assert set(doc["quality"]) == {"ok", "warnings", "metrics"}
    assert doc["image_info"] == {"sha256": result.image_info["sha256"], "width": 700, "height": 460, "format": "PNG"}
    assert doc["timings_ms"]["total"] >= doc["timings_ms"]["cervix_type"] > 0
    import json
    json.dumps(doc)                                   # plain JSON all the way down


def test_heatmap_is_a_png_over_the_image(engine, datasets):
    result = engine.diagnose(datasets / ORIGINAL_IMAGE, "pap_smear")
    png = Image.open(io.BytesIO(result.heatmap_png()))
    assert png.format == "PNG" and png.size == (700, 460)
    small = Image.open(io.BytesIO(result.heatmap_png(max_side=350)))
    assert small.size == (350, 230)
    pixels = np.asarray(png, dtype=np.int16)
    original = np.asarray(Image.open(datasets / ORIGINAL_IMAGE).convert("RGB"), dtype=np.int16)
    assert np.abs(pixels - original).mean() > 10        # something was drawn over it


def test_quality_warnings_travel_with_the_result(engine, datasets):
    from PIL import ImageFilter
    img = Image.open(datasets / ORIGINAL_IMAGE).convert("RGB").filter(ImageFilter.GaussianBlur(6))
    result = engine.diagnose(img, "breast_histopathology")
    assert not result.quality.ok and result.quality.warnings[0]["code"] == "blur"
    assert result.label                                   # a warning advises; it does not block
    report = engine.check_quality(img, "breast_histopathology")
    assert report.warnings == result.quality.warnings


def test_big_camera_jpeg_uses_the_fast_decode_and_keeps_its_facts(engine, datasets, cfg, pack_key, tiny_pack):
    big = Image.open(datasets / ORIGINAL_IMAGE).convert("RGB").resize((2592, 1936), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=92)
    fast = engine.diagnose(buf.getvalue(), "pap_smear")
    full_cfg = trusting(cfg, pack_key)
    full_cfg.inference.fast_jpeg_decode = False
    full_engine = Engine.from_config(full_cfg, models_dir=tiny_pack)
    full = full_engine.diagnose(buf.getvalue(), "pap_smear")
    assert fast.image_info == full.image_info and fast.image_info["width"] == 2592
    # The models' crops came from a reduced decode in one case, from all 2592×1936 pixels in the other.
    assert engine.prepare(buf.getvalue(), "pap_smear").reduced > 1
    assert full_engine.prepare(buf.getvalue(), "pap_smear").reduced == 1
    assert max(fast.image.size) < max(full.image.size)
    p_fast, p_full = fast.steps[0].probabilities, full.steps[0].probabilities
    assert max(abs(p_fast[c] - p_full[c]) for c in p_fast) < 0.05


def test_concurrent_requests_are_serialised_and_give_the_same_answers(engine, datasets):
    files = sorted((datasets / "herlev" / "originals").glob("*/*.jpg"))[:6]
    expected = {f: engine.diagnose(f, "pap_smear").steps[0].probabilities for f in files}
    seen_busy, errors, stop = [], [], threading.Event()

    def watch():
        while not stop.is_set():
            if engine.busy.is_set():
                seen_busy.append(True)

    def work(f):
        try:
            for _ in range(15):
                assert engine.diagnose(f, "pap_smear").steps[0].probabilities == expected[f]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=work, args=(f,)) for f in files]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    watcher.join()
    assert errors == [] and seen_busy and not engine.busy.is_set()
    assert engine.status()["models"]["pap_smear"]["latency_ms"] > 0


def test_no_pack_at_all_says_how_to_get_one(cfg, tmp_path):
    cfg.inference.demo_pack = str(tmp_path / "nothing")
    engine = Engine.from_config(cfg)
    assert engine.analyses() == []
    assert "demo pack has not been built" in engine.status()["problems"][0]
    with pytest.raises(PackError) as err:
        engine.diagnose(b"x", "pap_smear")
    assert "bccdms-export demo" in err.value.hint
    assert not os.path.exists(cfg.packs_dir)            # looking changed nothing


def test_a_prepared_image_gives_the_result_of_its_bytes_without_a_second_pass(engine, datasets, monkeypatch):
    from appliance.inference import heatmap, imageio, prepared
    big = Image.open(datasets / ORIGINAL_IMAGE).convert("RGB").resize((2592, 1936), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "PNG", compress_level=1)
    data = buf.getvalue()
    direct = engine.diagnose(data, "breast_histopathology")
    ready = engine.prepare(data, "breast_histopathology")
    assert ready.preview_jpeg and ready.info() == direct.image_info and ready.nbytes == len(data)
    full = imageio.decode(data, 10**8).image
    calls = []
    monkeypatch.setattr(imageio.Probe, "decode", lambda self: calls.append("decode"))
    monkeypatch.setattr(prepared.quality, "check", lambda *a, **k: calls.append("quality"))
    again = engine.diagnose(ready, "breast_histopathology", name="file")
    assert calls == []                                       # nothing decoded or gated again
    assert [s.probabilities for s in again.steps] == [s.probabilities for s in direct.steps]
    assert again.quality == direct.quality and again.image_name == "file"
    # The heatmap is drawn on the kept screen-sized copy: the same picture as over the full image.
    assert max(again.image.size) <= 1024 < max(full.size)
    assert np.array_equal(np.asarray(heatmap.overlay(full, again.cam, again.cam_spec)),
                          np.asarray(heatmap.overlay(again.image, again.cam, again.cam_spec)))


def test_a_decoded_image_with_its_quality_report_is_not_gated_again(engine, datasets, monkeypatch):
    from appliance.inference import prepared
    decoded = engine.decode((datasets / ORIGINAL_IMAGE).read_bytes())
    report = engine.check_quality(decoded, "breast_histopathology")
    monkeypatch.setattr(prepared.quality, "check", lambda *a, **k: pytest.fail("gated twice"))
    result = engine.diagnose(decoded, "breast_histopathology", quality=report)
    assert result.quality is report and result.image_info == decoded.info()
