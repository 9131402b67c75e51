"""Two real boxes for the exchange tests: a health post and a supervisor, each with its own data folder.

Imported by the ``test_exchange_*`` modules (it holds no tests itself).
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance import signing
from appliance.config import load_config
from appliance.exchange import container, keys, layout
from appliance.store.store import Store

HERLEV = ("herlev", "eval")
BREAKHIS = ("breakhis", "eval")


@dataclass
class Box:
    cfg: object
    store: Store

    def reopen(self) -> None:
        self.store.close()
        self.store = Store.open(self.cfg)


@dataclass
class World:
    tmp: Path
    supervisor: Box
    post: Box
    stick: Path
    datasets: Path
    images: list[Path] = field(default_factory=list)

    def add_exam(self, pid: str, name: str, *, analysis: str = "pap_smear", label: str = "normal",
                 image: Path | bytes | None = None, box: Box | None = None, demo: bool = False,
                 decide: str | None = None, **patient) -> tuple[dict, dict]:
        box = box or self.post
        store = box.store
        person = store.patients.by_pid(pid) or store.patients.register(pid, name, by="nurse1", **patient)
        data = image if isinstance(image, bytes) else Path(image or self.next_image(analysis)).read_bytes()
        exam = store.exams.save({"patient_uuid": person["uuid"], "analysis": analysis, "source": "file",
                                 "result": {"label": label, "demo": demo, "image": f"{name}.jpg"}},
                                data, by="nurse1")
        if decide:
            exam = store.exams.decide(exam["uuid"], decide, by="doctor1")
        return person, exam

    def next_image(self, analysis: str) -> Path:
        dataset = BREAKHIS if analysis == "breast_histopathology" else HERLEV
        files = sorted(p for folder in sorted((self.datasets / dataset[0] / dataset[1]).iterdir())
                       for p in sorted(folder.iterdir()) if p.suffix.lower() in (".jpg", ".png"))
        used = len(self.images)
        self.images.append(files[used % len(files)])
        return self.images[-1]

    def post_key(self, box: Box | None = None) -> str:
        return signing.public_b64(keys.post_signing_key((box or self.post).cfg))

    def trust(self, box: Box | None = None) -> None:
        box = box or self.post
        self.supervisor.cfg.exchange.known_posts[box.store.post_id] = self.post_key(box)

    def new_post(self, name: str) -> Box:
        cfg = post_config(self.tmp / name, name, self.supervisor_public_key)
        return Box(cfg, Store.open(cfg))

    def bundle_from_new_post(self, name: str) -> tuple[Box, Path]:
        """A post the supervisor does not know yet, with one exam, and its first bundle on the stick."""
        from appliance.exchange.export import export_bundle
        box = self.new_post(name)
        self.add_exam("X-1", "Almaz Kebede", box=box)
        return box, export_bundle(box.store, box.cfg, self.stick).path

    @property
    def supervisor_public_key(self) -> str:
        return signing.b64(keys.x25519_public_raw(keys.load_supervisor_key(self.supervisor.cfg)))

    def close(self) -> None:
        for box in (self.supervisor, self.post):
            box.store.close()


def post_config(data_dir: Path, name: str, supervisor_public_key: str):
    cfg = load_config(data_dir=data_dir, environ={})
    cfg.post.name = name
    cfg.exchange.supervisor_public_key = supervisor_public_key
    return cfg


def build_world(tmp_path: Path, datasets: Path) -> World:
    """A supervisor box with its key pair and one post that trusts it (and is trusted by it)."""
    sup_cfg = load_config(data_dir=tmp_path / "supervisor", environ={})
    sup_cfg.post.name = "District office"
    supervisor_key = keys.create_supervisor_key(keys.supervisor_key_path(sup_cfg))
    post_cfg = post_config(tmp_path / "post", "Agaro health post",
                           signing.b64(keys.x25519_public_raw(supervisor_key)))
    stick = tmp_path / "usb" / "STICK"
    stick.mkdir(parents=True)
    w = World(tmp_path, Box(sup_cfg, Store.open(sup_cfg)), Box(post_cfg, Store.open(post_cfg)), stick, datasets)
    w.trust()
    return w


@pytest.fixture
def world(tmp_path, datasets):
    w = build_world(tmp_path, datasets)
    yield w
    w.close()


def snapshot(data_dir: Path) -> dict[str, str]:
    """Every file of a data folder with its sha256, except the exchange work folder and caches."""
    out = {}
    for path in sorted(Path(data_dir).rglob("*")):
        rel = path.relative_to(data_dir).as_posix()
        if rel.startswith(("exchange/", "store/index/")) or not path.is_file():
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# -- crafting bundles by hand (hostile ones included) ---------------------------------------

def tar_member(name: str, data: bytes = b"", **attrs) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def manifest_for(header: dict, tar_members: list[tuple[tarfile.TarInfo, bytes]], **overrides) -> bytes:
    listed = {info.name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
              for info, data in tar_members if info.isreg()}
    doc = {"format": layout.MANIFEST_FORMAT, **header, "range": {}, "counts": {}, "members": listed}
    doc.update(overrides)
    return json.dumps(doc).encode()


def craft_bundle(world: World, members: list[tuple[tarfile.TarInfo, bytes]], *, post: Box | None = None,
                 header: dict | None = None, manifest: bytes | None = None, signing_key=None,
                 recipient=None, name: str = "crafted.bccdms") -> Path:
    """A bundle signed by a post the supervisor trusts, holding exactly ``members`` (+ a manifest)."""
    post = post or world.post
    head = {"bundle_id": "0f8e6a52-4d0c-4a59-9d9e-4bb1e1a3c001", "post_id": post.store.post_id,
            "post_name": post.cfg.post.name, "created": "2026-11-26T08:00:00.000Z", "kind": "records",
            "seq_from": 0, "seq_to": 10, "full": True, "software_version": "0.1.0"}
    head.update(header or {})
    body = io.BytesIO()
    with tarfile.open(fileobj=body, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
        if manifest is not False:
            data = manifest if manifest is not None else manifest_for(head, members)
            tar.addfile(tar_member(layout.MANIFEST, data)[0], io.BytesIO(data))
    writer = container.BundleWriter(world.stick, name, head, signing_key or keys.post_signing_key(post.cfg),
                                    recipient or keys.supervisor_public_key(post.cfg))
    writer.write(body.getvalue())
    return writer.commit()


def gz_lines(records: list[dict]) -> bytes:
    import gzip
    return gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in records))
