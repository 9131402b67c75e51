"""The command line end to end (real processes), and a stick "pulled" in the middle of an export."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.exchange import container, dhis2, importer, usb
from appliance.exchange.container import BundleRefused

from test_exchange_support import snapshot, world  # noqa: F401

APPLIANCE = [str(Path(sys.executable).with_name("appliance"))]


def _run(*args, check=True, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")}
    done = subprocess.run(APPLIANCE + [str(a) for a in args], capture_output=True, text=True, env=env,
                          timeout=300, **kw)
    if check:
        assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


def _config_file(path: Path, *, supervisor_public_key: str = "", known_posts: dict | None = None,
                 dhis2_mapping: Path | None = None) -> Path:
    lines = ["[post]", 'name = "Agaro health post"', "[exchange]",
             f'supervisor_public_key = "{supervisor_public_key}"']
    if dhis2_mapping:
        lines.append(f'dhis2_mapping = "{dhis2_mapping}"')
    if known_posts:
        lines.append("[exchange.known_posts]")
        lines += [f'"{k}" = "{v}"' for k, v in known_posts.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_keys_export_and_import_from_the_command_line(world, tmp_path):
    w = world
    sup_dir, post_dir = tmp_path / "sup-cli", w.post.cfg.data_dir
    init = _run("keys", "supervisor-init", "--data-dir", sup_dir)
    public = next(line.split('"')[1] for line in init.stdout.splitlines() if line.startswith("supervisor_public_key"))
    assert (sup_dir / "keys" / "supervisor_exchange.key").stat().st_mode & 0o777 == 0o600
    again = _run("keys", "supervisor-init", "--data-dir", sup_dir, check=False)
    assert again.returncode != 0 and "already exists" in again.stderr

    post_cfg = _config_file(tmp_path / "post.toml", supervisor_public_key=public)
    shown = json.loads(_run("keys", "show", "--json", "--data-dir", post_dir, "--config", post_cfg).stdout)
    assert shown["post_id"] == w.post.store.post_id and shown["signing_key"] == w.post_key()

    w.add_exam("JU-1", "Almaz Kebede")
    w.add_exam("JU-2", "Hana Girma", analysis="breast_histopathology", label="ductal_carcinoma")
    out = _run("export", "--to", w.stick, "--csv", "--data-dir", post_dir, "--config", post_cfg)
    assert "2 exams" in out.stdout and "2 images" in out.stdout
    nothing = _run("export", "--to", w.stick, "--data-dir", post_dir, "--config", post_cfg)
    assert "Nothing is new" in nothing.stdout

    sup_cfg = _config_file(tmp_path / "sup.toml", known_posts={shown["post_id"]: shown["signing_key"]})
    first = _run("import", w.stick, "--json", "--data-dir", sup_dir, "--config", sup_cfg)
    (report,) = [json.loads(line) for line in first.stdout.splitlines()]
    assert report["merged"]["exams"]["inserted"] == 2 and report["images_added"] == 2
    second = _run("import", w.stick, "--data-dir", sup_dir, "--config", sup_cfg)
    assert "already imported; nothing changed" in second.stdout

    mapping = tmp_path / "mapping.toml"
    mapping.write_text(dhis2.DEFAULT_MAPPING.read_text().replace(
        "[org_units]\n", f'[org_units]\n"{shown["post_id"]}" = "OU_AGARO"\n').replace(
        'count = "decided"', 'count = "all"'))
    _config_file(sup_cfg, known_posts={shown["post_id"]: shown["signing_key"]}, dhis2_mapping=mapping)
    _run("stats", "--dhis2", tmp_path / "values.json", "--data-dir", sup_dir, "--config", sup_cfg)
    values = json.loads((tmp_path / "values.json").read_text())["dataValues"]
    assert {v["orgUnit"] for v in values} == {"OU_AGARO"} and sum(
        int(v["value"]) for v in values if v["dataElement"].endswith("_TOTAL")) == 2

    missing = _run("import", tmp_path / "nope.bccdms", "--data-dir", sup_dir, "--config", sup_cfg, check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    no_key = _run("export", "--to", w.stick, "--data-dir", post_dir, check=False)
    assert no_key.returncode == 2 and "No supervisor key" in no_key.stderr


def _noise_png(seed: int, side: int = 1100) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def test_a_stick_pulled_during_an_export_never_holds_a_bundle_that_imports(world, tmp_path):
    w = world
    for i in range(12):                                 # ~3.6 MB each: the export takes a moment
        w.add_exam(f"JU-{i}", f"Patient {i}", image=_noise_png(i))
    w.post.store.close()                                # the exporting process owns the store now
    post_cfg = _config_file(tmp_path / "post.toml", supervisor_public_key=w.supervisor_public_key)
    before = snapshot(w.supervisor.cfg.data_dir)
    killed_mid_write = 0
    for attempt in range(4):
        proc = subprocess.Popen(APPLIANCE + ["export", "--to", str(w.stick), "--data-dir", str(w.post.cfg.data_dir),
                                             "--config", str(post_cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={k: v for k, v in os.environ.items() if not k.startswith("BCCDMS_")})
        deadline = time.monotonic() + 60
        partial = None
        while time.monotonic() < deadline and proc.poll() is None:
            partial = next((p for p in w.stick.iterdir() if p.name.endswith(container.PARTIAL_SUFFIX)), None)
            if partial is not None and partial.stat().st_size > (1 << 20) * (2 + 8 * attempt):
                break
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        whole = usb.bundles_on(w.stick)
        if whole:                                       # it finished first: what is there must be whole
            importer.import_bundle(w.supervisor.store, w.supervisor.cfg, whole[0])
            break
        killed_mid_write += 1
        assert partial is not None and partial.exists()
        try:
            importer.import_bundle(w.supervisor.store, w.supervisor.cfg, partial)
            raise AssertionError("a half-written bundle was imported")
        except BundleRefused as exc:
            assert "incomplete" in exc.message
        assert snapshot(w.supervisor.cfg.data_dir) == before
    assert killed_mid_write >= 1

    # The cursor did not move: the next export carries everything, and it leaves no half file.
    done = _run("export", "--to", w.stick, "--data-dir", w.post.cfg.data_dir, "--config", post_cfg)
    assert "12 exams" in done.stdout or usb.bundles_on(w.stick)
    assert not [p for p in w.stick.iterdir() if p.name.endswith(container.PARTIAL_SUFFIX)]
    for bundle in usb.bundles_on(w.stick):
        importer.import_bundle(w.supervisor.store, w.supervisor.cfg, bundle)
    assert w.supervisor.store.stats()["exams"] == 12
    w.post.reopen()
