"""Train ResNet152 for every model the sample data allows, on one CUDA GPU, in one short run.

The ML lead runs it once on a lent GPU machine (16 cores, ~7 minutes, torch + torchvision +
onnxruntime there; no OpenVINO, NNCF or internet), from the repository root, after
``python -m export.recipes.pack_device_data`` has put the images in ``.device_data/``::

    python -m export.recipes.device_train --data .device_data --out "$OUT"

What it does, under a wall-clock guard (``--budget-s``, default 380 s: training stops early
and the results are still written):

1. decodes every image once (short side 256 → central 256×256 square, uint8) into GPU memory;
2. trains, from scratch (no pretrained weights are reachable offline), ``pap_smear`` on
   Herlev, then ``breast_binary``, ``breast_malignant_subtype``, ``breast_benign_subtype``
   (BreakHis) and ``cervix_type`` (IARC), on the patient-disjoint (Herlev: source-image-
   disjoint) splits recorded in ``.device_data/splits.json``: AdamW, a time-based cosine
   schedule, bf16 autocast, channels_last, the augmentation of ``export/augment.py`` on the GPU
   (random resized crops, flips, free rotation for microscopy, colour jitter), keeping the epoch
   with the lowest validation loss: the loop of ``bccdms-export train`` (``export/loop.py``);
3. fits the temperature, and evaluates each model like ``bccdms-export evaluate``: accuracy,
   balanced accuracy, confusion, ROC AUC, ECE before/after temperature, refer band,
   out-of-scope gate (false alarms on validation, catches on the other datasets and on
   synthetic blanks);
4. for ``pap_smear`` (the most data) right after its training: ONNX FP32 export, ONNX Runtime
   static INT8 (QDQ, per-channel, U8S8), FP32-vs-INT8 agreement and accuracy on the
   validation images, the out-of-scope gate refitted on the INT8 features the box will see;
5. writes into ``--out`` (at most 8 files, 64 MiB): ``metrics.json`` (everything, all models),
   ``model_cards.md``, ``pap_smear.int8.onnx.part0..N`` (≤ 15 MiB each; ``.xz`` parts if
   the raw file would not fit), ``pap_smear.classifier.npz`` and ``pap_smear.ood.npz``. If no
   INT8 ONNX can be made there (ONNX Runtime's quantizer needs the ``onnx`` package, which
   torch and onnxruntime do not install), the trained weights go back instead as
   ``pap_smear.weights.npz.part0..N`` (int8 per output channel, ~60 MB) and ``assemble_pack``
   exports, quantizes and evaluates them here.

Back here, ``python -m export.recipes.assemble_pack`` turns those files into a signed pack.
``--smoke`` runs the same code with the tiny network, one epoch and a few images, on the CPU
if there is no GPU: the test suite runs it so the real run cannot fail on a typo.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import platform
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("pap_smear", "breast_binary", "breast_malignant_subtype", "breast_benign_subtype", "cervix_type")
EXPORT_MODEL = "pap_smear"
MAX_FILES = 8
MAX_TOTAL_BYTES = 64 * 2**20
PART_MIB = 15
STORED_SIDE = 256                 # the eval images' short side: decoded once at this size
# Export + INT8 + ONNX Runtime evaluation of pap_smear. Measured on 2 CPU cores for ResNet152 at
# 224 px: TorchScript export 2 s, check 2 s, quantization with 96 images 24 s, INT8 24 ms an image
# (~1100 images to score): ~80 s there, so well under this on the GPU machine's 16 cores.
POST_TRAINING_RESERVE_S = 75
WRITE_RESERVE_S = 15
CALIBRATION_IMAGES = 96
MIN_SHARE = 0.08                  # of the training time, for the smallest dataset


class Clock:
    def __init__(self, budget_s: float):
        self.start, self.budget = time.monotonic(), budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


CLOCK = Clock(0)


def log(message: str) -> None:
    print(f"[{CLOCK.elapsed():6.1f} s] {message}", flush=True)


# ---------------------------------------------------------------- data

@dataclass
class Images:
    """One dataset's images, decoded once: ``pixels`` N×3×S×S uint8 (on the device), row per file."""
    name: str
    pixels: Any
    rows: dict[str, int]
    domain: str


def _decode(path: Path, side: int) -> np.ndarray:
    from PIL import Image

    from export.augment import square_pixels
    with Image.open(path) as im:
        return square_pixels(im, side)


def load_images(root: Path, splits: dict, side: int, device) -> dict[str, Images]:
    """Every image any model uses, per dataset folder."""
    import torch

    from appliance import catalogue
    wanted: dict[str, list[str]] = {}
    for doc in splits["models"].values():
        files = wanted.setdefault(doc["dataset"], [])
        for side_items in doc["items"].values():
            files += [f for f, _ in side_items if f not in files]
    out = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for name, files in wanted.items():
            files = sorted(files)
            arrays = list(pool.map(lambda f: _decode(root / name / f, side), files))
            pixels = torch.from_numpy(np.stack(arrays)).to(device)
            model_id = next(m for m, d in splits["models"].items() if d["dataset"] == name)
            out[name] = Images(name, pixels, {f: i for i, f in enumerate(files)}, catalogue.model(model_id).domain)
            log(f"{name}: {len(files)} images decoded ({pixels.numel() / 2**20:.0f} MiB on {device})")
    return out


def model_rows(images: Images, doc: dict, side: str, limit: int | None) -> tuple[list[int], list[int], list[str]]:
    """Rows (in ``images``), class indices and file names of one side of a model's split."""
    items = _spread([(f, t) for f, t in doc["items"][side] if f in images.rows], limit)
    return [images.rows[f] for f, _ in items], [t for _, t in items], [f for f, _ in items]


# ---------------------------------------------------------------- training

def build(arch: str, classes: int):
    """The catalogue network, its residual branches starting at zero (the last BatchNorm of each
    block: Goyal et al. 2017), which lets a 152-layer network train from scratch at a high rate."""
    from torch import nn
    from torchvision.models.resnet import Bottleneck

    from export.models import build_network
    net = build_network(arch, classes, weights=None)
    for module in net.modules():
        if isinstance(module, Bottleneck):
            nn.init.zeros_(module.bn3.weight)
    return net


def train_model(model_id: str, images: Images, train_rows, train_t, val_rows, val_t, spec, args, budget_s: float,
                device) -> tuple[Any, dict]:
    """Train until the time budget (or ``--max-epochs``) is spent with the loop ``bccdms-export
    train`` runs (``export/loop.py``); return the best-validation-loss net."""
    import torch

    from appliance import catalogue
    from export.augment import centre_crop
    from export.loop import LoopOptions, fit, full_batches
    classes = catalogue.model(model_id).class_ids
    torch.manual_seed(args.seed)
    net = build(args.arch, len(classes)).to(device).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.05)
    train_rows_t = torch.tensor(train_rows, device=device)
    train_targets = torch.tensor(train_t, device=device)
    batch = min(args.batch_size, len(train_rows))
    opts = LoopOptions(spec=spec, epochs=args.max_epochs, batch_size=batch, lr=args.lr, seed=args.seed,
                       sampling=args.sampling, schedule="cosine", budget_s=budget_s,
                       microscopy=images.domain != catalogue.COLPOSCOPY, channels_last=True)

    def batches(order):
        for index in full_batches(order.to(device), batch):
            yield images.pixels[train_rows_t[index]], train_targets[index]

    def validate(forward):
        logits = torch.cat([forward(centre_crop(images.pixels[val_rows[s:s + 256]], spec))
                            for s in range(0, len(val_rows), 256)])
        return logits.cpu().numpy(), np.asarray(val_t)

    def after_epoch(state, record):
        if record["epoch"] == 1 or record["epoch"] % 10 == 0:
            log(f"{model_id} epoch {record['epoch']}: train loss {record['train_loss']:.3f}, val loss "
                f"{record['val_loss']:.3f}, val accuracy {record['val_accuracy']:.3f} (best epoch {state.best_epoch})")

    state = fit(net, optimiser, opts, targets=np.asarray(train_t), batches=batches, validate=validate,
                device=device, on_epoch=after_epoch)
    seconds = state.seconds
    training = {"epochs": state.epoch, "best_epoch": state.best_epoch, "best_val_loss": state.best_loss,
                "steps": state.steps, "seconds": round(seconds, 1),
                "images_per_second": round(state.steps * batch / max(seconds, 1e-9), 1),
                "batch_size": batch, "lr": args.lr, "sampling": args.sampling,
                "optimiser": "AdamW (weight decay 0.05), time-based cosine",
                "amp": "bf16" if device.type == "cuda" else None, "history": state.history}
    log(f"{model_id}: {state.epoch} epochs in {seconds:.0f} s, best epoch {state.best_epoch} "
        f"(val loss {state.best_loss:.3f})")
    return net.eval(), training


# ---------------------------------------------------------------- evaluation (as `bccdms-export evaluate`)

class QuietProgress:
    """The pipeline's progress interface without output or tqdm (which the GPU box may lack)."""
    enabled = False

    def say(self, message: str) -> None:
        pass

    def bar(self, iterable=None, **_kwargs):
        return iterable

    def step(self, message: str):
        import contextlib
        return contextlib.nullcontext()


def crops(images: Images, rows: list[int], spec, batch: int = 64):
    """Normalised evaluation crops of ``rows`` as float32 NumPy batches (what ONNX Runtime gets)."""
    from export.augment import centre_crop
    for start in range(0, len(rows), batch):
        yield centre_crop(images.pixels[rows[start:start + batch]], spec).cpu().numpy().astype(np.float32)


def torch_runner(net, device):
    """``batch → (logits, pooled features)`` of the trained network in FP32 on ``device``."""
    import torch

    from export.models import FeatureNet
    wrapped = FeatureNet(net).eval()

    def run(batch: np.ndarray):
        with torch.no_grad():
            z, f = wrapped(torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last))
        return z.float().cpu().numpy(), f.float().mean(dim=(2, 3)).cpu().numpy().astype(np.float64)
    return run


def evaluate_model(model_id: str, net, data: dict[str, Images], doc: dict, rows: dict, spec, args, device,
                   training: dict, onnx_files: dict[str, Path] | None = None) -> tuple[dict, Any]:
    """The ``evaluate`` report of a trained model and its out-of-scope gate (fitted on the INT8
    features when the INT8 model exists, else on the network's)."""
    from appliance import catalogue
    from export.calibration import choose_refer_threshold_for_forms
    from export.evaluate import (DEPLOYED_FORMS, classes_with_few_patients, form_figures, gate_section, parity,
                                 run_forms, runners, split_summary, synthetic_outputs)
    from export.metrics import fit_temperature, softmax
    from export.ood import false_alarm_cross_fitted, fit_gate

    quiet = QuietProgress()
    classes = catalogue.model(model_id).class_ids
    images = data[doc["dataset"]]
    run = {"torch": torch_runner(net, device), **(runners(onnx_files) if onnx_files else {})}
    val = run_forms(run, crops(images, rows["val"], spec), spec, quiet)
    targets = np.asarray(rows["val_targets"])
    temperature = fit_temperature(val.logits["torch"], targets)
    deployed = [f for f in DEPLOYED_FORMS if f in val.logits] or ["torch"]
    refer = choose_refer_threshold_for_forms({f: softmax(val.logits[f], temperature) for f in deployed}, targets)
    agreement = parity(val.logits, "torch")
    gate_form = "onnx_int8" if "onnx_int8" in run else "torch"
    only = {gate_form: run[gate_form]}
    train = run_forms(only, crops(images, rows["train"], spec), spec, quiet)
    gate = fit_gate(train.pooled[gate_form], train.appearance, val.pooled[gate_form], val.appearance)
    crossed = false_alarm_cross_fitted(train.pooled[gate_form], train.appearance, val.pooled[gate_form],
                                       val.appearance)
    other = {name: run_forms(only, crops(img, _spread(list(range(len(img.rows))), args.limit_other), spec), spec, quiet)
             for name, img in data.items() if name != doc["dataset"]}
    summary = split_summary(doc)
    report = {
        "model": model_id, "classes": list(classes), "temperature": float(temperature), "architecture": args.arch,
        "images": len(targets), "source": f".device_data/{doc['dataset']} (eval images)", "split": "val",
        "patients": len(doc["val"]["patients"]) or None, "groups": None,
        "classes_with_few_patients": classes_with_few_patients(doc.get("patients_per_class") or {}),
        "label_mapping": doc.get("label_mapping"),
        "reference": "torch", "split_recorded": summary,
        "provenance": {"initial_weights": "none", "trained": True, "torch": _version("torch"),
                       "recipe": f"from scratch, {training['optimiser']}, lr {args.lr}, batch {training['batch_size']}, "
                                 f"GPU augmentation, lowest validation loss, temperature scaling",
                       "best_epoch": training["best_epoch"], "image_size": spec["size"], "version": args.version,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "refer": refer, "refer_below": refer["threshold"],
        "forms": {name: {"parity": agreement[name],
                         "metrics": form_figures(z, targets, classes, temperature, refer["threshold"])}
                  for name, z in val.logits.items()},
        "commands": [" ".join(["python -m export.recipes.device_train", *sys.argv[1:]])],
        # Per-image logits of each form, in the order of ``val_files``: assemble_pack compares OpenVINO with them.
        "val_logits": {name: np.round(z, 5).tolist() for name, z in val.logits.items()},
        "val_files": rows["val_files"],
    }
    report["out_of_scope"] = gate_section(gate, fitted=True, form=gate_form, in_scope={"validation": val},
                                          other=other, synthetic=synthetic_outputs(only, gate_form, spec, quiet),
                                          false_alarm=0.05, false_alarm_cross_fitted=crossed,
                                          train_images=len(rows["train"]))
    return report, gate


def _spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items spread over the whole list (every class of a class-ordered list)."""
    if not limit or len(items) <= limit:
        return items
    return items[:: max(1, len(items) // limit)][:limit]


def _version(module: str) -> str | None:
    try:
        return str(__import__(module).__version__)
    except Exception:  # noqa: BLE001 - a missing optional library is a fact to report, not a failure
        return None


# ---------------------------------------------------------------- export (pap_smear)

def export_int8(net, images: Images, rows: dict, spec, work: Path) -> tuple[dict[str, Path], dict]:
    """ONNX FP32 (checked against torch) and ONNX Runtime INT8 of ``net``, on the CPU."""
    import copy

    import torch

    from export.onnx_export import check_onnx, export_onnx
    from export.quantize import quantize_onnx_int8

    cpu_net = copy.deepcopy(net).float().cpu().eval().to(memory_format=torch.contiguous_format)
    fp32 = work / "model.fp32.onnx"
    try:
        export_onnx(cpu_net, fp32, int(spec["size"]))
        exporter = "torch.export (dynamo)"
    except Exception as exc:  # noqa: BLE001 - e.g. onnxscript missing on the GPU box: the TorchScript exporter
        log(f"dynamo ONNX export failed ({type(exc).__name__}: {exc}); using the TorchScript exporter")
        _export_torchscript(cpu_net, fp32, int(spec["size"]))
        exporter = "TorchScript"
    sample = next(crops(images, rows["val"][:8], spec))
    check = check_onnx(fp32, cpu_net, sample)
    calibration_rows = _spread(rows["train"], CALIBRATION_IMAGES)
    calibration = np.concatenate(list(crops(images, calibration_rows, spec)))
    int8 = work / "model.int8.onnx"
    summary = quantize_onnx_int8(fp32, int8, calibration, QuietProgress())
    facts = {"exporter": exporter, "export_check": check.as_dict(), "quantization": summary.as_dict(),
             "calibration": {"images": len(calibration_rows), "source": "training split"}}
    log(f"ONNX export ({exporter}): max |Δlogit| vs torch {check.max_abs_logit_diff:.2e}; {summary}")
    return {"onnx_fp32": fp32, "onnx_int8": int8}, facts


def compact_weights(net) -> bytes:
    """The trained state dict in about a quarter of its size, for when no INT8 ONNX can be made:
    every convolution and linear weight as int8 with one symmetric scale per output channel (the
    scheme ONNX Runtime's per-channel INT8 uses, and it survives BatchNorm folding, which scales
    whole output channels), everything else as float32. ``assemble_pack.dequantize`` reads it."""
    import io
    arrays = {}
    for name, tensor in net.state_dict().items():
        value = tensor.detach().float().cpu().numpy() if tensor.is_floating_point() else tensor.cpu().numpy()
        if tensor.is_floating_point() and tensor.ndim >= 2:
            scale = np.abs(value).reshape(len(value), -1).max(axis=1) / 127
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            shaped = scale.reshape(-1, *([1] * (value.ndim - 1)))
            arrays[f"{name}::int8"] = np.clip(np.round(value / shaped), -127, 127).astype(np.int8)
            arrays[f"{name}::scale"] = scale
        else:
            arrays[name] = value.astype(np.float32) if tensor.is_floating_point() else value
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _export_torchscript(net, path: Path, size: int) -> None:
    import torch

    from export.models import FeatureNet
    from export.onnx_export import INPUT, OPSET, OUTPUTS
    with torch.no_grad():
        torch.onnx.export(FeatureNet(net).eval(), (torch.zeros(2, 3, size, size),), str(path), input_names=[INPUT],
                          output_names=list(OUTPUTS), opset_version=OPSET, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in (INPUT, *OUTPUTS)})


# ---------------------------------------------------------------- the files that go back

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_model_parts(model: bytes, other_bytes: int, other_files: int, part_bytes: int) -> tuple[str, list[bytes]]:
    """The INT8 model as parts that fit the file-count and size limits: raw if it can, else xz."""
    allowed_files = MAX_FILES - other_files
    allowed_bytes = MAX_TOTAL_BYTES - other_bytes
    for suffix, payload in (("", model), (".xz", None)):
        if payload is None:
            payload = lzma.compress(model, preset=3)
        parts = [payload[i:i + part_bytes] for i in range(0, len(payload), part_bytes)] or [b""]
        if len(parts) <= allowed_files and len(payload) <= allowed_bytes:
            return suffix, parts
    raise RuntimeError(f"the INT8 model ({len(model) / 2**20:.1f} MiB) does not fit in {allowed_files} files "
                       f"and {allowed_bytes / 2**20:.1f} MiB even compressed")


def write_outputs(out: Path, results: dict, exported: dict | None, environment: dict, args) -> list[Path]:
    """Everything into ``out`` within the limits (see the module docstring); returns the files."""
    from export.model_card import card_markdown, json_default

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    model_files = {}
    if exported is not None:
        prefix = EXPORT_MODEL
        for role, arrays in (("classifier", exported["classifier"]), ("ood", None)):
            path = out / f"{prefix}.{role}.npz"
            if role == "ood":
                path.write_bytes(exported["gate"].to_bytes())
            else:
                # The pack's classifier file (see export/packing.save_classifier): weight C×F, bias C.
                with open(path, "wb") as fh:
                    np.savez(fh, weight=arrays[0].astype(np.float32), bias=arrays[1].astype(np.float32))
            written.append(path)
            model_files[role] = {"file": path.name, "sha256": _sha256(path.read_bytes()), "bytes": path.stat().st_size}
        role, model = exported["payload"]
        # metrics.json and model_cards.md are written after the parts; allow them 2 MiB.
        suffix, parts = plan_model_parts(model, sum(p.stat().st_size for p in written) + 2 * 2**20, len(written) + 2,
                                         int(args.part_mib * 2**20))
        model_files[role] = {"sha256": _sha256(model), "bytes": len(model), "compression": suffix or None, "parts": []}
        name = {"onnx_int8": "int8.onnx", "weights": "weights.npz"}[role]
        for i, part in enumerate(parts):
            path = out / f"{prefix}.{name}{suffix}.part{i}"
            path.write_bytes(part)
            written.append(path)
            model_files[role]["parts"].append({"file": path.name, "sha256": _sha256(part), "bytes": len(part)})
        exported = {k: v for k, v in exported.items() if k not in ("gate", "classifier", "payload")}
        exported["files"] = model_files
    metrics = {"format": "bccdms-device-metrics/1", "environment": environment,
               "arguments": vars(args) | {"data": str(args.data), "out": str(args.out)},
               "seconds": round(CLOCK.elapsed(), 1), "budget_s": args.budget_s,
               "export": exported, "models": results}
    path = out / "metrics.json"
    path.write_text(json.dumps(metrics, indent=1, default=json_default) + "\n")
    written.append(path)
    lines = [f"# Model cards: GPU training run ({environment.get('device')}, {time.strftime('%Y-%m-%d', time.gmtime())})",
             "", f"Command: `python -m export.recipes.device_train {' '.join(sys.argv[1:])}`; wall clock "
             f"{CLOCK.elapsed():.0f} s of a {args.budget_s:.0f} s budget; torch {environment.get('torch')}, "
             f"onnxruntime {environment.get('onnxruntime')}. Trained from scratch (no pretrained weights offline).", ""]
    for model_id, result in results.items():
        lines += [card_markdown(result["report"], figures=False)
                  if "report" in result else f"# Model card: {model_id}\n\nNot trained: {result.get('error')}\n"]
    path = out / "model_cards.md"
    path.write_text("\n".join(lines))
    written.append(path)
    sizes = [p.stat().st_size for p in written]
    if len(written) > MAX_FILES or sum(sizes) > MAX_TOTAL_BYTES or max(sizes) > 16 * 2**20:
        raise RuntimeError(f"the outputs break the limits: {len(written)} files, {sum(sizes) / 2**20:.1f} MiB")
    log(f"wrote {len(written)} files, {sum(sizes) / 2**20:.1f} MiB: {', '.join(p.name for p in written)}")
    return written


# ---------------------------------------------------------------- the run

def environment_facts(device) -> dict:
    import torch
    facts = {"python": platform.python_version(), "torch": _version("torch"), "torchvision": _version("torchvision"),
             "onnxruntime": _version("onnxruntime"), "onnx": _version("onnx"), "onnxscript": _version("onnxscript"),
             "numpy": np.__version__, "device": str(device)}
    if device.type == "cuda":
        facts["device"] = torch.cuda.get_device_name(device)
    return facts


def training_shares(splits: dict, models: list[str]) -> dict[str, float]:
    """Each model's share of the training time: its training images (an epoch's cost), floored."""
    sizes = {m: len(splits["models"][m]["items"]["train"]) for m in models}
    total = sum(sizes.values()) or 1
    shares = {m: max(n / total, MIN_SHARE) for m, n in sizes.items()}
    norm = sum(shares.values())
    return {m: s / norm for m, s in shares.items()}


def run(args) -> int:
    import tempfile

    import torch
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    environment = environment_facts(device)
    log(f"environment: {json.dumps(environment)}")
    from export.transforms import input_spec
    spec = input_spec(args.image_size)
    splits = json.loads((args.data / "splits.json").read_text())
    models = [m for m in args.models if m in splits["models"]]
    data = load_images(args.data, splits, int(spec["resize"]), device)
    shares = training_shares(splits, models)
    results: dict[str, dict] = {}
    exported = None
    with tempfile.TemporaryDirectory(prefix="bccdms-device-") as tmp:
        for index, model_id in enumerate(models):
            doc = splits["models"][model_id]
            images = data[doc["dataset"]]
            train_rows, train_t, _ = model_rows(images, doc, "train", args.limit)
            val_rows, val_t, val_files = model_rows(images, doc, "val", args.limit)
            rows = {"train": train_rows, "val": val_rows, "val_targets": val_t, "val_files": val_files}
            pending = models[index:]
            export_left = POST_TRAINING_RESERVE_S if EXPORT_MODEL in pending and not args.smoke else 0
            available = CLOCK.left() - WRITE_RESERVE_S - export_left - 8 * len(pending)
            budget = max(available * shares[model_id] / sum(shares[m] for m in pending), 1.0)
            log(f"{model_id}: {len(train_rows)} training / {len(val_rows)} validation images, "
                f"{budget:.0f} s of training")
            try:
                net, training = train_model(model_id, images, train_rows, train_t, val_rows, val_t, spec, args,
                                            budget, device)
                onnx_files, export_facts = None, None
                if model_id == EXPORT_MODEL:
                    try:
                        onnx_files, export_facts = export_int8(net, images, rows, spec, Path(tmp))
                    except Exception as exc:  # noqa: BLE001 - the metrics still go back without the INT8 model
                        traceback.print_exc()
                        export_facts = {"error": f"{type(exc).__name__}: {exc}"}
                report, gate = evaluate_model(model_id, net, data, doc, rows, spec, args, device, training, onnx_files)
                if export_facts:
                    report["export"] = export_facts
                if model_id == EXPORT_MODEL:
                    # Without an INT8 ONNX (no `onnx` package there, or the export failed) the trained
                    # weights go back compactly instead; assemble_pack exports and quantizes them here.
                    payload = (("onnx_int8", onnx_files["onnx_int8"].read_bytes()) if onnx_files else
                               ("weights", compact_weights(net)))
                    exported = {"model": model_id, "payload": payload, "gate": gate,
                                "classifier": (net.fc.weight.detach().float().cpu().numpy(),
                                               net.fc.bias.detach().float().cpu().numpy()),
                                "input": spec, **(export_facts or {})}
                results[model_id] = {"report": report, "training": training, "input": spec,
                                     "temperature": report["temperature"], "refer_below": report["refer_below"],
                                     "split": {k: v for k, v in doc.items() if k != "items"}}
                fig = report["forms"]["torch"]["metrics"]
                log(f"{model_id}: validation accuracy {fig['accuracy']:.3f}, balanced {fig['balanced_accuracy']:.3f}, "
                    f"T {report['temperature']:.2f}, refer below {report['refer_below']:.3f}")
                del net
            except Exception as exc:  # noqa: BLE001 - one model failing must not lose the others' results
                traceback.print_exc()
                results[model_id] = {"error": f"{type(exc).__name__}: {exc}"}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        write_outputs(args.out, results, exported, environment, args)
    failed = [m for m, r in results.items() if "error" in r]
    if failed:
        log(f"models that failed: {', '.join(failed)}")
    return 1 if failed or exported is None else 0


def parse_args(argv: list[str] | None = None):
    p = argparse.ArgumentParser(prog="python -m export.recipes.device_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(".device_data"), help="folder from pack_device_data")
    p.add_argument("--out", type=Path, required=True, help="where the files that go back are written ($OUT)")
    p.add_argument("--budget-s", type=float, default=380.0, help="wall-clock budget of the whole run (default 380)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="models to train, in order")
    p.add_argument("--arch", choices=("resnet152", "tiny"), default="resnet152")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (default 1e-3: from scratch)")
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--sampling", choices=("shuffle", "balanced"), default="shuffle",
                   help="epoch order: shuffled (default) or class-balanced draws")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="at most N training / validation images per model (smoke runs)")
    p.add_argument("--limit-other", type=int, default=200, help="other-dataset images per set for the gate")
    p.add_argument("--part-mib", type=float, default=PART_MIB, help="size of the INT8 model's parts (default 15)")
    p.add_argument("--version", default=time.strftime("%Y.%m.%d-gpu", time.gmtime()), help="model version")
    p.add_argument("--cpu", action="store_true", help="do not use CUDA even if present")
    p.add_argument("--smoke", action="store_true",
                   help="a minute's check of the whole script: tiny network, 64 px, 1 epoch, 24/12 images per model")
    args = p.parse_args(argv)
    if args.smoke:
        args.arch, args.image_size, args.max_epochs = "tiny", 64, 1
        args.limit, args.limit_other, args.batch_size = args.limit or 24, min(args.limit_other, 12), 12
    return args


def main(argv: list[str] | None = None) -> int:
    global CLOCK
    args = parse_args(argv)
    CLOCK = Clock(args.budget_s)
    if not (args.data / "splits.json").is_file():
        print(f"device_train: {args.data}/splits.json is missing; run 'python -m export.recipes.pack_device_data' "
              "first and carry .device_data to the device.", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
