"""``bccdms-export train``: fine-tune a torchvision ResNet152 for one catalogue model.

The paper's recipe: ImageNet weights, Adam (lr 1e-4), cross-entropy, keep the epoch with the
lowest validation loss. Added here: the augmentation of ``augment.py``, class-balanced sampling
(``--sampling``), a patient-disjoint validation split, temperature scaling on the validation set
(so the appliance's percentages are calibrated), resumable checkpoints, CUDA (+ mixed precision)
when present, ``--freeze-backbone``, which trains the classifier only (a real recipe a CPU can run
in minutes), and ``--init-from CHECKPOINT``: fine-tuning from the model the posts run, whose sha256
the provenance (and so the model card and the pack manifest) records. The epochs themselves are
``loop.fit``, the loop the GPU recipe runs too.

Output folder::

    checkpoint.pt    the best epoch + temperature + validation figures + split + provenance
    last.pt          the state to resume from (model, optimiser, epoch, best so far)
    split.json       which patients and files are in training and validation
    training.json    options, per-epoch history and validation figures (no weights)
"""
from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance import catalogue
from appliance.errors import UserError
from appliance.inference.pack import file_sha256

from .checkpoint import FORMAT
from .datasets import Labelled, open_dataset, labelled_for, split, summarise
from .metrics import classification_metrics, fit_temperature
from .packing import utc_now
from .progress import Progress
from .torchio import load_torch_file, save_atomic


@dataclass
class TrainOptions:
    model_id: str
    data: str
    out: str
    layout: str = "auto"
    subset: str | None = None
    arch: str = "resnet152"
    weights: str = "imagenet"
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    image_size: int = 224
    val_fraction: float = 0.2
    seed: int = 0
    freeze_backbone: bool = False
    workers: int = 2
    device: str = "auto"
    amp: bool = True
    resume: bool = False
    force: bool = False
    init_from: str | None = None       # fine-tune from this checkpoint (the model the posts run)
    sampling: str = "balanced"         # balanced (every class as often) | shuffle


class ImageFiles:
    """A torch map-style dataset over image files. A file that cannot be decoded yields a
    message instead of a crash in a worker process; the training loop turns it into a UserError."""

    def __init__(self, labelled: Labelled, transform):
        self.items, self.targets, self.transform = labelled.items, labelled.targets, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image
        path = self.items[index].path
        try:
            with Image.open(path) as im:
                return self.transform(im), self.targets[index], ""
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            return torch.zeros(3, 1, 1), -1, f"{path}: {exc}"


class SquareTransform:
    """PIL image → the stored square the augmentation crops from (``augment.square_pixels``), as
    a uint8 tensor. A class, not a closure, so DataLoader workers can receive it."""

    def __init__(self, side: int):
        self.side = side

    def __call__(self, image):
        import torch
        from .augment import square_pixels
        return torch.from_numpy(square_pixels(image, self.side))


def _collate(batch):
    import torch
    problems = [p for _, _, p in batch if p]
    if problems:
        return None, None, problems
    images, targets, _ = zip(*batch)
    return torch.stack(images), torch.tensor(targets), []


def _checked(loader):
    for images, targets, problems in loader:
        if problems:
            raise UserError(f"An image of the dataset cannot be read ({problems[0]}).",
                            "Remove or replace the file, then run the command again (with --resume).")
        yield images, targets


def _training_batches(labelled: Labelled, side: int, batch_size: int, workers: int):
    """``order → batches of stored squares`` for the loop: files decoded by DataLoader workers."""
    from torch.utils.data import DataLoader

    from .loop import full_batches
    files = ImageFiles(labelled, SquareTransform(side))

    def batches(order):
        plan = [chunk.tolist() for chunk in full_batches(order, batch_size)]
        return _checked(DataLoader(files, batch_sampler=plan, num_workers=workers, collate_fn=_collate))
    return batches


def _validation_loader(labelled: Labelled, spec, opts: "TrainOptions"):
    """The box's own preprocessing (``transforms.eval_transform``) on the validation images."""
    from torch.utils.data import DataLoader

    from .transforms import eval_transform
    return DataLoader(ImageFiles(labelled, eval_transform(spec)), batch_size=opts.batch_size, shuffle=False,
                      num_workers=opts.workers, collate_fn=_collate)


def _device(choice: str):
    import torch
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA GPU is available.", "Use --device cpu or auto.")
    return torch.device(choice)


def train(opts: TrainOptions, progress: bool = True) -> Path:
    """Train one model; returns the path of ``checkpoint.pt``."""
    import torch

    from .loop import SAMPLING, LoopOptions, LoopState, fit
    from .models import build_network
    from .transforms import input_spec

    say = Progress(progress)
    spec_model = catalogue.model(opts.model_id)
    if opts.epochs < 1 or opts.batch_size < 2 or opts.lr <= 0:
        raise UserError("--epochs must be at least 1, --batch-size at least 2 and --lr positive.",
                        "Check the numbers given.")
    if opts.sampling not in SAMPLING:
        raise UserError(f"Unknown sampling {opts.sampling!r}.", f"Use one of: {', '.join(SAMPLING)}.")
    initial = _initial_checkpoint(opts)
    if opts.freeze_backbone and initial is None and (opts.arch == "tiny" or opts.weights == "none"):
        # An untrained backbone has no features worth keeping (and, with BatchNorm statistics
        # never measured, activations that overflow): freezing it cannot train anything.
        raise UserError("--freeze-backbone needs a trained backbone, but the network starts from random weights.",
                        "Use --weights imagenet, --weights PATH or --init-from CHECKPOINT with it, "
                        "or train the whole network.")
    out = Path(opts.out)
    last_path, best_path = out / "last.pt", out / "checkpoint.pt"
    if not opts.resume and (last_path.exists() or best_path.exists()) and not opts.force:
        raise UserError(f"{out} already holds a training run.",
                        "Pass --resume to continue it, --force to start again, or choose another --out.")
    torch.manual_seed(opts.seed)
    device = _device(opts.device)

    dataset = open_dataset(opts.data, opts.layout, opts.subset)
    labelled = labelled_for(dataset, opts.model_id)
    parts = split(labelled, opts.val_fraction, opts.seed)
    split_doc = parts.describe()
    if not parts.val.items or not parts.train.items:
        raise UserError(f"The split of {len(labelled.items)} images left one side empty.",
                        "Add images of more patients, or change --val-fraction.")
    say.say(f"{opts.model_id}: {len(parts.train.items)} training and {len(parts.val.items)} validation images "
            f"({parts.method} split; classes {labelled.counts()}; {opts.sampling} sampling) on {device}"
            + (f"; fine-tuning {Path(opts.init_from).name}" if initial is not None else ""))

    spec = input_spec(opts.image_size)
    loop = LoopOptions(spec=spec, epochs=opts.epochs, batch_size=min(opts.batch_size, len(parts.train.items)),
                       lr=opts.lr, seed=opts.seed, sampling=opts.sampling,
                       microscopy=spec_model.domain != catalogue.COLPOSCOPY,
                       # A frozen backbone keeps its BatchNorm statistics: the whole net stays in eval mode.
                       train_mode=not opts.freeze_backbone, amp=opts.amp,
                       diverge_hint="Lower --lr" + (" or train without mixed precision (--no-amp)"
                                                    if opts.amp and device.type == "cuda" else "")
                       + "; --resume continues from the last good epoch.")
    train_batches = _training_batches(parts.train, int(spec["resize"]), loop.batch_size, opts.workers)
    val_loader = _validation_loader(parts.val, spec, opts)

    net = build_network(opts.arch, len(spec_model.classes), None if opts.resume or initial else opts.weights)
    if initial is not None and not opts.resume:
        net.load_state_dict(initial["state_dict"])
    if opts.freeze_backbone:
        for name, param in net.named_parameters():
            param.requires_grad = name.startswith("fc.")
    net.to(device)
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=opts.lr)
    state = LoopState()
    if opts.resume:
        state = _resume(last_path, opts, split_doc, net, optimiser)
        say.say(f"resuming after epoch {state.epoch} of {opts.epochs}")

    def after_epoch(state: LoopState, record: dict) -> None:
        save_atomic({**state.as_dict(), "model_state": net.state_dict(), "optimiser_state": optimiser.state_dict(),
                     "options": asdict(opts), "split": split_doc}, last_path)
        say.say(f"epoch {record['epoch']}/{opts.epochs}: train loss {record['train_loss']:.4f}, "
                f"val loss {record['val_loss']:.4f}, val accuracy {record['val_accuracy']:.3f}"
                + ("  (best so far)" if record["improved"] else ""))

    def bar(iterable, total, desc):
        return say.bar(iterable, total=total, desc=desc, unit="batch", leave=False)

    state = fit(net, optimiser, loop, targets=np.asarray(parts.train.targets), batches=train_batches,
                validate=lambda forward: _predict(val_loader, forward), device=device, state=state,
                on_epoch=after_epoch, bar=bar)
    val_logits, val_targets = _predict(val_loader, _plain_forward(net, device))
    with say.step("fitting the temperature on the validation set"):
        temperature = fit_temperature(val_logits, val_targets)
    validation = classification_metrics(val_logits, val_targets, spec_model.class_ids, temperature)
    validation.update(nll_uncalibrated=classification_metrics(val_logits, val_targets, spec_model.class_ids)["nll"],
                      best_epoch=state.best_epoch, split=parts.method,
                      patients=len(split_doc["val"]["patients"]) or None, dataset=dataset.layout)
    ckpt = {
        "format": FORMAT, "model_id": opts.model_id, "analysis": catalogue.analysis_of_model(opts.model_id).id,
        "architecture": opts.arch, "classes": list(spec_model.class_ids), "input": spec,
        "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
        "temperature": temperature, "validation": validation, "split": split_doc,
        "provenance": _provenance(opts, dataset, labelled, initial),
        "training": {"options": asdict(opts), "best_epoch": state.best_epoch, "history": state.history,
                     "device": str(device), "amp": opts.amp and device.type == "cuda", "sampling": opts.sampling,
                     "recipe": "export/loop.py (export/augment.py augmentation)"},
    }
    save_atomic(ckpt, best_path)
    (out / "split.json").write_text(json.dumps(split_doc, indent=2) + "\n")
    summary = {k: v for k, v in ckpt.items() if k not in ("state_dict", "split")}
    (out / "training.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    say.say(f"best epoch {state.best_epoch}: validation accuracy {validation['accuracy']:.3f}, "
            f"balanced {validation['balanced_accuracy']:.3f}, temperature {temperature:.2f} → {best_path}")
    return best_path


def _predict(loader, forward) -> tuple[np.ndarray, np.ndarray]:
    import torch
    logits, targets = [], []
    with torch.no_grad():
        for images, t in _checked(loader):
            logits.append(forward(images).cpu().numpy())
            targets.append(t.numpy())
    return np.concatenate(logits), np.concatenate(targets)


def _plain_forward(net, device):
    """The network in FP32 evaluation mode (the temperature is fitted on what export will run)."""
    net.eval()
    return lambda images: net(images.to(device)).float()


def _initial_checkpoint(opts: TrainOptions) -> dict[str, Any] | None:
    """The deployed model's checkpoint a fine-tuning run starts from (``--init-from``), checked."""
    if not opts.init_from:
        return None
    from .checkpoint import load_checkpoint
    ckpt = load_checkpoint(opts.init_from)
    if ckpt["model_id"] != opts.model_id:
        raise UserError(f"The checkpoint {opts.init_from} is a {ckpt['model_id']} model, not {opts.model_id}.",
                        "Pass the checkpoint of the model you are training (--model).")
    if ckpt["architecture"] != opts.arch:
        raise UserError(f"The checkpoint {opts.init_from} is a {ckpt['architecture']} network, not {opts.arch}.",
                        f"Pass --arch {ckpt['architecture']}.")
    if int(ckpt["input"]["size"]) != int(opts.image_size):
        raise UserError(f"The checkpoint {opts.init_from} takes {ckpt['input']['size']} px images, not "
                        f"{opts.image_size} px.", f"Pass --image-size {ckpt['input']['size']}.")
    return ckpt


def _resume(last_path: Path, opts: TrainOptions, split_doc: dict, net, optimiser):
    from .loop import LoopState
    if not last_path.is_file():
        raise UserError(f"There is no training to resume in {last_path.parent}.", "Leave out --resume to start one.")
    try:
        saved = load_torch_file(last_path, "training state", "Start again with --force.")
        before = saved["options"]
    except (UserError, KeyError, TypeError):
        raise UserError(f"{last_path} is damaged and cannot be resumed.", "Start again with --force.") from None
    for key in ("model_id", "arch", "image_size", "freeze_backbone", "init_from"):
        if before.get(key) != getattr(opts, key):
            raise UserError(f"The run in {last_path.parent} was started with --{key.replace('_', '-')} "
                            f"{before.get(key)}, not {getattr(opts, key)}.", "Resume with the same options, or use --force.")
    if saved["split"]["train"]["files"] != split_doc["train"]["files"]:
        raise UserError("The dataset or its split changed since the run started.",
                        "Resume with the same --data, --seed and --val-fraction, or start again with --force.")
    net.load_state_dict(saved["model_state"])
    optimiser.load_state_dict(saved["optimiser_state"])
    return LoopState(**{k: saved[k] for k in ("epoch", "best_loss", "best_epoch", "best_state", "history")},
                     scaler_state=saved.get("scaler_state"))


def _provenance(opts: TrainOptions, dataset, labelled: Labelled, initial: dict[str, Any] | None) -> dict[str, Any]:
    import torch
    import torchvision
    weights = opts.weights if opts.arch == "resnet152" else "none"   # the tiny net always starts random
    if weights not in ("imagenet", "none") and Path(weights).is_file():
        weights = {"file": weights, "sha256": file_sha256(Path(weights))}
    recipe = "Adam, cross-entropy, lowest validation loss, temperature scaling"
    out = {"kind": "trained", "trained": True, "data": summarise(dataset), "model_images": labelled.counts(),
           "initial_weights": weights, "recipe": f"{recipe}, {opts.sampling} sampling",
           "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
           "python": platform.python_version(), "created": utc_now()}
    if initial is not None:
        # The next round starts from the model the posts run: its checkpoint, by content.
        path = Path(opts.init_from)
        out["init_from"] = {"file": path.name, "sha256": file_sha256(path), "model_id": initial["model_id"],
                            "created": (initial.get("provenance") or {}).get("created"),
                            "validation_accuracy": (initial.get("validation") or {}).get("accuracy")}
        out["initial_weights"] = {"checkpoint": path.name, "sha256": out["init_from"]["sha256"]}
        out["recipe"] = f"fine-tuned from {path.name}: {out['recipe']}"
    return out
