"""Demo and test packs: all seven catalogue models, untrained, built in minutes without data.

``build_demo_pack`` makes one backbone (torchvision ResNet152, or the tiny ResNet for tests),
sets its BatchNorm statistics on synthetic textures, exports it to ONNX and quantizes it once
for each runtime (ONNX Runtime INT8, OpenVINO INT8), then gives every model its own random
classifier head (the classifier stays in float in the INT8 graphs, so swapping it leaves the
quantized backbone untouched). The heads are scaled so that the demo's class percentages
vary from image to image instead of sitting at 1/C. The pack is signed and read back through
``appliance.inference.pack.load_pack`` before it is put in place.

A demo pack (``demo=True``) makes every result on the box say DEMO. Tests build non-demo
tiny packs signed by a test key, to act as clinical packs.

Training mode: nurses learn every banner of the result page on the demo pack, so a demo pack
(and only a demo pack) also carries DEMO thresholds that make each banner appear for suitable
inputs (``DEMO_TRAINING`` below; the manifest's ``provenance.demo_thresholds`` says so, marked
DEMO, and so does the pack's description):

- "Uncertain — refer": every model's ``refer_below`` is the top probability that a share
  (``DEMO_REFER_SHARE``) of the synthetic textures stays below, so some ordinary images are
  uncertain;
- "does not look like the training images": out-of-scope statistics fitted on the synthetic
  textures, with thresholds placed between those textures and synthetic blank and skin frames
  (an empty slide, a photo of a hand): such a frame is flagged. Fitted on textures, not on real
  images, it also flags many real photos (with the tiny test network: 11 of 12 colposcopy photos,
  5 of 12 Pap smears, 3 of 12 breast slides), which is fine for training and is why it is DEMO;
- "not assessed": ``DEMO_LEFT_OUT`` (the benign breast subtype) is deliberately not in the
  pack, so a benign breast result says its subtype step was not assessed.
These numbers are not calibrated on patients and mean nothing clinically, as the models do not.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from appliance import catalogue, signing
from appliance.errors import UserError

from .progress import Progress, quiet_libraries

DEFAULT_IMAGE_SIZE = {"resnet152": 224, "tiny": 64}
# Synthetic images for BatchNorm statistics / INT8 calibration / the INT8 check after building.
_BATCHNORM_BATCHES = {"resnet152": (4, 8), "tiny": (4, 16)}   # (batches, batch size)
_CALIBRATION_IMAGES = {"resnet152": 16, "tiny": 32}
_CHECK_IMAGES = 6
# Spread of a demo head's logits over the synthetic images (softmax of ~N(0, 1.5²) logits).
_LOGIT_SPREAD = 1.5
_HEAD_COMPONENTS = 8
# Training mode (demo packs only): see the module docstring.
DEMO_REFER_SHARE = 0.3
DEMO_LEFT_OUT = ("breast_benign_subtype",)
DEMO_TRAINING = ("DEMO thresholds for training: refer band at the {share:.0%} least confident synthetic textures; "
                 "out-of-scope statistics of synthetic textures (blank and skin-coloured frames are flagged); "
                 "{left_out} left out so that its cascade step shows as not assessed. Not calibrated: "
                 "results mean nothing.")


def build_demo_pack(out_dir, arch: str = "resnet152", private_key=None, demo: bool = True,
                    progress: bool = True, image_size: int | None = None,
                    include_fp32: bool | None = None, seed: int = 0, overwrite: bool = False) -> Path:
    """Build a signed pack for all seven models into ``out_dir`` and return its path.

    ``private_key``: an Ed25519 private key; None signs with a fresh throw-away key (fine for a
    demo pack, which boxes accept only outside clinical mode). ``include_fp32``: also write the
    FP32 ONNX and IR (default: for the tiny architecture only; ResNet152 FP32 is 230 MB a model).
    ``overwrite``: replace an existing folder (otherwise a non-empty ``out_dir`` is refused).
    """
    from .packing import staged_folder

    out_dir = Path(out_dir)
    if arch not in DEFAULT_IMAGE_SIZE:
        raise UserError(f"Unknown architecture {arch!r} for a demo pack.",
                        f"Use one of: {', '.join(DEFAULT_IMAGE_SIZE)}.")
    size = image_size or DEFAULT_IMAGE_SIZE[arch]
    if include_fp32 is None:
        include_fp32 = arch == "tiny"
    key = private_key or signing.new_private_key()
    say = Progress(progress)
    started = time.perf_counter()
    with staged_folder(out_dir, overwrite) as staging:
        work = staging.parent / "work"     # the shared backbone files, removed with the scratch folder
        work.mkdir()
        _build(staging, work, arch, size, key, demo, include_fp32, seed, say)
    say.say(f"{'demo' if demo else 'test'} pack ({arch}, {size} px, 7 models) written to {out_dir} "
            f"in {time.perf_counter() - started:.0f} s; signing key {signing.public_b64(key)}")
    return out_dir


def _build(pack_dir: Path, work: Path, arch: str, size: int, key, demo: bool, include_fp32: bool,
           seed: int, say: Progress) -> None:
    import torch

    from .models import build_network, set_batchnorm_statistics
    from .onnx_export import check_onnx, export_onnx
    from .packing import FILE_NAMES, model_entry, package_version, save_classifier, seal_pack
    from .quantize import convert_openvino, quantize_onnx_int8, quantize_openvino_int8
    from .synthetic import synthetic_images
    from .transforms import eval_transform, input_spec

    torch.manual_seed(seed)
    spec = input_spec(size)
    to_tensor = eval_transform(spec)

    def batch_of(count: int, batch_seed: int) -> torch.Tensor:
        return torch.stack([to_tensor(im) for im in synthetic_images(count, spec["resize"], batch_seed)])

    net = build_network(arch, num_classes=2, weights=None)
    batches, per_batch = _BATCHNORM_BATCHES[arch]
    with say.step(f"setting BatchNorm statistics of the {arch} backbone on synthetic textures"):
        set_batchnorm_statistics(net, (batch_of(per_batch, seed + 1 + i)
                                       for i in say.bar(range(batches), desc="BatchNorm", unit="batch")))
    calibration = batch_of(_CALIBRATION_IMAGES[arch], seed + 100).numpy()
    check_images = batch_of(_CHECK_IMAGES, seed + 200).numpy()

    fp32 = work / "backbone.fp32.onnx"
    with say.step("exporting the backbone to ONNX FP32"), quiet_libraries(say.enabled):
        export_onnx(net, fp32, size)
        check = check_onnx(fp32, net, check_images)
    say.say(f"ONNX FP32 vs torch: max |Δlogit| {check.max_abs_logit_diff:.2e}, features {check.features_shape}")
    with say.step("quantizing for ONNX Runtime (static INT8, QDQ, per-channel, U8S8)"):
        ort_summary = quantize_onnx_int8(fp32, work / "backbone.int8.onnx", calibration, say)
    say.say(str(ort_summary))
    with say.step("converting to OpenVINO IR FP32 and quantizing with NNCF"):
        convert_openvino(fp32, work / "backbone.fp32.xml")
        ov_summary = quantize_openvino_int8(work / "backbone.fp32.xml", work / "backbone.int8.xml",
                                            calibration, say)
    say.say(str(ov_summary))
    for summary in (ort_summary, ov_summary):
        if not summary.all_convolutions_quantized:
            raise RuntimeError(f"INT8 quantization left convolutions in float: {summary}")

    pooled, features = _pooled_features(net, calibration)
    check_pooled, _ = _pooled_features(net, check_images)
    version = package_version()
    quantization = {"onnxruntime": ort_summary.as_dict(), "openvino": ov_summary.as_dict(),
                    "calibration": f"{len(calibration)} synthetic textures"}
    heads = {}
    rng = np.random.default_rng(seed + 300)
    for model_id, spec_model in catalogue.MODELS.items():
        heads[model_id] = _random_head(rng, len(spec_model.classes), pooled)
    training = _demo_training(net, spec, pooled, calibration, check_images, seed, say) if demo else None
    writer = _HeadWriter(work, include_fp32)
    entries = {}
    for model_id, (weight, bias) in say.bar(heads.items(), desc="writing models", unit="model"):
        if training is not None and model_id in DEMO_LEFT_OUT:
            continue            # deliberately absent: its cascade step shows as "not assessed"
        folder = pack_dir / model_id
        folder.mkdir()
        roles = writer.write(folder, weight, bias)
        save_classifier(folder / FILE_NAMES["classifier"], weight, bias)
        roles.append("classifier")
        refer_below, ood = None, None
        if training is not None:
            (folder / FILE_NAMES["ood"]).write_bytes(training["gate"].to_bytes())
            roles.append("ood")
            refer_below = _demo_refer_below(pooled @ weight.T + bias)
            ood = dict(training["ood"])
        reference = check_pooled @ weight.T + bias
        provenance = {
            "kind": "demo" if demo else "synthetic-test",
            "trained": False,
            "data": "none: untrained network, BatchNorm statistics and INT8 calibration on synthetic textures",
            "builder": "bccdms-export demo", "seed": seed, "torch": str(torch.__version__),
            "quantization": quantization,
            "int8_check": writer.check(folder, check_images, reference),
        }
        if training is not None:
            provenance["demo_thresholds"] = {"DEMO": training["text"], "refer_below": refer_below,
                                             "refer_share": DEMO_REFER_SHARE, "out_of_scope": training["ood"],
                                             "left_out": list(DEMO_LEFT_OUT)}
        entries[model_id] = model_entry(
            model_id, version=f"{version}-demo" if demo else version, demo=demo, architecture=arch,
            input_spec=spec, files={r: f"{model_id}/{FILE_NAMES[r]}" for r in roles},
            refer_below=refer_below, validation={}, provenance=provenance, ood=ood)
    with say.step("signing the manifest and reading the pack back"):
        seal_pack(pack_dir, entries, key, pack_id="demo" if demo else f"{arch}-test", version=version,
                  description=("Demo pack: UNTRAINED models for trying the appliance and training staff; results "
                               "mean nothing. " + training["text"]
                               if demo else f"Untrained {arch} test pack built from synthetic textures."),
                  demo=demo)
    del features


def _demo_refer_below(logits: np.ndarray) -> float:
    """DEMO refer band: the top probability below which ``DEMO_REFER_SHARE`` of the textures fall."""
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return round(float(np.quantile(probs.max(axis=1), DEMO_REFER_SHARE)), 4)


def _demo_training(net, spec: dict, pooled: np.ndarray, calibration: np.ndarray, check_images: np.ndarray,
                   seed: int, say: Progress) -> dict:
    """The DEMO out-of-scope gate: statistics of the synthetic textures, thresholds half-way (on a
    log scale) between the textures' largest distances and those of synthetic blank and skin
    frames, so that such a frame is flagged (real images may be flagged too: see the module docstring)."""
    from appliance.inference.ood import Gate, appearance_statistics

    from .ood import fit_gate, synthetic_out_of_scope
    from .transforms import eval_transform

    with say.step("fitting the DEMO out-of-scope statistics and refer band (training mode)"):
        mean, std = spec["mean"], spec["std"]
        to_tensor = eval_transform(spec)
        outside = np.stack([to_tensor(im).numpy() for frames in synthetic_out_of_scope(seed=seed + 400).values()
                            for im in frames])
        outside_pooled, _ = _pooled_features(net, outside)
        inside_look = appearance_statistics(calibration, mean, std)
        check_look = appearance_statistics(check_images, mean, std)
        check_pooled, _ = _pooled_features(net, check_images)
        fitted = fit_gate(pooled, inside_look, check_pooled, check_look, false_alarm=0.05,
                          components=min(16, len(pooled) - 2))
        outside_look = appearance_statistics(outside, mean, std)
        all_pooled = np.concatenate([pooled, check_pooled])
        all_look = np.concatenate([inside_look, check_look])
        thresholds = {}
        for name, inside_d, outside_d in (
                ("feature_threshold", fitted.feature_distance(all_pooled), fitted.feature_distance(outside_pooled)),
                ("appearance_threshold", fitted.appearance_distance(all_look), fitted.appearance_distance(outside_look))):
            low, high = float(inside_d.max()), float(np.median(outside_d))
            thresholds[name] = float(np.sqrt(low * high)) if high > low else low * 4.0
        fields = {name: getattr(fitted, name) for name in fitted.__dataclass_fields__}
        fields.update(thresholds)
        gate = Gate(**fields)
        verdict = gate.judge(outside_pooled, outside_look)
        share = DEMO_REFER_SHARE
        text = DEMO_TRAINING.format(share=share, left_out=", ".join(DEMO_LEFT_OUT))
        ood = {"DEMO": True, "fitted_on": f"{len(all_pooled)} synthetic textures",
               "synthetic_out_of_scope_flagged": f"{int(verdict['flagged'].sum())}/{len(outside)}"}
    return {"gate": gate, "ood": ood, "text": text}


def _pooled_features(net, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global-average-pooled features (N×F) and the feature maps, from the torch network."""
    import torch
    from .models import FeatureNet
    with torch.no_grad():
        _, features = FeatureNet(net).eval()(torch.from_numpy(images))
    features = features.numpy()
    return features.mean(axis=(2, 3)), features


def _random_head(rng: np.random.Generator, classes: int, pooled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random linear head whose logits on the calibration images have mean 0 and spread ~1.5.

    The head mixes the few directions in which the images' pooled features differ most
    (principal components): the percentages then follow the image rather than INT8 rounding
    noise, which is spread evenly over all feature channels.
    """
    centred = pooled - pooled.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    basis = components[:_HEAD_COMPONENTS]
    weight = rng.normal(size=(classes, len(basis))) @ basis
    spread = float((centred @ weight.T).std()) or 1.0
    weight *= _LOGIT_SPREAD / spread
    bias = -(pooled.mean(axis=0) @ weight.T)
    return weight.astype(np.float32), bias.astype(np.float32)


class _HeadWriter:
    """Writes one model's files from the shared backbone files with that model's head."""

    def __init__(self, work: Path, include_fp32: bool):
        import onnx
        import openvino as ov
        core = ov.Core()
        self._onnx = {"onnx_int8": onnx.load(str(work / "backbone.int8.onnx"))}
        self._openvino = {"openvino_int8": core.read_model(str(work / "backbone.int8.xml"))}
        if include_fp32:
            self._onnx["onnx_fp32"] = onnx.load(str(work / "backbone.fp32.onnx"))
            self._openvino["openvino_fp32"] = core.read_model(str(work / "backbone.fp32.xml"))

    def write(self, folder: Path, weight: np.ndarray, bias: np.ndarray) -> list[str]:
        import onnx
        import openvino as ov
        from .heads import set_onnx_head, set_openvino_head
        from .packing import FILE_NAMES
        roles = []
        for role, model in self._onnx.items():
            set_onnx_head(model, weight, bias)
            onnx.save_model(model, str(folder / FILE_NAMES[role]))
            roles.append(role)
        for role, model in self._openvino.items():
            set_openvino_head(model, weight, bias)
            ov.save_model(model, str(folder / FILE_NAMES[role]), compress_to_fp16=False)
            roles += [role, f"{role}_weights"]
        return roles

    def check(self, folder: Path, images: np.ndarray, reference: np.ndarray) -> dict:
        """INT8 logits of both runtimes against the float model with the same head."""
        import openvino as ov
        from .onnx_export import run_onnx
        from .packing import FILE_NAMES
        ort_logits, features = run_onnx(folder / FILE_NAMES["onnx_int8"], images)
        compiled = ov.Core().compile_model(str(folder / FILE_NAMES["openvino_int8"]), "CPU",
                                           {"INFERENCE_PRECISION_HINT": "f32"})
        ov_logits = compiled(images)[compiled.output("logits")]
        if ort_logits.shape != reference.shape or ov_logits.shape != reference.shape or features.ndim != 4:
            raise RuntimeError(f"{folder.name}: INT8 model outputs have the wrong shape")
        top = reference.argmax(1)
        return {"images": int(len(images)),
                "onnxruntime_top1_agreement": float((ort_logits.argmax(1) == top).mean()),
                "onnxruntime_max_abs_logit_diff": float(np.abs(ort_logits - reference).max()),
                "openvino_top1_agreement": float((ov_logits.argmax(1) == top).mean()),
                "openvino_max_abs_logit_diff": float(np.abs(ov_logits - reference).max())}
