"""The inference engine: packs → runtime → cascade → result, shared by every server thread.

``Engine.from_config(cfg)`` only reads and verifies manifests; a model is compiled the first
time it is needed (or by ``preload()``), from the bytes its pack verified. Model runs are
serialised (the box has 2–4 cores and each run already uses them all) and ``busy`` is set
while one runs, so the camera preview can pause instead of competing for the cores.

Where models come from, first match wins per model:
``--models DIR`` (only that pack) | ``<data>/packs/current`` then the demo pack
(``[inference] demo_pack``, default ``weights/demo``) unless the box is in clinical mode.
"""
from __future__ import annotations

import os
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import catalogue
from ..config import Config
from ..errors import PackError, UserError
from . import heatmap, imageio, memory, ood, quality
from .budget import MemoryBudget
from .pack import ModelEntry, Pack, load_pack
from .prepared import PreparedImage
from .prepared import prepare as prepare_image
from .preprocess import preprocess
from .result import DiagnosisResult
from .run import ImageRun, is_demo
from .runtimes import base as runtimes
from .runtimes.base import LoadedModel, ModelOutput, Runtime, RuntimeUnavailable

# With the fast JPEG decode, decode at no less than this multiple of the model's resize
# side: the final bilinear resize then still averages >= 2 source pixels per output pixel,
# which keeps the probabilities within the bound bench/bench_imageio.py reports.
FAST_DECODE_MARGIN = 2
_LATENCY_WINDOW = 50
# After a decode this big is freed, hand the C heap's free pages back to the system at once.
TRIM_AFTER_BYTES = 32 * 1024 * 1024


@dataclass
class ModelSlot:
    """One catalogue model as this box provides it: from which pack, and its compiled form."""
    pack: Pack
    entry: ModelEntry
    source: str                                   # "current" | "demo" | "models-dir"
    loaded: LoadedModel | None = None
    classifier: tuple[np.ndarray, np.ndarray] | None = None
    gate: ood.Gate | None = None                  # out-of-scope statistics, read on first use
    gate_read: bool = False
    latencies: deque = field(default_factory=lambda: deque(maxlen=_LATENCY_WINDOW))


class Engine:
    def __init__(self, cfg: Config, *, models_dir: str | os.PathLike | None = None):
        self.cfg = cfg
        self.models_dir = Path(models_dir) if models_dir else None
        self.options = runtimes.options_from_config(cfg.inference)
        self.busy = threading.Event()
        self.decode_budget = MemoryBudget(cfg.inference.decode_memory_mb * 1024 * 1024,
                                          cfg.inference.decode_wait_seconds)
        self._run_lock = threading.Lock()         # one model run at a time
        self._load_lock = threading.RLock()       # loading, reloading, choosing the runtime
        self._runtime: Runtime | None = None
        self._runtime_error: RuntimeUnavailable | None = None
        self._runtime_problems: list[str] = []
        self.packs: list[tuple[str, Pack]] = []
        self.problems: list[str] = []
        self.slots: dict[str, ModelSlot] = {}
        self._resolve()

    @classmethod
    def from_config(cls, cfg: Config, *, models_dir: str | os.PathLike | None = None) -> "Engine":
        """Cheap: verifies manifests and signatures; with ``models_dir`` a bad pack raises."""
        return cls(cfg, models_dir=models_dir)

    # -- packs --------------------------------------------------------------------------------
    def _resolve(self) -> None:
        trusted = self.cfg.security.trusted_model_keys
        allow_demo = not self.cfg.clinical
        packs: list[tuple[str, Pack]] = []
        problems: list[str] = []
        if self.models_dir is not None:
            packs.append(("models-dir", load_pack(self.models_dir, trusted, allow_demo)))
        else:
            current = self.cfg.packs_dir / "current"
            if current.exists():
                try:
                    packs.append(("current", load_pack(current.resolve(), trusted, allow_demo)))
                except PackError as exc:
                    problems.append(str(exc))
            if allow_demo:
                demo_dir = self.cfg.demo_pack_dir
                if (demo_dir / "manifest.json").is_file():
                    try:
                        packs.append(("demo", load_pack(demo_dir, trusted, allow_demo=True)))
                    except PackError as exc:
                        problems.append(str(exc))
        slots: dict[str, ModelSlot] = {}
        for source, pack in packs:
            for model_id, entry in pack.models.items():
                slots.setdefault(model_id, ModelSlot(pack, entry, source))
        if not slots and not problems:
            problems.append("No model pack is installed." if self.cfg.clinical else
                            "No model pack is installed and the demo pack has not been built.")
        self.packs, self.problems, self.slots = packs, problems, slots

    def reload(self) -> None:
        """Read the packs again (after `appliance models install` or a rollback); models are
        compiled again when next needed."""
        with self._load_lock, self._run_lock:
            self._resolve()

    # -- runtime and models -------------------------------------------------------------------
    def runtime(self) -> Runtime:
        with self._load_lock:
            if self._runtime is None and self._runtime_error is None:
                try:
                    self._runtime, self._runtime_problems = runtimes.choose(self.cfg.inference.runtime, self.options)
                except RuntimeUnavailable as exc:
                    self._runtime_error = exc
            if self._runtime_error is not None:
                raise self._runtime_error
            return self._runtime

    def _slot(self, model_id: str, slots: dict[str, ModelSlot] | None = None) -> ModelSlot:
        slot = (self.slots if slots is None else slots).get(model_id)
        if slot is None:
            spec = catalogue.model(model_id)
            why = f" ({self.problems[0].rstrip('.')})" if self.problems else ""
            raise PackError(f"No model for “{spec.name}” is installed{why}.",
                            "Install a model pack with 'appliance models install PATH', or build the demo "
                            "pack with 'bccdms-export demo --out weights/demo'.")
        return slot

    def _loaded(self, slot: ModelSlot) -> LoadedModel:
        if slot.loaded is None:
            with self._load_lock:
                if slot.loaded is None:
                    runtime = self.runtime()
                    if "classifier" in slot.entry.files:
                        slot.classifier = heatmap.load_classifier(slot.pack.read_verified(slot.entry.files["classifier"]))
                    slot.loaded = runtime.load(slot.pack, slot.entry)
                    memory.return_freed_memory()
        return slot.loaded

    def _gate(self, slot: ModelSlot) -> ood.Gate | None:
        """The model's out-of-scope gate, or None when its pack has none (or one this software
        cannot read: reported in ``problems``, and results say ``assessed: false``)."""
        if not slot.gate_read:
            with self._load_lock:
                if not slot.gate_read and "ood" in slot.entry.files:
                    try:
                        slot.gate = ood.Gate.from_bytes(slot.pack.read_verified(slot.entry.files["ood"]))
                    except ValueError as exc:
                        self.problems.append(f"The out-of-scope statistics of {slot.entry.id} in pack "
                                             f"{slot.pack.pack_id} cannot be used ({exc}).")
                slot.gate_read = True
        return slot.gate

    def out_of_scope(self, model_id: str, output: ModelOutput, tensor: np.ndarray,
                     slots: dict[str, ModelSlot] | None = None) -> dict:
        """The gate's verdict on one image from a model's features and its input tensor."""
        slot = self._slot(model_id, slots)
        gate = self._gate(slot) if self.cfg.inference.out_of_scope_gate else None
        if gate is None or output.features is None:
            return ood.not_assessed()
        return gate.assess(output.features, tensor, slot.entry.input)

    def preload(self, model_ids: list[str] | None = None) -> None:
        """Compile the models now (the server does this at start, so the first exam is fast)."""
        for model_id in model_ids or list(self.slots):
            self._loaded(self._slot(model_id))

    def run_model(self, model_id: str, tensor: np.ndarray) -> ModelOutput:
        """One model on one preprocessed image, serialised with every other run."""
        return self.run_slot(self._slot(model_id), tensor)

    def run_slot(self, slot: ModelSlot, tensor: np.ndarray) -> ModelOutput:
        """``slot``'s model on ``tensor``, serialised with every other run (``busy`` set meanwhile)."""
        model = self._loaded(slot)
        with self._run_lock:
            self.busy.set()
            try:
                start = time.perf_counter()
                output = model.run(tensor, features=True)
                slot.latencies.append((time.perf_counter() - start) * 1000.0)
            finally:
                self.busy.clear()
        return output

    # -- what the box can do ------------------------------------------------------------------
    def demo_in_use(self) -> bool:
        """Whether a result on this box can come from a demo model: an analysis whose first model
        is a demo one (a demo model after a trusted first step is never run)."""
        return any(is_demo(self.slots[a.first_model]) for a in catalogue.ANALYSES.values()
                   if a.first_model in self.slots)

    def analyses(self) -> list[str]:
        """Analysis ids whose first model is available (and a runtime to run it)."""
        try:
            self.runtime()
        except RuntimeUnavailable:
            return []
        return self._installed_analyses()

    def _installed_analyses(self) -> list[str]:
        return [a.id for a in catalogue.ANALYSES.values() if a.first_model in self.slots]

    def status(self) -> dict:
        runtime_name, runtime_version, problems = None, None, list(self.problems)
        try:
            rt = self.runtime()
            runtime_name, runtime_version = rt.name, rt.version()
            problems += self._runtime_problems
        except RuntimeUnavailable as exc:
            problems.append(exc.message)
        models = {}
        for model_id, slot in self.slots.items():
            lat = list(slot.latencies)
            models[model_id] = {
                "analysis": slot.entry.analysis, "pack": slot.pack.pack_id, "source": slot.source,
                "version": slot.entry.version, "demo": slot.entry.demo or slot.pack.demo,
                "loaded": slot.loaded is not None,
                "precision": slot.loaded.precision if slot.loaded else None,
                "file": slot.loaded.file_role if slot.loaded else None,
                "latency_ms": round(statistics.median(lat), 1) if lat else None,
                "validation": slot.entry.validation,
                "refer_below": slot.entry.refer_below,
                "out_of_scope_gate": "ood" in slot.entry.files,
                "card": "card_json" in slot.entry.files,
            }
        return {
            "runtime": runtime_name, "runtime_version": runtime_version,
            "precision": self.options.precision, "threads": self.options.threads,
            "openvino_float_precision": self.options.openvino_float_precision,
            "demo": any(m["demo"] for m in models.values()),
            "clinical": self.cfg.clinical,
            "packs": [{"id": p.pack_id, "version": p.version, "demo": p.demo, "trusted": p.trusted,
                       "source": source, "path": str(p.root)} for source, p in self.packs],
            "models": models,
            "analyses": self._installed_analyses(),
            "problems": problems,
        }

    # -- images -------------------------------------------------------------------------------
    def _min_decode_side(self, analysis: catalogue.Analysis | None, slots: dict[str, ModelSlot]) -> int | None:
        """With ``[inference] fast_jpeg_decode``, the short side a big JPEG may be decoded at:
        the model's resize still a >= 2x downscale."""
        if analysis is None or not self.cfg.inference.fast_jpeg_decode:
            return None
        sides = [slots[m].entry.input.resize for m in analysis.model_ids if m in slots]
        return max(sides) * FAST_DECODE_MARGIN if sides else None

    def decode(self, image, analysis: catalogue.Analysis | None = None,
               slots: dict[str, ModelSlot] | None = None) -> imageio.DecodedImage:
        """Safe decode (big JPEGs at a reduced scale for ``analysis``, images above
        ``[inference] working_max_pixels`` at that size), within the decoding memory budget."""
        if isinstance(image, imageio.DecodedImage):
            return image
        if isinstance(image, Image.Image):
            return imageio.decode(image, self.cfg.inference.max_image_pixels)
        probe = self._probe(image, analysis, self.slots if slots is None else slots)
        with self.decode_budget.reserve(probe.memory_bytes()):
            return probe.decode()

    def _probe(self, image, analysis, slots) -> imageio.Probe:
        inference = self.cfg.inference
        return imageio.probe(image, inference.max_image_pixels, min_short_side=self._min_decode_side(analysis, slots),
                             working_pixels=inference.working_max_pixels)

    def prepare(self, image, analysis_id: str, *, preview: bool = True, keep_bytes: bool = True,
                source: Path | None = None, quality_report: quality.QualityReport | None = None,
                slots: dict[str, ModelSlot] | None = None) -> PreparedImage:
        """Decode, gate and crop an image once for ``analysis_id`` (the kiosk does it on upload;
        ``diagnose`` then runs the models on it). The full decode is freed before this returns;
        while it lives, its memory is held in ``decode_budget`` (``Busy`` when none came free).
        ``keep_bytes=False``: the caller keeps the file (``source``), the result does not."""
        started = time.perf_counter()
        analysis = catalogue.analysis(analysis_id)
        slots = self.slots if slots is None else slots
        specs = [slots[m].entry.input for m in analysis.model_ids if m in slots]
        domain = catalogue.model(analysis.first_model).domain
        if isinstance(image, (imageio.DecodedImage, Image.Image)):
            decoded = self.decode(image)
            return prepare_image(decoded, specs, domain, preview=preview, keep_bytes=keep_bytes, source=source,
                                 report=quality_report, timings_ms={"total": 0.0})
        probe = self._probe(image, analysis, slots)
        need = probe.memory_bytes()
        with self.decode_budget.reserve(need):
            t = time.perf_counter()
            decoded = probe.decode()
            timings = {"decode": (time.perf_counter() - t) * 1000.0}
            prepared = prepare_image(decoded, specs, domain, preview=preview, keep_bytes=keep_bytes, source=source,
                                     report=quality_report, timings_ms=timings)
            del decoded, probe
        if need >= TRIM_AFTER_BYTES:
            memory.return_freed_memory()
        prepared.timings_ms["total"] = (time.perf_counter() - started) * 1000.0
        return prepared

    def check_quality(self, image, analysis_id: str | None = None) -> quality.QualityReport:
        """The quality gate alone (``prepare`` runs it as part of preparing an image)."""
        domain = None
        if analysis_id is not None:
            domain = catalogue.model(catalogue.analysis(analysis_id).first_model).domain
        decoded = self.decode(image)
        return quality.check(decoded.image, domain, width=decoded.width, height=decoded.height)

    def diagnose(self, image: Image.Image | bytes | str | os.PathLike | imageio.DecodedImage | PreparedImage,
                 analysis_id: str, *, name: str | None = None,
                 quality: quality.QualityReport | None = None) -> DiagnosisResult:
        """Run the whole cascade and prepare the heatmap for one image.

        ``image`` prepared already (a kiosk draft's `PreparedImage`) is used as it is: nothing is
        decoded or checked again. A `DecodedImage` is not decoded again, and with ``quality`` (its
        report) not gated again. Anything else is decoded, gated and cropped here, once.
        """
        analysis = catalogue.analysis(analysis_id)
        # The models as they are now: a pack installed meanwhile replaces self.slots, and one
        # diagnosis must not mix two packs' models (or find a model gone half-way).
        slots = self.slots
        self._slot(analysis.first_model, slots)
        self.runtime()
        if not isinstance(image, PreparedImage):
            if name is None and isinstance(image, (str, os.PathLike)):
                name = str(image)
            image = self.prepare(image, analysis_id, preview=False, quality_report=quality, slots=slots)
        return ImageRun(self, analysis, slots, image).run(name)

    # -- the heatmap of a stored result -------------------------------------------------------
    def _models_of(self, result: dict) -> ModelSlot | None:
        """The final step's slot when every step of a stored result would run the very model
        that made it (same model, version and pack) and it has classifier weights; else None:
        after a pack change another model would draw another heatmap."""
        steps = result.get("steps") if isinstance(result, dict) else None
        if not steps:
            return None
        for step in steps:
            slot = self.slots.get(step.get("model"))
            if slot is None or slot.entry.version != step.get("version") or slot.pack.pack_id != step.get("pack"):
                return None
        last = self.slots[steps[-1]["model"]]
        if "classifier" not in last.entry.files or steps[-1].get("top") not in last.entry.classes:
            return None
        return last

    def can_redraw_heatmap(self, result: dict) -> bool:
        """Whether ``redraw_heatmap`` can draw the heatmap of this stored result."""
        return self._models_of(result) is not None

    def redraw_heatmap(self, image, result: dict, max_side: int = 1024) -> bytes:
        """The heatmap of a stored result (its JSON) over its image, as PNG: the class-activation
        map of the result's own final class by the model that made it (one model run). Raises
        UserError when those models are not the ones on this box any more."""
        slot = self._models_of(result)
        if slot is None:
            raise UserError("The heatmap is not available for this record: the models that made it are "
                            "not installed any more.", "The classes and percentages are still valid.")
        decoded = self.decode(image, catalogue.analysis(result.get("analysis")))
        self._loaded(slot)
        output = self.run_model(slot.entry.id, preprocess(decoded.image, slot.entry.input))
        if output.features is None or slot.classifier is None:
            raise UserError("The heatmap is not available for this record.",
                            "The classes and percentages are still valid.")
        cam = heatmap.class_activation_map(output.features, slot.classifier[0],
                                           slot.entry.classes.index(result["steps"][-1]["top"]))
        return heatmap.to_png(heatmap.overlay(decoded.image, cam, slot.entry.input, max_side))


__all__ = ["Engine", "ModelSlot", "FAST_DECODE_MARGIN"]
