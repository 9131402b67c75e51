"""The runtime interface, the registry of runtimes and the automatic choice.

One file per runtime (``openvino.py``, ``onnxruntime.py``), each importing its library only
when it is chosen, so a box without one of them still starts and says what is missing.
Auto-choice: OpenVINO on x86-64 (Intel's INT8 kernels, fastest there), ONNX Runtime on ARM
(OpenVINO's ARM plugin is slower on the Pi's Cortex-A76); ``[inference] runtime`` overrides.
"""
from __future__ import annotations

import importlib
import mmap
import os
import platform
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from ...errors import UserError
from ..pack import ModelEntry, Pack

# name -> "module:class", imported on demand.
REGISTRY = {
    "openvino": "appliance.inference.runtimes.openvino:OpenVinoRuntime",
    "onnxruntime": "appliance.inference.runtimes.onnxruntime:OnnxRuntime",
}
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


class RuntimeUnavailable(UserError):
    """The chosen inference library is not installed or does not load on this box."""


@dataclass(frozen=True)
class RuntimeOptions:
    threads: int                    # resolved: never 0
    precision: str                  # "int8" | "fp32"
    openvino_float_precision: str   # "f32" | "bf16"
    openvino_hand_back_weights: bool = True


@dataclass
class ModelOutput:
    logits: np.ndarray              # (C,) float32 for the one image
    features: np.ndarray | None     # (F, h, w) float32, when asked for


class LoadedModel(ABC):
    """A compiled model, ready for one image at a time (batch 1: latency, not throughput)."""
    precision: str                  # what actually runs: "int8" | "fp32"
    file_role: str                  # the pack file it came from

    @abstractmethod
    def run(self, batch: np.ndarray, *, features: bool) -> ModelOutput:
        """``batch`` is 1×3×H×W float32; the returned arrays are the caller's to keep."""


class Runtime(ABC):
    name: str

    def __init__(self, options: RuntimeOptions):
        self.options = options

    @abstractmethod
    def file_roles(self) -> tuple[tuple[str, ...], ...]:
        """Pack file roles this runtime can load, best first; each tuple is one loadable set."""

    @abstractmethod
    def load_files(self, entry: ModelEntry, files: dict[str, bytes | mmap.mmap], role: str) -> LoadedModel:
        """Compile a model from verified bytes (``files``: role -> the bytes of that role set,
        as `read_file` gave them)."""

    def read_file(self, pack: Pack, relpath: str, role: str) -> bytes | mmap.mmap:
        """A model file's verified bytes; a runtime that can give memory back once a model is
        compiled asks for a private map instead (`Pack.map_verified`)."""
        return pack.read_verified(relpath)

    def version(self) -> str:
        return ""

    def load(self, pack: Pack, entry: ModelEntry) -> LoadedModel:
        """Compile ``entry`` of ``pack`` from the bytes `Pack.read_verified` returns."""
        for roles in self.file_roles():
            if all(r in entry.files for r in roles):
                files = {r: self.read_file(pack, entry.files[r], r) for r in roles}
                return self.load_files(entry, files, roles[0])
        from ...errors import PackError
        have = ", ".join(sorted(entry.files)) or "none"
        raise PackError(f"The model {entry.id} in pack {pack.pack_id} has no file that {self.name} can run "
                        f"in {self.options.precision.upper()} (it has: {have}).",
                        "Set [inference] runtime or precision to match the pack, or install a complete pack.")


def physical_cores() -> int:
    """Cores this process may use, counting each physical core once (hyper-threads add
    nothing to convolution throughput and make latency jittery)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        import psutil
        physical = psutil.cpu_count(logical=False) or usable
    except Exception:  # noqa: BLE001 - psutil cannot read the topology in some containers
        physical = usable
    return max(1, min(usable, physical))


def options_from_config(inference_cfg) -> RuntimeOptions:
    threads = inference_cfg.threads if inference_cfg.threads > 0 else physical_cores()
    return RuntimeOptions(threads=threads, precision=inference_cfg.precision,
                          openvino_float_precision=inference_cfg.openvino_float_precision,
                          openvino_hand_back_weights=inference_cfg.openvino_hand_back_weights)


def is_x86(machine: str | None = None) -> bool:
    return (machine or platform.machine()).lower() in _X86


def preference_order(choice: str, machine: str | None = None) -> tuple[str, ...]:
    if choice != "auto":
        return (choice,)
    return ("openvino", "onnxruntime") if is_x86(machine) else ("onnxruntime", "openvino")


def create(name: str, options: RuntimeOptions) -> Runtime:
    """Import and build one runtime; `RuntimeUnavailable` when its library is absent."""
    try:
        target = REGISTRY[name]
    except KeyError:
        raise UserError(f"There is no inference runtime called {name!r}.",
                        f"Set [inference] runtime to auto, {' or '.join(REGISTRY)}.") from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)(options)
    except ImportError as exc:
        raise RuntimeUnavailable(f"The inference runtime {name} is not installed on this box ({exc}).",
                                 "Reinstall the appliance, or set [inference] runtime to the other runtime.") from None


def choose(choice: str, options: RuntimeOptions, machine: str | None = None) -> tuple[Runtime, list[str]]:
    """The runtime to use and the problems met on the way (a missing preferred runtime when auto)."""
    problems: list[str] = []
    for name in preference_order(choice, machine):
        try:
            return create(name, options), problems
        except RuntimeUnavailable as exc:
            if choice != "auto":
                raise
            problems.append(exc.message)
    raise RuntimeUnavailable("Neither OpenVINO nor ONNX Runtime is installed, so no model can run.",
                             "Reinstall the appliance (./start.sh --install-only).")
