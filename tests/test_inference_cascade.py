"""The breast cascade through real INT8 models whose heads are biased to known answers:
benign and malignant branches, the grade only after ductal carcinoma, temperature and the
refer band."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.inference.cascade import softmax
from appliance.inference.engine import Engine

from inference_helpers import ORIGINAL_IMAGE, bias_heads, clone_pack, reseal, trusting

STRENGTH = 12.0      # bias_heads: logits are exactly ±STRENGTH/2 (zero weights, float head)


@pytest.fixture(scope="module")
def biased(tiny_pack, pack_key, tmp_path_factory):
    """Build (once per set of answers) a signed pack whose models give those answers."""
    made = {}

    def build(**answers) -> object:
        key = tuple(sorted(answers.items()))
        if key not in made:
            pack = clone_pack(tiny_pack, tmp_path_factory.mktemp("biased") / "pack")
            made[key] = bias_heads(pack, pack_key, answers, STRENGTH)
        return made[key]
    return build


def engine_for(pack, cfg, pack_key, **inference) -> Engine:
    cfg = trusting(cfg, pack_key)
    for name, value in inference.items():
        setattr(cfg.inference, name, value)
    return Engine.from_config(cfg, models_dir=pack)


MALIGNANT_DUCTAL = dict(breast_binary="malignant", breast_malignant_subtype="ductal_carcinoma",
                        breast_grade="grade_3", breast_benign_subtype="adenosis")


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_malignant_ductal_carcinoma_gets_its_grade(biased, cfg, pack_key, datasets, runtime):
    engine = engine_for(biased(**MALIGNANT_DUCTAL), cfg, pack_key, runtime=runtime)
    result = engine.diagnose(datasets / ORIGINAL_IMAGE, "breast_histopathology")
    assert result.path == [("breast_binary", "malignant"), ("breast_malignant_subtype", "ductal_carcinoma"),
                           ("breast_grade", "grade_3")]
    assert result.label == "ductal_carcinoma"              # the grade is an attribute, not the label
    assert [s.model for s in result.steps] == ["breast_binary", "breast_malignant_subtype", "breast_grade"]
    assert result.steps[0].probabilities["malignant"] == pytest.approx(1 / (1 + np.exp(-STRENGTH)), abs=1e-6)
    doc = result.to_json()
    assert doc["heatmap"]["model"] == "breast_grade" and doc["path"][-1] == ["breast_grade", "grade_3"]
    assert set(doc["timings_ms"]) >= {"decode", "quality", "preprocess", "breast_binary",
                                      "breast_malignant_subtype", "breast_grade", "heatmap", "total"}
    assert not engine.status()["models"]["breast_benign_subtype"]["loaded"]     # never needed


def test_benign_branch_runs_the_benign_subtype_and_no_grade(biased, cfg, pack_key, datasets):
    engine = engine_for(biased(breast_binary="benign", breast_benign_subtype="fibroadenoma",
                               breast_malignant_subtype="ductal_carcinoma"), cfg, pack_key)
    result = engine.diagnose(datasets / ORIGINAL_IMAGE, "breast_histopathology")
    assert result.path == [("breast_binary", "benign"), ("breast_benign_subtype", "fibroadenoma")]
    assert result.label == "fibroadenoma"
    status = engine.status()["models"]
    assert not status["breast_malignant_subtype"]["loaded"] and not status["breast_grade"]["loaded"]


def test_other_malignant_subtypes_get_no_grade(biased, cfg, pack_key, datasets):
    engine = engine_for(biased(breast_binary="malignant", breast_malignant_subtype="lobular_carcinoma"),
                        cfg, pack_key)
    result = engine.diagnose(datasets / ORIGINAL_IMAGE, "breast_histopathology")
    assert result.path == [("breast_binary", "malignant"), ("breast_malignant_subtype", "lobular_carcinoma")]
    assert result.label == "lobular_carcinoma" and result.skipped == []


def test_temperature_and_refer_band_come_from_the_manifest(biased, cfg, pack_key, datasets, tmp_path):
    pack = clone_pack(biased(**MALIGNANT_DUCTAL), tmp_path / "calibrated")

    def calibrate(manifest):
        manifest["models"]["breast_binary"]["temperature"] = 4.0
        manifest["models"]["breast_binary"]["refer_below"] = 0.97
    reseal(pack, pack_key, calibrate)
    result = engine_for(pack, cfg, pack_key).diagnose(datasets / ORIGINAL_IMAGE, "breast_histopathology")
    binary = result.steps[0]
    expected = 1 / (1 + np.exp(-STRENGTH / 4.0))             # 0.9526: softened by T = 4
    assert binary.probabilities["malignant"] == pytest.approx(expected, abs=1e-6)
    assert binary.confidence == pytest.approx(expected, abs=1e-6) and binary.uncertain
    assert not result.steps[1].uncertain and result.uncertain      # one uncertain step: refer
    assert result.to_json()["uncertain"] is True


def test_a_missing_next_model_ends_the_cascade_and_says_so(biased, cfg, pack_key, datasets, tmp_path):
    pack = clone_pack(biased(**MALIGNANT_DUCTAL), tmp_path / "no-grade")
    reseal(pack, pack_key, lambda m: m["models"].pop("breast_grade"))
    result = engine_for(pack, cfg, pack_key).diagnose(datasets / ORIGINAL_IMAGE, "breast_histopathology")
    assert [m for m, _ in result.path] == ["breast_binary", "breast_malignant_subtype"]
    assert result.skipped == [{"model": "breast_grade", "reason": "not installed"}]
    assert result.label == "ductal_carcinoma"


def test_softmax_is_stable_and_scaled():
    p = softmax(np.array([1000.0, 0.0, -1000.0]))
    assert np.isfinite(p).all() and p[0] == pytest.approx(1.0)
    assert softmax(np.array([2.0, 0.0]), 2.0)[0] == pytest.approx(softmax(np.array([1.0, 0.0]))[0])
