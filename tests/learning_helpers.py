"""Health posts that save, decide and export real exams, for the learning-loop tests.

Each post is a real box (its own data folder and store, a supervisor it trusts); its exams are
saved with ``store.exams.save`` and decided with ``store.exams.decide``; its research export is the
real de-identified bundle, unpacked by the supervisor's real ``extract_bundle``. Imported by the
``test_learning_*`` modules (no tests here).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from appliance.exchange import importer
from appliance.exchange.export import export_bundle

from test_exchange_support import Box, World, build_world


@dataclass
class Post:
    world: World
    box: Box
    extracted: list[Path] = field(default_factory=list)

    @property
    def store(self):
        return self.box.store

    def exam(self, pid: str, image: Path | bytes, *, analysis: str = "pap_smear", model_label: str = "normal",
             decide: str | None = None, demo: bool = False, result: dict | None = None) -> dict:
        """One exam of patient ``pid`` (registered on first use), decided when ``decide`` is given."""
        store = self.store
        person = store.patients.by_pid(pid) or store.patients.register(pid, f"Patient {pid}", age_years=35,
                                                                        by="nurse1")
        data = image if isinstance(image, bytes) else Path(image).read_bytes()
        exam = store.exams.save({"patient_uuid": person["uuid"], "analysis": analysis, "source": "file",
                                 "result": result or {"label": model_label, "demo": demo, "image": "field.jpg"}},
                                data, by="nurse1")
        if decide:
            exam = store.exams.decide(exam["uuid"], decide, by="doctor1")
        return exam

    def research_export(self, full: bool = False) -> Path:
        """The post's de-identified export (what changed since the last one), unpacked at the supervisor."""
        w = self.world
        bundle = export_bundle(self.store, self.box.cfg, w.stick, deidentified=True, full=full)
        assert bundle.path is not None, "nothing new to export"
        out = importer.extract_bundle(w.supervisor.cfg, bundle.path, w.tmp / "research").extracted_to
        self.extracted.append(out)
        return out


def posts(tmp_path: Path, datasets: Path, count: int) -> tuple[World, list[Post]]:
    """A supervisor and ``count`` posts that trust it and that it trusts."""
    world = build_world(tmp_path, datasets)
    out = [Post(world, world.post)]
    for i in range(1, count):
        box = world.new_post(f"Post {i + 1}")
        world.trust(box)
        out.append(Post(world, box))
    return world, out


def close(world: World, all_posts: list[Post]) -> None:
    for post in all_posts[1:]:
        post.box.store.close()
    world.close()
