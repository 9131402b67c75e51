"""The out-of-scope gate: its statistics, and on a tiny model really trained on Herlev cells
(fixture `tiny_pap`) it passes held-out cells and flags BreakHis slides, IARC colposcopy photos,
blank frames and a skin-coloured frame; the engine puts its verdict in the result JSON."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from appliance.errors import PackError
from appliance.inference.engine import Engine
from appliance.inference.ood import BLANK_SPREAD, Gate, appearance_statistics, not_assessed
from export.ood import false_alarm_cross_fitted, fit_gate, gate_rates, synthetic_out_of_scope
from inference_helpers import clone_pack, own_copy, reseal, trusting


# ---------------------------------------------------------------- the statistics

def _gaussian(n, f=32, d=9, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(3, 0.1, f)
    pooled = rng.normal(0, 1, (n, f)) * scales + shift
    appearance = rng.normal(0, 1, (n, d)) * 0.2 + shift / 10
    appearance[:, 3:6] = -2.0 + rng.normal(0, 0.1, (n, 3))              # spreads of real images: not blank
    return pooled, appearance


def test_gate_keeps_its_false_alarm_rate_and_flags_distant_images():
    train = _gaussian(400, seed=1)
    val = _gaussian(400, seed=2)
    gate = fit_gate(*train, *val, false_alarm=0.1, components=8)
    new = _gaussian(2000, seed=3)
    assert gate_rates(gate, *new)["rate"] == pytest.approx(0.1, abs=0.04)
    far = _gaussian(50, shift=4.0, seed=4)
    assert gate_rates(gate, *far)["rate"] == 1.0
    assert false_alarm_cross_fitted(*train, *val, false_alarm=0.1, components=8) == pytest.approx(0.1, abs=0.05)


def test_gate_file_round_trip_and_refusals():
    gate = fit_gate(*_gaussian(100, seed=1), *_gaussian(50, seed=2), components=4)
    again = Gate.from_bytes(gate.to_bytes())
    probe = _gaussian(20, seed=9)
    assert np.allclose(again.judge(*probe)["score"], gate.judge(*probe)["score"], rtol=1e-5)
    with pytest.raises(ValueError, match="not an out-of-scope statistics file"):
        Gate.from_bytes(b"garbage")
    buf = io.BytesIO()
    np.savez(buf, version=np.int64(99))
    with pytest.raises(ValueError, match="format 99"):
        Gate.from_bytes(buf.getvalue())


def test_a_uniform_frame_is_blank_whatever_the_distances():
    frame = np.full((1, 3, 32, 32), 0.5, np.float32)
    stats = appearance_statistics(frame, (0, 0, 0), (1, 1, 1))
    assert np.exp(stats[0, 3:6]).max() < BLANK_SPREAD + 1e-3
    gate = fit_gate(*_gaussian(100, f=8, seed=1), *_gaussian(50, f=8, seed=2), components=4)
    verdict = gate.judge(np.zeros((1, 8)), stats)
    assert verdict["flagged"][0] and verdict["reason"][0] == "blank"


def test_synthetic_out_of_scope_images_are_what_they_say():
    images = synthetic_out_of_scope(64)
    assert set(images) == {"blank_white", "blank_grey", "blank_black", "skin"}
    white = np.asarray(images["blank_white"][0], float)
    skin = np.asarray(images["skin"][0], float)
    assert white.mean() > 220 and white.std() < 5
    assert skin[..., 0].mean() > skin[..., 2].mean() + 40        # reddish-brown, smooth
    assert all(im.size == (64, 64) and im.mode == "RGB" for group in images.values() for im in group)


# ---------------------------------------------------------------- on the tiny trained model (real images)

def test_gate_passes_in_scope_cells_and_flags_other_domains_and_blanks(tiny_pap):
    gate = tiny_pap["report"]["out_of_scope"]
    assert gate["fitted"] and gate["form"] == "onnx_int8"
    assert gate["in_scope"]["validation"]["rate"] <= 0.1           # thresholds chosen there at 5 %
    assert gate["false_alarm_cross_fitted"] <= 0.3                  # tiny validation set: honest but noisy
    assert gate["other_data"]["breakhis"]["rate"] >= 0.8
    assert gate["other_data"]["iarc_colposcopy"]["rate"] >= 0.8
    for kind in ("blank_white", "blank_grey", "blank_black", "skin"):
        assert gate["synthetic"][f"synthetic {kind}"]["rate"] == 1.0, kind


def test_gate_on_held_out_cells_the_model_never_saw(tiny_pap):
    from export.evaluate import evaluate
    report = evaluate(tiny_pap["pack"] / "pap_smear", data=str(tiny_pap["sets"]["held_out"]), split_side="all",
                      progress=False, write=False)
    held_out = report["out_of_scope"]["in_scope"]["evaluated images"]
    assert held_out["images"] == 40 and held_out["rate"] <= 0.25


@pytest.fixture(scope="module")
def engine(tiny_pap, pack_key, tmp_path_factory):
    from appliance.config import load_config
    cfg = trusting(load_config(data_dir=tmp_path_factory.mktemp("data"), environ={}), pack_key)
    return Engine.from_config(cfg, models_dir=tiny_pap["pack"])


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _least_unusual_held_out_cell(engine, tiny_pap):
    import csv
    with open(tiny_pap["sets"]["held_out"], newline="") as fh:
        paths = [row["file"] for row in csv.DictReader(fh)]
    scores = {p: engine.diagnose(p, "pap_smear").to_json()["out_of_scope"]["score"] for p in paths[:12]}
    return min(scores, key=scores.get)


def test_engine_result_passes_a_cell_and_flags_a_blank_slide_and_other_domains(engine, tiny_pap, datasets):
    cell = engine.diagnose(_least_unusual_held_out_cell(engine, tiny_pap), "pap_smear").to_json()
    assert cell["out_of_scope"]["assessed"] is True and cell["out_of_scope"]["flagged"] is False
    assert 0 <= cell["out_of_scope"]["score"] < 1 and cell["out_of_scope"]["reason"] is None
    assert cell["timings_ms"]["out_of_scope"] >= 0
    blank = engine.diagnose(_png(Image.new("RGB", (400, 300), (236, 236, 232))), "pap_smear").to_json()
    assert blank["out_of_scope"] == {"flagged": True, "score": blank["out_of_scope"]["score"], "reason": "blank",
                                     "assessed": True}
    slide = engine.diagnose(datasets / "breakhis/originals/ductal_carcinoma/SOB_M_DC-14-10926-100-001.png",
                            "pap_smear").to_json()
    assert slide["out_of_scope"]["flagged"] is True and slide["out_of_scope"]["reason"] in ("features", "appearance")
    hand = synthetic_out_of_scope(400)["skin"][1]
    assert engine.diagnose(_png(hand), "pap_smear").to_json()["out_of_scope"]["flagged"] is True
    # The class percentages are still there for the clinician to see beside the warning.
    assert slide["steps"][0]["probabilities"] and slide["label"] in ("normal", "abnormal")


def test_diagnose_json_on_the_command_line_shows_the_flag(tiny_pap, pack_key, tmp_path, datasets, capsys,
                                                         monkeypatch):
    from appliance.cli import main
    from inference_helpers import cli_box
    box = cli_box(tmp_path, monkeypatch, pack_key)
    photo = datasets / "iarc_colposcopy/originals/type_1/AAAX_4_After_acetic_acid.jpg"
    code = main(["diagnose", str(photo), "--analysis", "pap_smear", "--json", "--models", str(tiny_pap["pack"]),
                 *box])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.splitlines()[0])
    assert result["out_of_scope"]["flagged"] is True and result["out_of_scope"]["assessed"] is True


def test_diagnose_human_output_says_out_of_scope(tiny_pap, pack_key, tmp_path, datasets, capsys, monkeypatch):
    from appliance.cli import main
    from inference_helpers import cli_box
    box = cli_box(tmp_path, monkeypatch, pack_key)
    photo = datasets / "iarc_colposcopy/originals/type_1/AAAX_4_After_acetic_acid.jpg"   # not a Pap smear
    code = main(["diagnose", str(photo), "--analysis", "pap_smear", "--models", str(tiny_pap["pack"]),
                 *box])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    warning = [line for line in lines if "OUT OF SCOPE" in line]
    assert len(warning) == 1 and "does not look like" in warning[0], out
    assert lines.index(warning[0]) < next(i for i, line in enumerate(lines) if "Pap smear:" in line)


def test_the_gate_can_be_switched_off(tiny_pap, pack_key, tmp_path):
    from appliance.config import load_config
    cfg = trusting(load_config(data_dir=tmp_path, environ={}), pack_key)
    cfg.inference.out_of_scope_gate = False
    engine = Engine.from_config(cfg, models_dir=tiny_pap["pack"])
    result = engine.diagnose(_png(Image.new("RGB", (300, 300), (250, 250, 250))), "pap_smear").to_json()
    assert result["out_of_scope"] == not_assessed()


def test_a_pack_without_gate_statistics_is_not_assessed(tiny_pack, pack_key, tmp_path, datasets):
    from appliance.config import load_config
    cfg = trusting(load_config(data_dir=tmp_path, environ={}), pack_key)
    cell = sorted((datasets / "herlev/originals/normal_columnar").iterdir())[0]
    result = Engine.from_config(cfg, models_dir=tiny_pack).diagnose(cell, "pap_smear").to_json()
    assert result["out_of_scope"] == {"flagged": False, "score": None, "reason": None, "assessed": False}


def test_unreadable_gate_statistics_are_reported_and_results_say_not_assessed(tiny_pap, pack_key, tmp_path):
    from appliance.config import load_config
    pack = clone_pack(tiny_pap["pack"], tmp_path / "pack")
    own_copy(pack / "pap_smear" / "ood.npz").write_bytes(b"this is not a numpy file")
    reseal(pack, pack_key)                                   # signed and checksummed, but not a gate
    engine = Engine.from_config(trusting(load_config(data_dir=tmp_path / "d", environ={}), pack_key),
                                models_dir=pack)
    result = engine.diagnose(_png(Image.new("RGB", (300, 300), (250, 250, 250))), "pap_smear").to_json()
    assert result["out_of_scope"]["assessed"] is False
    assert any("out-of-scope statistics of pap_smear" in p for p in engine.status()["problems"])


def test_an_altered_gate_file_is_refused_like_any_model_file(tiny_pap, pack_key, tmp_path):
    from appliance.config import load_config
    pack = clone_pack(tiny_pap["pack"], tmp_path / "pack")
    data = bytearray(own_copy(pack / "pap_smear" / "ood.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (pack / "pap_smear" / "ood.npz").write_bytes(bytes(data))
    engine = Engine.from_config(trusting(load_config(data_dir=tmp_path / "d", environ={}), pack_key),
                                models_dir=pack)
    with pytest.raises(PackError, match="checksum"):
        engine.diagnose(_png(Image.new("RGB", (300, 300), (120, 60, 140))), "pap_smear")
