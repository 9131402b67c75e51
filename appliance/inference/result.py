"""One image's diagnosis: what `appliance diagnose --json` prints, the kiosk shows and the
store keeps (docs/ARCHITECTURE.md, "Result JSON"), plus the heatmap drawn on request."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import UserError
from . import heatmap
from .cascade import Step
from .pack import InputSpec
from .quality import QualityReport


@dataclass
class DiagnosisResult:
    analysis: str
    image_name: str | None
    demo: bool
    pack: dict                       # {"id", "version"} of the pack that ran the first step
    runtime: str
    precision: str
    steps: list[Step]
    path: list[tuple[str, str]]
    label: str
    uncertain: bool
    out_of_scope: dict
    quality: QualityReport
    image_info: dict
    timings_ms: dict[str, float]
    skipped: list[dict] = field(default_factory=list)
    # Kept in memory only: the file's bytes (what the store saves), and for the heatmap the
    # decoded image, the last step's activation map and the crop it covers.
    image_bytes: bytes | None = field(default=None, repr=False)
    image: Image.Image | None = field(default=None, repr=False)
    cam: np.ndarray | None = field(default=None, repr=False)
    cam_spec: InputSpec | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        return {
            "analysis": self.analysis,
            "image": self.image_name,
            "demo": self.demo,
            "pack": dict(self.pack),
            "runtime": self.runtime,
            "precision": self.precision,
            "steps": [s.to_json() for s in self.steps],
            "path": [[m, c] for m, c in self.path],
            "label": self.label,
            "uncertain": self.uncertain,
            "skipped": [dict(s) for s in self.skipped],
            "out_of_scope": dict(self.out_of_scope),
            "quality": self.quality.to_json(),
            "image_info": dict(self.image_info),
            "heatmap": {"available": self.has_heatmap, "model": self.steps[-1].model,
                        "class": self.steps[-1].top},
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
        }

    @property
    def has_heatmap(self) -> bool:
        return self.cam is not None and self.image is not None and self.cam_spec is not None

    def heatmap_png(self, max_side: int = 1024) -> bytes:
        """The class-activation map of the final step's top class over the image, as PNG."""
        if not self.has_heatmap:
            raise UserError("There is no heatmap for this result: the model pack has no classifier "
                            "weights for it.", "The classes and percentages are still valid.")
        return heatmap.to_png(heatmap.overlay(self.image, self.cam, self.cam_spec, max_side))
