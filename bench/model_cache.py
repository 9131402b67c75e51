"""Models and images the benchmarks measure, built once with the export code and cached in
``bench/results/<arch>/`` (git-ignored; delete the folder to rebuild).

- ``pack/``: the demo pack for all seven models (``export.demo.build_demo_pack``): ONNX
  Runtime INT8 and OpenVINO INT8 with classifier weights, as a box runs them.
- ``fp32/``: the same architecture in FP32 for the baselines: the PyTorch state dict (eager
  runs), ONNX FP32 and OpenVINO IR FP32 (``export.onnx_export``, ``export.quantize``).
- ``camera_2592x1936.jpg``: a 5 MP camera-sized JPEG made from a real BreakHis image
  (upscaled, with sensor-like noise so the JPEG is as heavy as a real capture).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
DATASETS = REPO.parent / "shared" / "datasets"
CAMERA_SIZE = (2592, 1936)
# BatchNorm statistics from a few batches of synthetic textures, as the demo pack's backbone.
BATCHNORM_BATCHES = {"resnet152": (4, 8), "tiny": (4, 16)}
SOURCE_IMAGE = DATASETS / "breakhis" / "originals" / "ductal_carcinoma" / "SOB_M_DC-14-10926-100-001.png"

if str(REPO) not in sys.path:          # bench scripts run as files; the project is importable
    sys.path.insert(0, str(REPO))

# NNCF (used to build the INT8 models) sends usage telemetry unless a consent file says no:
# never from this project.
from appliance.inference.runtimes.openvino import block_telemetry  # noqa: E402

block_telemetry()


def say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def arch_dir(arch: str) -> Path:
    return RESULTS / arch


def demo_pack(arch: str) -> Path:
    """The seven-model INT8 demo pack of ``arch``, built on first use (minutes for ResNet152)."""
    pack = arch_dir(arch) / "pack"
    if not (pack / "manifest.json").is_file():
        from export.demo import build_demo_pack
        say(f"building the {arch} demo pack into {pack} (once; ResNet152 takes minutes)")
        started = time.perf_counter()
        build_demo_pack(pack, arch=arch, demo=True, progress=True, include_fp32=False, overwrite=True)
        say(f"demo pack built in {time.perf_counter() - started:.0f} s")
    return pack


def fp32_models(arch: str, image_size: int) -> dict[str, Path]:
    """FP32 baselines of ``arch`` with sane BatchNorm statistics: state dict, ONNX and IR."""
    folder = arch_dir(arch) / "fp32"
    paths = {"torch": folder / "state_dict.pt", "onnx": folder / "model.fp32.onnx",
             "openvino": folder / "model.fp32.xml", "openvino_weights": folder / "model.fp32.bin"}
    if all(p.is_file() for p in paths.values()):
        return paths
    import torch

    from export.models import build_network, set_batchnorm_statistics
    from export.onnx_export import export_onnx
    from export.quantize import convert_openvino
    from export.synthetic import synthetic_images
    from export.transforms import eval_transform, input_spec

    folder.mkdir(parents=True, exist_ok=True)
    say(f"building the {arch} FP32 baselines into {folder} (once)")
    started = time.perf_counter()
    torch.manual_seed(0)
    spec = input_spec(image_size)
    transform = eval_transform(spec)
    net = build_network(arch, num_classes=2, weights=None)
    batches, per_batch = BATCHNORM_BATCHES[arch]
    set_batchnorm_statistics(net, (torch.stack([transform(im) for im in synthetic_images(per_batch, spec["resize"], 1 + i)])
                                   for i in range(batches)))
    torch.save(net.state_dict(), paths["torch"])
    export_onnx(net, paths["onnx"], image_size)
    convert_openvino(paths["onnx"], paths["openvino"])
    say(f"FP32 baselines built in {time.perf_counter() - started:.0f} s")
    return paths


def camera_jpeg() -> Path:
    """A 2592×1936 JPEG (quality 92) from a real H&E image: the size of a 5 MP microscope capture."""
    path = RESULTS / "camera_2592x1936.jpg"
    if not path.is_file():
        import numpy as np
        from PIL import Image
        RESULTS.mkdir(parents=True, exist_ok=True)
        big = Image.open(SOURCE_IMAGE).convert("RGB").resize(CAMERA_SIZE, Image.Resampling.BICUBIC)
        grain = np.random.default_rng(0).normal(0, 4, (CAMERA_SIZE[1], CAMERA_SIZE[0], 3))
        pixels = np.clip(np.asarray(big, np.float32) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, "JPEG", quality=92)
    return path


def file_mb(*paths: Path) -> float:
    return sum(Path(p).stat().st_size for p in paths) / 1e6
