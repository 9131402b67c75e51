"""`appliance diagnose`: JSON lines and human output, many images with the models loaded
once, bad images and bad flags as one sentence, and --save through the real record store."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import main

from inference_helpers import ORIGINAL_IMAGE, cli_box, make_demo_pack


@pytest.fixture(scope="module")
def demo_pack(tiny_pack, tmp_path_factory):
    return make_demo_pack(tiny_pack, tmp_path_factory.mktemp("demo") / "demo")


@pytest.fixture
def box(tmp_path, pack_key, demo_pack, monkeypatch):
    """A data folder and a config file that trusts the test key and knows the demo pack."""
    return cli_box(tmp_path, monkeypatch, pack_key, f'[inference]\ndemo_pack = "{demo_pack}"\n')


def images(datasets, count=3) -> list[str]:
    return [str(p) for p in sorted((datasets / "herlev" / "originals").glob("*/*.jpg"))[:count]]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_prints_one_object_per_image_with_the_contract_fields(capsys, box, tiny_pack, datasets):
    files = images(datasets, 3)
    code, out, err = run(capsys, "diagnose", *files, "--analysis", "pap_smear", "--json",
                         "--models", str(tiny_pack), *box)
    assert code == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["image"] for d in docs] == files
    for doc in docs:
        assert {"analysis", "demo", "steps", "quality", "timings_ms", "label", "path", "image_info"} <= set(doc)
        assert doc["analysis"] == "pap_smear" and doc["demo"] is False
        step = doc["steps"][0]
        assert {"model", "version", "probabilities", "top"} <= set(step)
        assert set(step["probabilities"]) == {"normal", "abnormal"} and step["version"] == "0.1.0"
        assert "warnings" in doc["quality"]
    # Models are loaded once: only the first image pays for loading.
    assert "load" in docs[0]["timings_ms"] and not any("load" in d["timings_ms"] for d in docs[1:])


def test_human_output_shows_classes_path_quality_models_timings_and_demo(capsys, box, datasets):
    code, out, err = run(capsys, "diagnose", str(datasets / ORIGINAL_IMAGE), "--analysis",
                         "breast_histopathology", *box)
    assert code == 0, err
    assert "DEMO: untrained demo models" in out
    assert "Breast: benign or malignant" in out and " %" in out and "Path: " in out
    assert "Quality: OK" in out and "Timings: decode" in out and "total" in out
    assert "Models: pack demo 0.1.0, openvino int8" in out
    assert "\033[" not in out                 # no colour codes when not on a terminal


def test_a_bad_image_among_several_gets_its_line_and_the_others_run(capsys, box, tiny_pack, datasets, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    good = images(datasets, 2)
    code, out, err = run(capsys, "diagnose", good[0], str(bad), good[1], str(tmp_path / "missing.png"),
                         "--analysis", "pap_smear", "--json", "--models", str(tiny_pack), *box)
    assert code == 2
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["image"] for d in lines] == [good[0], str(bad), good[1], str(tmp_path / "missing.png")]
    assert "label" in lines[0] and "label" in lines[2]
    assert "not an image" in lines[1]["error"] and "does not exist" in lines[3]["error"]
    assert f"{bad}: This file is not an image" in err and "2 of 4 images could not be analysed" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["--analysis", "lung"], "no analysis called 'lung'"),
    (["--analysis", "pap_smear", "--save"], "--save needs the patient"),
    (["--analysis", "pap_smear", "--patient", "JU-1"], "only used with --save"),
])
def test_bad_flags_are_one_sentence_and_nothing_runs(capsys, box, datasets, argv, words):
    code, out, err = run(capsys, "diagnose", images(datasets, 1)[0], *argv, *box)
    assert code == 2 and out == "" and words in err and "Traceback" not in err


def test_models_dir_must_verify(capsys, box, tiny_pack, tmp_path, datasets):
    stranger = tmp_path / "other.toml"
    stranger.write_text("")
    code, out, err = run(capsys, "diagnose", images(datasets, 1)[0], "--analysis", "pap_smear",
                         "--models", str(tiny_pack), "--config", str(stranger), "--data-dir", str(tmp_path / "d"))
    assert code == 2 and out == "" and "does not trust" in err


def test_save_registers_the_patient_and_stores_each_exam(capsys, box, tiny_pack, datasets):
    files = images(datasets, 2)
    code, out, err = run(capsys, "diagnose", *files, "--analysis", "pap_smear", "--json", "--models", str(tiny_pack),
                         "--save", "--patient", "JU-000123", "--name", "Almaz Bekele", *box)
    assert code == 0, err
    docs = [json.loads(line) for line in out.splitlines()]
    assert all(d["saved"]["patient"] == "JU-000123" for d in docs)
    from appliance.config import load_config
    from appliance.store import Store
    store = Store.open(load_config(box[1], box[3]))
    try:
        patient = store.patients.by_pid("JU-000123")
        assert patient["full_name"] == "Almaz Bekele"
        exams = store.exams.for_patient(patient["uuid"])
        assert sorted(e["uuid"] for e in exams) == sorted(d["saved"]["exam"] for d in docs)
        for exam in exams:
            assert exam["source"] == "cli" and exam["analysis"] == "pap_smear" and exam["demo"] is False
            assert exam["label"] == exam["result"]["label"] and exam["status"] == "awaiting_decision"
            assert store.images.path(exam["image"]["sha256"]).is_file()
    finally:
        store.close()
    # A known patient needs no name the second time.
    code, out, err = run(capsys, "diagnose", files[0], "--analysis", "pap_smear", "--models", str(tiny_pack),
                         "--save", "--patient", "JU-000123", *box)
    assert code == 0 and "Saved: exam" in out


def test_save_for_an_unknown_patient_without_a_name_changes_nothing(capsys, box, tiny_pack, datasets, tmp_path):
    code, out, err = run(capsys, "diagnose", images(datasets, 1)[0], "--analysis", "pap_smear",
                         "--models", str(tiny_pack), "--save", "--patient", "JU-9", *box)
    assert code == 2 and "no patient JU-9" in err and "--name" in err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, out, err = run(capsys, "diagnose", str(bad), "--analysis", "pap_smear", "--models", str(tiny_pack),
                         "--save", "--patient", "JU-9", "--name", "Nobody", *box)
    assert code == 2
    from appliance.config import load_config
    from appliance.store import Store
    store = Store.open(load_config(box[1], box[3]))
    try:
        assert store.patients.by_pid("JU-9") is None      # only bad images: no patient registered
    finally:
        store.close()


def test_the_console_script_runs(box, tiny_pack, datasets):
    script = Path(sys.executable).parent / "appliance"
    done = subprocess.run([str(script), "diagnose", images(datasets, 1)[0], "--analysis", "pap_smear", "--json",
                           "--models", str(tiny_pack), *box], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"][0]["model"] == "pap_smear"
