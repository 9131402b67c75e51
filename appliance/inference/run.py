"""One diagnosis in progress: a prepared image through one analysis's cascade.

`ImageRun` holds what the steps of one image share — the models as they were when the run
began (a pack installed meanwhile never mixes into it), the input tensors by input spec, the
first step's output for the out-of-scope gate, and the timings — and turns the cascade's
outcome into a `DiagnosisResult`. ``Engine.diagnose`` makes one per image.

A step is two halves on purpose: `ImageRun.inputs` (the model, compiled if need be, and the
tensor) and `ImageRun.record` (what its output means for this image). An exam of several
fields (issue 15) keeps one ImageRun per field and, at each cascade level, gathers the inputs
of every field that reaches the same model, runs them as one batch (`Engine.run_slot` takes
N×3×H×W) and records each field's row: the batching goes between those two calls, and nothing
else here changes.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from .. import catalogue
from ..errors import UserError
from . import heatmap, imageio
from .cascade import run_cascade
from .pack import InputSpec, ModelEntry
from .prepared import PreparedImage
from .preprocess import crop_to_model, normalise
from .result import DiagnosisResult
from .runtimes.base import LoadedModel, ModelOutput

if TYPE_CHECKING:
    from .engine import Engine, ModelSlot

# The result's "skipped" reason for a next step that only a demo model could run.
DEMO_ONLY = "only a demo model is installed"


def is_demo(slot: "ModelSlot") -> bool:
    return bool(slot.entry.demo or slot.pack.demo)


class ImageRun:
    def __init__(self, engine: "Engine", analysis: catalogue.Analysis, slots: dict[str, "ModelSlot"],
                 prepared: PreparedImage):
        self.started = time.perf_counter()
        self.engine, self.analysis, self.slots, self.prepared = engine, analysis, slots, prepared
        self.first = engine._slot(analysis.first_model, slots)
        # A demo model never follows trusted steps: its step is skipped and said so, rather than
        # run as if trained or hiding the trusted result behind the demo's "do not use" banner.
        self.trusted_first = not is_demo(self.first)
        self.timings: dict[str, float] = {k: v for k, v in prepared.timings_ms.items()
                                          if k in ("decode", "quality", "preprocess")}
        self.tensors: dict[InputSpec, np.ndarray] = {}
        self.loaded: dict[str, LoadedModel] = {}
        self.first_output: tuple[ModelOutput, np.ndarray] | None = None

    def lap(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[key] = self.timings.get(key, 0.0) + (now - since) * 1000.0
        return now

    # -- the cascade's steps ------------------------------------------------------------------
    def runnable(self, model_id: str) -> bool:
        return model_id in self.slots and not (self.trusted_first and is_demo(self.slots[model_id]))

    def inputs(self, model_id: str) -> tuple["ModelSlot", np.ndarray]:
        """The step's model (compiled now if it is not yet) and this image's tensor for it."""
        slot = self.engine._slot(model_id, self.slots)
        t0 = time.perf_counter()
        if slot.loaded is None:
            self.engine._loaded(slot)
            t0 = self.lap("load", t0)
        spec = slot.entry.input
        if spec not in self.tensors:
            self.tensors[spec] = normalise(self._crop(spec), spec)
            self.lap("preprocess", t0)
        return slot, self.tensors[spec]

    def record(self, slot: "ModelSlot", tensor: np.ndarray, output: ModelOutput) -> tuple[ModelEntry, str, ModelOutput]:
        """This image's output of ``slot``'s model, in the form the cascade reads."""
        self.loaded[slot.entry.id] = slot.loaded
        if self.first_output is None:
            self.first_output = (output, tensor)
        return slot.entry, slot.pack.pack_id, output

    def step(self, model_id: str):
        slot, tensor = self.inputs(model_id)
        t0 = time.perf_counter()
        output = self.engine.run_slot(slot, tensor)
        self.lap(model_id, t0)
        return self.record(slot, tensor, output)

    def _crop(self, spec: InputSpec):
        """The crop prepared for ``spec``; a spec the preparation did not know (a pack with
        another input size was installed in between) is cropped from the file again."""
        crop = self.prepared.crops.get(spec)
        if crop is not None:
            return crop
        source = self.prepared.data if self.prepared.data is not None else self.prepared.source
        if source is None:
            raise UserError("The models changed while this image waited.", "Attach the image again.")
        decoded = imageio.decode(source, self.engine.cfg.inference.max_image_pixels,
                                 working_pixels=self.engine.cfg.inference.working_max_pixels)
        return crop_to_model(decoded.image, spec, exact=decoded.reduced == 1)

    # -- the whole run ------------------------------------------------------------------------
    def run(self, name: str | None) -> DiagnosisResult:
        outcome = run_cascade(self.analysis, self.runnable, self.step)
        for skipped in outcome.skipped:
            if skipped["model"] in self.slots:
                skipped["reason"] = DEMO_ONLY
        t = time.perf_counter()
        # The first model judges whether the image belongs to the analysis at all.
        out_of_scope = self.engine.out_of_scope(self.analysis.first_model, *self.first_output, self.slots)
        t = self.lap("out_of_scope", t)
        last = self.slots[outcome.path[-1][0]]
        cam = None
        if last.classifier is not None and outcome.final_output.features is not None:
            cam = heatmap.class_activation_map(outcome.final_output.features, last.classifier[0],
                                               last.entry.classes.index(outcome.path[-1][1]))
        self.lap("heatmap", t)
        prepared = self.prepared
        self.timings["total"] = prepared.timings_ms.get("total", 0.0) + (time.perf_counter() - self.started) * 1000.0
        return DiagnosisResult(
            analysis=self.analysis.id,
            image_name=name,
            demo=any(s.demo for s in outcome.steps) or any(self.slots[m].pack.demo for m, _ in outcome.path),
            pack={"id": self.first.pack.pack_id, "version": self.first.pack.version},
            runtime=self.engine.runtime().name,
            precision="+".join(sorted({m.precision for m in self.loaded.values()})),
            steps=outcome.steps, path=outcome.path, label=outcome.label, uncertain=outcome.uncertain,
            out_of_scope=out_of_scope,
            quality=prepared.quality,
            image_info=prepared.info(),
            timings_ms=self.timings,
            skipped=outcome.skipped,
            image_bytes=prepared.data, image=prepared.display, cam=cam, cam_spec=last.entry.input,
        )


__all__ = ["DEMO_ONLY", "ImageRun", "is_demo"]
