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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .. import catalogue
from ..config import Config
from ..errors import PackError, UserError
from . import heatmap, imageio, ood, quality
from .cascade import run_cascade
from .pack import ModelEntry, Pack, load_pack
from .preprocess import preprocess
from .result import DiagnosisResult
from .runtimes import base as runtimes
from .runtimes.base import LoadedModel, ModelOutput, Runtime, RuntimeUnavailable

# With the fast JPEG decode, decode at no less than this multiple of the model's resize
# side: the final bilinear resize then still averages >= 2 source pixels per output pixel,
# which keeps the probabilities within the bound bench/bench_imageio.py reports.
FAST_DECODE_MARGIN = 2
_LATENCY_WINDOW = 50
# The result's "skipped" reason for a next step that only a demo model could run.
DEMO_ONLY = "only a demo model is installed"


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


def _is_demo(slot: ModelSlot) -> bool:
    return bool(slot.entry.demo or slot.pack.demo)


class Engine:
    def __init__(self, cfg: Config, *, models_dir: str | os.PathLike | None = None):
        self.cfg = cfg
        self.models_dir = Path(models_dir) if models_dir else None
        self.options = runtimes.options_from_config(cfg.inference)
        self.busy = threading.Event()
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
                    runtimes.return_freed_memory()
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
        return self._run_slot(self._slot(model_id), tensor)

    def _run_slot(self, slot: ModelSlot, tensor: np.ndarray) -> ModelOutput:
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
        return any(_is_demo(self.slots[a.first_model]) for a in catalogue.ANALYSES.values()
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
    def decode(self, image, analysis: catalogue.Analysis | None = None,
               slots: dict[str, ModelSlot] | None = None) -> imageio.DecodedImage:
        """Safe decode; with ``[inference] fast_jpeg_decode`` big JPEGs decode at a reduced scale
        that still leaves the model's resize a >= 2x downscale."""
        if isinstance(image, imageio.DecodedImage):
            return image
        min_side = None
        if analysis is not None and self.cfg.inference.fast_jpeg_decode:
            slots = self.slots if slots is None else slots
            sides = [slots[m].entry.input.resize for m in analysis.model_ids if m in slots]
            min_side = max(sides) * FAST_DECODE_MARGIN if sides else None
        return imageio.decode(image, self.cfg.inference.max_image_pixels, min_short_side=min_side)

    def check_quality(self, image, analysis_id: str | None = None) -> quality.QualityReport:
        """The quality gate alone (the kiosk runs it on capture, before "Start processing")."""
        domain = None
        if analysis_id is not None:
            domain = catalogue.model(catalogue.analysis(analysis_id).first_model).domain
        decoded = self.decode(image)
        return quality.check(decoded.image, domain, width=decoded.width, height=decoded.height)

    def diagnose(self, image: Image.Image | bytes | str | os.PathLike | imageio.DecodedImage,
                 analysis_id: str, *, name: str | None = None) -> DiagnosisResult:
        """Decode, check quality, run the whole cascade and prepare the heatmap for one image."""
        started = time.perf_counter()
        analysis = catalogue.analysis(analysis_id)
        # The models as they are now: a pack installed meanwhile replaces self.slots, and one
        # diagnosis must not mix two packs' models (or find a model gone half-way).
        slots = self.slots
        first = self._slot(analysis.first_model, slots)
        self.runtime()
        timings: dict[str, float] = {}

        def lap(key: str, since: float) -> float:
            now = time.perf_counter()
            timings[key] = timings.get(key, 0.0) + (now - since) * 1000.0
            return now

        t = time.perf_counter()
        decoded = self.decode(image, analysis, slots)
        t = lap("decode", t)
        # The quality gate and the first model's preprocessing are single-threaded: the gate runs
        # on the other core meanwhile, and is waited for before any model runs, so it never
        # competes with inference. Its own time is reported as "quality" (it overlaps "preprocess").
        gate = _beside(_timed, quality.check, decoded.image, catalogue.model(analysis.first_model).domain,
                       width=decoded.width, height=decoded.height)
        gate_done: list[quality.QualityReport] = []

        def quality_report() -> quality.QualityReport:
            if not gate_done:
                report, timings["quality"] = gate.result()
                gate_done.append(report)
            return gate_done[0]

        tensors: dict = {}
        loaded: dict[str, LoadedModel] = {}
        first_run: list = []       # (output, tensor) of the first step: the out-of-scope gate's input

        def run_step(model_id: str):
            slot = self._slot(model_id, slots)
            t0 = time.perf_counter()
            if slot.loaded is None:
                self._loaded(slot)
                t0 = lap("load", t0)
            tensor = tensors.get(slot.entry.input)
            if tensor is None:
                # A reduced decode is already an approximation (measured by bench/bench_imageio.py):
                # there the resize may cover just the crop (preprocess.crop_to_model).
                tensor = tensors[slot.entry.input] = preprocess(decoded.image, slot.entry.input,
                                                                exact=decoded.reduced == 1)
                t0 = lap("preprocess", t0)
            quality_report()
            output = self._run_slot(slot, tensor)
            lap(model_id, t0)
            loaded[model_id] = slot.loaded
            if not first_run:
                first_run.append((output, tensor))
            return slot.entry, slot.pack.pack_id, output

        # A demo model never follows trusted steps: its step is skipped and said so, rather than
        # run as if trained or hiding the trusted result behind the demo's "do not use" banner.
        trusted_first = not _is_demo(first)
        outcome = run_cascade(analysis, lambda m: m in slots and not (trusted_first and _is_demo(slots[m])),
                              run_step)
        for skipped in outcome.skipped:
            if skipped["model"] in slots:
                skipped["reason"] = DEMO_ONLY

        t = time.perf_counter()
        # The first model judges whether the image belongs to the analysis at all.
        out_of_scope = self.out_of_scope(analysis.first_model, *first_run[0], slots)
        t = lap("out_of_scope", t)
        last = slots[outcome.path[-1][0]]
        cam = None
        if last.classifier is not None and outcome.final_output.features is not None:
            weight = last.classifier[0]
            cam = heatmap.class_activation_map(outcome.final_output.features, weight,
                                               last.entry.classes.index(outcome.path[-1][1]))
        lap("heatmap", t)
        timings["total"] = (time.perf_counter() - started) * 1000.0

        precisions = sorted({m.precision for m in loaded.values()})
        return DiagnosisResult(
            analysis=analysis.id,
            image_name=name if name is not None else (str(image) if isinstance(image, (str, os.PathLike)) else None),
            demo=any(s.demo for s in outcome.steps) or any(slots[m].pack.demo for m, _ in outcome.path),
            pack={"id": first.pack.pack_id, "version": first.pack.version},
            runtime=self.runtime().name,
            precision="+".join(precisions),
            steps=outcome.steps, path=outcome.path, label=outcome.label, uncertain=outcome.uncertain,
            out_of_scope=out_of_scope,
            quality=quality_report(),
            image_info=decoded.info(),
            timings_ms=timings,
            skipped=outcome.skipped,
            image_bytes=decoded.data, image=decoded.image, cam=cam, cam_spec=last.entry.input,
        )

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


_side_worker: ThreadPoolExecutor | None = None
_side_worker_lock = threading.Lock()


def _beside(fn, *args, **kwargs) -> Future:
    """Run ``fn`` on the one worker thread that every engine of the process shares for
    single-threaded work done beside its own (2-core boxes: one more thread is all that helps)."""
    global _side_worker
    with _side_worker_lock:
        if _side_worker is None:
            _side_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-beside")
    return _side_worker.submit(fn, *args, **kwargs)


def _timed(fn, *args, **kwargs) -> tuple:
    """``fn``'s result and how long it took, in ms."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, (time.perf_counter() - start) * 1000.0


__all__ = ["Engine", "ModelSlot", "FAST_DECODE_MARGIN"]
