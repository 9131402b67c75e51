"""A demo pack never runs on a clinical box, whoever signed it: not as the current pack, not
with `--models DIR`, not through the engine and not through `appliance diagnose`. Outside
clinical mode the same trusted demo pack runs and says DEMO."""
from __future__ import annotations

import pytest

from appliance.cli import main
from appliance.errors import PackError
from appliance.inference.engine import Engine

from inference_helpers import ORIGINAL_IMAGE, cli_box, clone_pack, reseal, trusting


def make_trusted_demo_pack(src, dst, key):
    """The tiny pack marked as a demo pack and signed by the box's TRUSTED key (the ML team
    building a demo with its real key, or a demo pack left installed when the box went clinical)."""
    def make_demo(manifest: dict) -> None:
        manifest["demo"], manifest["pack_id"] = True, "trusted-demo"
        for entry in manifest["models"].values():
            entry["demo"], entry["version"] = True, entry["version"] + "-demo"
    return reseal(clone_pack(src, dst), key, make_demo)


@pytest.fixture(scope="module")
def trusted_demo(tiny_pack, pack_key, tmp_path_factory):
    return make_trusted_demo_pack(tiny_pack, tmp_path_factory.mktemp("trusted-demo") / "demo", pack_key)


def install_current(cfg, pack) -> None:
    cfg.packs_dir.mkdir(parents=True, exist_ok=True)
    (cfg.packs_dir / "current").symlink_to(pack)


def test_engine_on_a_clinical_box_refuses_a_trusted_demo_pack_as_current(cfg, pack_key, trusted_demo, datasets):
    cfg = trusting(cfg, pack_key)
    cfg.post.mode = "clinical"
    install_current(cfg, trusted_demo)
    engine = Engine.from_config(cfg)
    status = engine.status()
    assert status["models"] == {} and engine.analyses() == [] and status["demo"] is False
    assert any("demo pack" in p and "clinical" in p for p in status["problems"])
    with pytest.raises(PackError) as err:
        engine.diagnose(datasets / ORIGINAL_IMAGE, "pap_smear")
    assert "demo pack" in err.value.message


def test_engine_on_a_clinical_box_refuses_a_trusted_demo_pack_given_as_models_dir(cfg, pack_key, trusted_demo):
    cfg = trusting(cfg, pack_key)
    cfg.post.mode = "clinical"
    with pytest.raises(PackError, match="demo pack.*clinical use"):
        Engine.from_config(cfg, models_dir=trusted_demo)


def test_the_same_pack_runs_as_demo_outside_clinical_mode(cfg, pack_key, trusted_demo, datasets):
    cfg = trusting(cfg, pack_key)
    install_current(cfg, trusted_demo)
    result = Engine.from_config(cfg).diagnose(datasets / ORIGINAL_IMAGE, "pap_smear")
    assert result.demo is True


@pytest.fixture
def clinical_box(tmp_path, pack_key, monkeypatch):
    return cli_box(tmp_path, monkeypatch, pack_key, '[post]\nmode = "clinical"\n')


def test_diagnose_on_a_clinical_box_refuses_a_trusted_demo_pack(capsys, clinical_box, trusted_demo, datasets):
    image = str(datasets / ORIGINAL_IMAGE)
    code = main(["diagnose", image, "--analysis", "pap_smear", "--json", "--models", str(trusted_demo), *clinical_box])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    assert "demo pack" in err and "clinical use" in err and "Traceback" not in err


def test_diagnose_on_a_clinical_box_with_a_trusted_demo_pack_installed_runs_nothing(
        capsys, clinical_box, trusted_demo, datasets, tmp_path):
    packs = tmp_path / "data" / "packs"
    packs.mkdir(parents=True)
    (packs / "current").symlink_to(trusted_demo)
    code = main(["diagnose", str(datasets / ORIGINAL_IMAGE), "--analysis", "pap_smear", "--json", *clinical_box])
    out, err = capsys.readouterr()
    assert code != 0 and '"demo": true' not in out
    assert "demo pack" in err and "Traceback" not in err
