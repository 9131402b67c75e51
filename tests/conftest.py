"""Shared fixtures. See docs/ARCHITECTURE.md, "Tests and benchmarks"."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
ARTIFACTS = REPO / "artifacts"


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The real public sample images beside the checkout. Tests that need them fail without them."""
    if not (DATASETS / "README.md").is_file():
        pytest.fail(f"The shared datasets are missing: expected {DATASETS} (CI keeps ../shared beside the clone).")
    return DATASETS


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave screenshots and reports for people to look at (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def cfg(data_dir: Path, monkeypatch):
    """A configuration on a temporary data folder, with no BCCDMS_* variables leaking in."""
    for key in list(os.environ):
        if key.startswith("BCCDMS_"):
            monkeypatch.delenv(key)
    from appliance.config import load_config
    return load_config(data_dir=data_dir, environ={})


@pytest.fixture(scope="session")
def pack_key():
    """The Ed25519 key that signs the test packs; its public key is trusted by `trusting_cfg`."""
    from appliance import signing
    return signing.new_private_key()


@pytest.fixture(scope="session")
def tiny_pack(tmp_path_factory, pack_key) -> Path:
    """A real, signed pack for all seven models, built through the export code path with a tiny
    ResNet (same graph shape and outputs as ResNet152, far fewer channels), INT8 for both runtimes."""
    from export.demo import build_demo_pack
    out = tmp_path_factory.mktemp("packs") / "tiny"
    build_demo_pack(out, arch="tiny", private_key=pack_key, demo=False, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_pap(tmp_path_factory, datasets, pack_key) -> dict:
    """A tiny Pap-smear model really trained on Herlev cells, then evaluated (refer band, out-of-scope
    gate, model card) and packed with `pack_key` (about 45 s; tests/models_eval_helpers.py)."""
    from models_eval_helpers import build_tiny_pap
    return build_tiny_pap(tmp_path_factory.mktemp("tiny_pap"), datasets, pack_key)


@pytest.fixture
def store(cfg):
    """An open record store on ``cfg``'s data folder, closed after the test."""
    from appliance.store import Store
    with Store.open(cfg) as opened:
        yield opened
