"""`bccdms-export evaluate` on a tiny model really trained on Herlev cells (fixture `tiny_pap`):
every figure and PNG of the model card, calibration before/after temperature, the refer band's
rule, the pack that carries them, and the user errors; plus the NumPy figures against
scikit-learn."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from appliance import signing
from appliance.inference.pack import load_pack
from export.calibration import (calibration_report, choose_refer_threshold, choose_refer_threshold_for_forms,
                                expected_calibration_error, refer_band)
from export.metrics import classification_metrics, softmax
from export.roc import roc_analysis, roc_curve

FORMS = {"torch", "onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8"}


# ---------------------------------------------------------------- the report and the card

def test_evaluate_reports_every_figure_for_every_form(tiny_pap):
    report = tiny_pap["report"]
    assert report["split"] == "val" and report["reference"] == "torch" and set(report["forms"]) == FORMS
    assert report["split_recorded"]["method"] == "group"      # Herlev: cells of one source image stay together
    for name, form in report["forms"].items():
        m = form["metrics"]
        assert m["images"] == report["images"] and 0 <= m["accuracy"] <= 1 and 0 <= m["balanced_accuracy"] <= 1
        assert set(m["per_class"]) == {"normal", "abnormal"} and sum(map(sum, m["confusion"]["matrix"])) == m["images"]
        assert 0 <= m["roc"]["binary_auc"] <= 1 and m["roc"]["positive_class"] == "abnormal"
        cal = m["calibration"]
        for key in ("ece_uncalibrated", "ece_temperature_in_sample", "ece_temperature_cross_fitted"):
            assert 0 <= cal[key] <= 1
        assert sum(b["count"] for b in cal["reliability"]["temperature"]) == m["images"]
        assert m["refer"]["threshold"] == report["refer_below"]
        if name != "torch":
            assert 0 <= form["parity"]["top1_agreement"] <= 1
    assert report["forms"]["onnx_fp32"]["parity"]["top1_agreement"] == 1.0


def test_the_model_card_holds_the_figures_the_split_and_the_paper(tiny_pap):
    folder = tiny_pap["model_dir"]
    card = json.loads((folder / "model_card.json").read_text())
    figures = card["key_figures"]
    for key in ("accuracy_fp32", "accuracy_int8_onnxruntime", "accuracy_int8_openvino", "agreement_int8_onnxruntime",
                "agreement_int8_openvino", "auc", "ece_uncalibrated", "ece_calibrated", "refer_below", "refer_coverage",
                "out_of_scope_false_alarm", "out_of_scope_catch"):
        assert figures[key] is not None, key
    assert figures["paper_accuracy"] == pytest.approx(0.8727) and figures["split"] == "group"
    text = (folder / "model_card.md").read_text()
    for words in ("# Model card: pap_smear", "87.27 %", "grouped by source image", "## Refer band",
                  "## Out-of-scope gate", "synthetic", "What these figures cannot support", "95 % interval",
                  "## Dataset labels → model classes", "| carcinoma_in_situ | abnormal | abnormal | by its group |"):
        assert words in text, words
    for name in ("roc.png", "reliability.png"):
        with Image.open(folder / name) as png:
            assert png.format == "PNG" and png.width > 300 and png.height > 300
    meta = json.loads((folder / "model.json").read_text())
    assert meta["refer_below"] == tiny_pap["report"]["refer_below"] and meta["ood"]["form"] == "onnx_int8"
    assert meta["validation"]["figures"]["accuracy_fp32"] == figures["accuracy_fp32"]
    assert meta["validation"]["accuracy"] is not None          # training's own figure is kept


def test_the_pack_carries_refer_band_gate_card_and_key_figures(tiny_pap, pack_key):
    pack = load_pack(tiny_pap["pack"], trusted_keys=[signing.public_b64(pack_key)], allow_demo=False)
    entry = pack.models["pap_smear"]
    assert {"ood", "card", "card_json", "figure_roc", "figure_reliability"} <= set(entry.files)
    assert entry.refer_below == pytest.approx(tiny_pap["report"]["refer_below"])
    assert entry.ood["method"] == "ppca-mahalanobis+appearance"
    assert entry.validation["figures"]["accuracy_int8_openvino"] is not None
    assert pack.verify_all() == []


def test_evaluating_a_model_inside_a_pack_measures_its_stored_gate_and_writes_nothing(tiny_pap, tmp_path):
    from export.evaluate import evaluate
    pack_model = tiny_pap["pack"] / "pap_smear"
    before = {p.name: p.stat().st_mtime_ns for p in pack_model.iterdir()}
    held_out = tiny_pap["sets"]["held_out"]
    report = evaluate(pack_model, data=str(held_out), split_side="all", progress=False, card_dir=tmp_path / "card")
    assert report["split"] == "all" and "refer" not in report             # nothing is fitted on a test set
    assert report["out_of_scope"]["fitted"] is False
    assert "evaluated images" in report["out_of_scope"]["in_scope"]
    assert (tmp_path / "card" / "model_card.md").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in pack_model.iterdir()} == before


# ---------------------------------------------------------------- calibration and the refer band

def _overconfident(seed: int = 0, n: int = 400, scale: float = 8.0):
    """A 3-class 'model' that is right 70 % of the time but says 99 %: logits scaled far too high."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    right = rng.random(n) < 0.7
    predicted = np.where(right, targets, (targets + rng.integers(1, 3, n)) % 3)
    logits[np.arange(n), predicted] += 1.5
    return logits * scale, targets


def test_temperature_scaling_repairs_an_overconfident_model():
    from export.metrics import fit_temperature
    logits, targets = _overconfident()
    t = fit_temperature(logits, targets)
    report = calibration_report(logits, targets, t)
    assert t > 2                                                             # it cools the logits down
    assert report["ece_uncalibrated"] > 0.15
    assert report["ece_temperature_cross_fitted"] < report["ece_uncalibrated"] / 2
    assert report["ece_temperature_in_sample"] <= report["ece_temperature_cross_fitted"] + 0.05


def test_temperature_scaling_does_not_make_the_real_tiny_model_worse(tiny_pap):
    """On the real tiny model made deliberately over-confident (logits × 8)."""
    import torch
    from export.checkpoint import load_checkpoint, network_from_checkpoint
    from export.images import load_batch
    from export.metrics import fit_temperature
    ckpt = load_checkpoint(tiny_pap["checkpoint"])
    net = network_from_checkpoint(ckpt)
    root = tiny_pap["sets"]["train"].parent
    paths = [root / f for f in ckpt["split"]["train"]["files"]] + [root / f for f in ckpt["split"]["val"]["files"]]
    from export.datasets import labelled_for, open_dataset
    labelled = labelled_for(open_dataset(tiny_pap["sets"]["train"]), "pap_smear")
    target_of = {i.path: t for i, t in zip(labelled.items, labelled.targets)}
    with torch.no_grad():
        logits = net(torch.from_numpy(load_batch(paths, ckpt["input"]))).numpy() * 8
    targets = np.array([target_of[p.resolve()] for p in paths])
    report = calibration_report(logits, targets, fit_temperature(logits, targets))
    assert report["ece_temperature_in_sample"] <= report["ece_uncalibrated"] + 1e-9


def test_ece_of_a_perfectly_calibrated_set_is_small():
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, 20000)
    correct = rng.random(20000) < confidence
    probs = np.stack([confidence, 1 - confidence], 1)
    targets = np.where(correct, 0, 1)
    assert expected_calibration_error(probs, targets) < 0.02


def _calibrated_binary(n: int = 400, seed: int = 3):
    """Probabilities of a calibrated binary model: the top probability is the chance of being right."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, n)
    predicted = rng.integers(0, 2, n)
    targets = np.where(rng.random(n) < confidence, predicted, 1 - predicted)
    probs = np.where(predicted[:, None] == np.arange(2), confidence[:, None], 1 - confidence[:, None])
    return probs, targets


def test_refer_threshold_meets_its_rule_on_validation_data():
    probs, targets = _calibrated_binary()
    chosen = choose_refer_threshold(probs, targets, target_accuracy=0.9, min_accepted=10)
    assert chosen["target_met"] and chosen["accepted"] >= 10
    assert chosen["accepted_accuracy"] >= 0.9
    assert chosen == {**chosen, **refer_band(probs, targets, chosen["threshold"])}
    # It is the lowest such threshold: every lower confidence, used as a threshold, misses the target.
    confidence = probs.max(1)
    for lower in confidence[confidence < chosen["threshold"]]:
        band = refer_band(probs, targets, lower)
        assert band["accepted_accuracy"] < 0.9 or band["accepted"] < 10
    assert chosen["coverage"] > refer_band(probs, targets, np.quantile(confidence, 0.99))["coverage"]


def test_an_unreachable_refer_target_falls_back_to_referring_the_least_confident_half():
    rng = np.random.default_rng(5)
    targets = rng.integers(0, 2, 300)
    probs = softmax(rng.normal(0, 1, (300, 2)))           # a coin: no threshold reaches 95 %
    chosen = choose_refer_threshold(probs, targets)
    assert not chosen["target_met"] and "not reachable" in chosen["rule"]
    assert chosen["coverage"] == pytest.approx(0.5, abs=0.02)


def test_one_band_for_every_runtime_keeps_the_rule_on_each(tiny_pap):
    probs, targets = _calibrated_binary(seed=8)
    rng = np.random.default_rng(9)
    shifted = np.clip(probs + rng.normal(0, 0.03, probs.shape), 0.001, 0.999)      # INT8-like noise
    shifted /= shifted.sum(1, keepdims=True)
    chosen = choose_refer_threshold_for_forms({"openvino_int8": probs, "onnx_int8": shifted}, targets,
                                              target_accuracy=0.9)
    singles = [choose_refer_threshold(p, targets, target_accuracy=0.9)["threshold"] for p in (probs, shifted)]
    assert chosen["threshold"] == max(singles) and chosen["form"] == "openvino_int8"
    for p in (probs, shifted):
        assert refer_band(p, targets, chosen["threshold"])["accepted_accuracy"] >= 0.9


def test_refer_band_on_the_real_model_is_chosen_on_the_int8_forms(tiny_pap):
    report = tiny_pap["report"]
    refer = report["refer"]
    assert set(refer["per_form"]) == {"openvino_int8", "onnx_int8"}
    assert refer["threshold"] == max(r["threshold"] for r in refer["per_form"].values())
    assert refer["images"] == report["images"] and refer["accepted"] + refer["referred"] == refer["images"]
    assert all(form["metrics"]["refer"]["threshold"] == refer["threshold"] for form in report["forms"].values())


# ---------------------------------------------------------------- the NumPy figures against scikit-learn

def test_roc_and_auc_equal_scikit_learn():
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc
    rng = np.random.default_rng(2)
    targets = rng.integers(0, 3, 500)
    probs = softmax(rng.normal(0, 1, (500, 3)) + np.eye(3)[targets] * 1.2)
    probs = np.round(probs, 2)                                           # ties, as with real INT8 outputs
    ours = roc_analysis(probs, targets, ("a", "b", "c"))
    for i, name in enumerate("abc"):
        assert ours["per_class"][name]["auc"] == pytest.approx(roc_auc_score(targets == i, probs[:, i]))
        fpr, tpr, _ = sk_roc(targets == i, probs[:, i], drop_intermediate=False)
        f2, t2, _ = roc_curve(probs[:, i], targets == i)
        assert np.allclose(fpr, f2) and np.allclose(tpr, t2)
    assert ours["macro_auc"] == pytest.approx(np.mean([roc_auc_score(targets == i, probs[:, i]) for i in range(3)]))


def test_a_class_absent_from_the_set_has_no_auc():
    probs = softmax(np.random.default_rng(0).normal(size=(20, 3)))
    roc = roc_analysis(probs, np.array([0, 1] * 10), ("a", "b", "c"))
    assert roc["per_class"]["c"]["auc"] is None and roc["macro_auc"] is not None


def test_confusion_and_balanced_accuracy_equal_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix
    rng = np.random.default_rng(4)
    targets = rng.choice([0, 1, 3], 300)                                  # class 2 never occurs
    logits = rng.normal(size=(300, 4)) + np.eye(4)[targets]
    m = classification_metrics(logits, targets, ("a", "b", "c", "d"))
    assert m["confusion"]["matrix"] == confusion_matrix(targets, logits.argmax(1), labels=[0, 1, 2, 3]).tolist()
    with pytest.warns(UserWarning):
        expected = balanced_accuracy_score(targets, logits.argmax(1))
    assert m["balanced_accuracy"] == pytest.approx(expected)


# ---------------------------------------------------------------- user errors (nothing changes)

from test_export_pipeline import _error  # noqa: E402 (the same check of a bccdms-export user error)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("option, value, words", [
    ("--refer-target", "1.5", "--refer-target must be"),
    ("--false-alarm", "0", "--false-alarm"),
])
def test_out_of_range_options_are_refused_and_change_nothing(capsys, tiny_pap, tmp_path, option, value, words):
    folder = tmp_path / "model"
    shutil.copytree(tiny_pap["model_dir"], folder)
    before = _snapshot(folder)
    err = _error(capsys, ["evaluate", str(folder), "--data", str(tiny_pap["sets"]["train"]), option, value, "--quiet"])
    assert words in err
    assert _snapshot(folder) == before


def test_a_missing_out_of_scope_dataset_is_refused_and_changes_nothing(capsys, tiny_pap, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_pap["model_dir"], folder)
    before = _snapshot(folder)
    err = _error(capsys, ["evaluate", str(folder), "--data", str(tiny_pap["sets"]["train"]), "--ood-data",
                          str(tmp_path / "nowhere"), "--quiet"])
    assert "does not exist" in err
    assert _snapshot(folder) == before


def test_a_damaged_gate_file_is_a_clear_error(capsys, tiny_pap, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_pap["model_dir"], folder)
    (folder / "ood.npz").write_bytes(b"not numpy")
    err = _error(capsys, ["evaluate", str(folder), "--data", str(tiny_pap["sets"]["held_out"]), "--split", "all",
                          "--quiet"])
    assert "out-of-scope statistics" in err and "cannot be read" in err


def test_no_write_leaves_the_model_folder_alone(tiny_pap, tmp_path):
    from export.evaluate import evaluate
    folder = tmp_path / "model"
    shutil.copytree(tiny_pap["model_dir"], folder)
    before = _snapshot(folder)
    report = evaluate(folder, data=str(tiny_pap["sets"]["train"]), progress=False, write=False)
    assert report["split"] == "val" and "refer" not in report
    assert _snapshot(folder) == before
