"""``bccdms-export train``: fine-tune a torchvision ResNet152 for one catalogue model.

The paper's recipe: ImageNet weights, Adam (lr 1e-4), cross-entropy, keep the epoch with the
lowest validation loss. Added here: augmentation, a patient-disjoint validation split,
temperature scaling on the validation set (so the appliance's percentages are calibrated),
resumable checkpoints, CUDA (+ mixed precision) when present, and ``--freeze-backbone``,
which trains the classifier only: a real recipe a CPU can run in minutes.

Output folder::

    checkpoint.pt    the best epoch + temperature + validation figures + split + provenance
    last.pt          the state to resume from (model, optimiser, epoch, best so far)
    split.json       which patients and files are in training and validation
    training.json    options, per-epoch history and validation figures (no weights)
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance import catalogue
from appliance.errors import UserError
from appliance.inference.pack import file_sha256

from .checkpoint import FORMAT, save_atomic
from .datasets import Labelled, open_dataset, labelled_for, split, summarise
from .metrics import classification_metrics, fit_temperature
from .packing import utc_now
from .progress import Progress


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


def _collate(batch):
    import torch
    problems = [p for _, _, p in batch if p]
    if problems:
        return None, None, problems
    images, targets, _ = zip(*batch)
    return torch.stack(images), torch.tensor(targets), []


def _loader(labelled: Labelled, transform, opts: TrainOptions, shuffle: bool, seed: int):
    import torch
    from torch.utils.data import DataLoader
    # drop_last keeps a lone last image out of a training batch (BatchNorm needs two).
    drop_last = shuffle and len(labelled.items) > opts.batch_size
    return DataLoader(ImageFiles(labelled, transform), batch_size=opts.batch_size, shuffle=shuffle,
                      num_workers=opts.workers, collate_fn=_collate, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=False)


def _batches(loader):
    for images, targets, problems in loader:
        if problems:
            raise UserError(f"An image of the dataset cannot be read ({problems[0]}).",
                            "Remove or replace the file, then run the command again (with --resume).")
        yield images, targets


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
    from torch import nn

    from .models import build_network
    from .transforms import eval_transform, input_spec, train_transform

    say = Progress(progress)
    spec_model = catalogue.model(opts.model_id)
    if opts.epochs < 1 or opts.batch_size < 2 or opts.lr <= 0:
        raise UserError("--epochs must be at least 1, --batch-size at least 2 and --lr positive.",
                        "Check the numbers given.")
    if opts.freeze_backbone and (opts.arch == "tiny" or opts.weights == "none"):
        # An untrained backbone has no features worth keeping (and, with BatchNorm statistics
        # never measured, activations that overflow): freezing it cannot train anything.
        raise UserError("--freeze-backbone needs a trained backbone, but the network starts from random weights.",
                        "Use --weights imagenet or --weights PATH with it, or train the whole network.")
    out = Path(opts.out)
    last_path, best_path = out / "last.pt", out / "checkpoint.pt"
    if not opts.resume and (last_path.exists() or best_path.exists()) and not opts.force:
        raise UserError(f"{out} already holds a training run.",
                        "Pass --resume to continue it, --force to start again, or choose another --out.")
    torch.manual_seed(opts.seed)
    device = _device(opts.device)
    use_amp = opts.amp and device.type == "cuda"

    dataset = open_dataset(opts.data, opts.layout, opts.subset)
    labelled = labelled_for(dataset, opts.model_id)
    parts = split(labelled, opts.val_fraction, opts.seed)
    split_doc = parts.describe()
    if not parts.val.items or not parts.train.items:
        raise UserError(f"The split of {len(labelled.items)} images left one side empty.",
                        "Add images of more patients, or change --val-fraction.")
    say.say(f"{opts.model_id}: {len(parts.train.items)} training and {len(parts.val.items)} validation images "
            f"({parts.method} split; classes {labelled.counts()}) on {device}")

    spec = input_spec(opts.image_size)
    vertical_flip = spec_model.domain != catalogue.COLPOSCOPY
    train_loader = _loader(parts.train, train_transform(spec, vertical_flip=vertical_flip), opts, True, opts.seed)
    val_loader = _loader(parts.val, eval_transform(spec), opts, False, opts.seed)

    net = build_network(opts.arch, len(spec_model.classes), None if opts.resume else opts.weights)
    if opts.freeze_backbone:
        for name, param in net.named_parameters():
            param.requires_grad = name.startswith("fc.")
    net.to(device)
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=opts.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = nn.CrossEntropyLoss()
    state = {"epoch": 0, "best_loss": float("inf"), "best_epoch": None, "best_state": None, "history": []}

    if opts.resume:
        state = _resume(last_path, opts, split_doc, net, optimiser, scaler)
        say.say(f"resuming after epoch {state['epoch']} of {opts.epochs}")

    def forward(images):
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            return net(images.to(device, non_blocking=True))

    for epoch in range(state["epoch"] + 1, opts.epochs + 1):
        started = time.perf_counter()
        # A frozen backbone keeps its BatchNorm statistics: the whole net stays in eval mode.
        net.train(not opts.freeze_backbone)
        total, seen = 0.0, 0
        bar = say.bar(_batches(train_loader), total=len(train_loader), desc=f"epoch {epoch}/{opts.epochs}",
                      unit="batch", leave=False)
        for images, targets in bar:
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(forward(images).float(), targets.to(device))
            if not torch.isfinite(loss):
                raise UserError(f"Training diverged in epoch {epoch}: the loss became {loss.item()}.",
                                "Lower --lr" + (" or train without mixed precision (--no-amp)" if use_amp else "")
                                + "; --resume continues from the last good epoch.")
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            total += loss.item() * len(targets)
            seen += len(targets)
            bar.set_postfix(loss=f"{total / seen:.3f}")
        val_logits, val_targets = _predict(net, val_loader, forward)
        val_loss = float(loss_fn(torch.from_numpy(val_logits), torch.from_numpy(val_targets)).item())
        val_acc = float((val_logits.argmax(1) == val_targets).mean())
        improved = val_loss < state["best_loss"]
        if improved:
            state.update(best_loss=val_loss, best_epoch=epoch,
                         best_state={k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
        state["history"].append({"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val_loss,
                                 "val_accuracy": val_acc, "seconds": round(time.perf_counter() - started, 1)})
        state["epoch"] = epoch
        save_atomic({**state, "model_state": net.state_dict(), "optimiser_state": optimiser.state_dict(),
                     "scaler_state": scaler.state_dict(), "options": asdict(opts), "split": split_doc}, last_path)
        say.say(f"epoch {epoch}/{opts.epochs}: train loss {total / max(seen, 1):.4f}, val loss {val_loss:.4f}, "
                f"val accuracy {val_acc:.3f}{'  (best so far)' if improved else ''}")

    net.load_state_dict(state["best_state"])
    val_logits, val_targets = _predict(net, val_loader, forward)
    with say.step("fitting the temperature on the validation set"):
        temperature = fit_temperature(val_logits, val_targets)
    validation = classification_metrics(val_logits, val_targets, spec_model.class_ids, temperature)
    validation.update(nll_uncalibrated=classification_metrics(val_logits, val_targets, spec_model.class_ids)["nll"],
                      best_epoch=state["best_epoch"], split=parts.method,
                      patients=len(split_doc["val"]["patients"]) or None, dataset=dataset.layout)
    ckpt = {
        "format": FORMAT, "model_id": opts.model_id, "analysis": catalogue.analysis_of_model(opts.model_id).id,
        "architecture": opts.arch, "classes": list(spec_model.class_ids), "input": spec,
        "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
        "temperature": temperature, "validation": validation, "split": split_doc,
        "provenance": _provenance(opts, dataset, labelled),
        "training": {"options": asdict(opts), "best_epoch": state["best_epoch"], "history": state["history"],
                     "device": str(device), "amp": use_amp},
    }
    save_atomic(ckpt, best_path)
    (out / "split.json").write_text(json.dumps(split_doc, indent=2) + "\n")
    summary = {k: v for k, v in ckpt.items() if k not in ("state_dict", "split")}
    (out / "training.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    say.say(f"best epoch {state['best_epoch']}: validation accuracy {validation['accuracy']:.3f}, "
            f"balanced {validation['balanced_accuracy']:.3f}, temperature {temperature:.2f} → {best_path}")
    return best_path


def _predict(net, loader, forward) -> tuple[np.ndarray, np.ndarray]:
    import torch
    net.eval()
    logits, targets = [], []
    with torch.no_grad():
        for images, t in _batches(loader):
            logits.append(forward(images).float().cpu().numpy())
            targets.append(t.numpy())
    return np.concatenate(logits), np.concatenate(targets)


def _resume(last_path: Path, opts: TrainOptions, split_doc: dict, net, optimiser, scaler) -> dict[str, Any]:
    import torch
    if not last_path.is_file():
        raise UserError(f"There is no training to resume in {last_path.parent}.", "Leave out --resume to start one.")
    try:
        saved = torch.load(last_path, map_location="cpu", weights_only=True)
        before = saved["options"]
    except Exception:
        raise UserError(f"{last_path} is damaged and cannot be resumed.", "Start again with --force.") from None
    for key in ("model_id", "arch", "image_size", "freeze_backbone"):
        if before[key] != getattr(opts, key):
            raise UserError(f"The run in {last_path.parent} was started with --{key.replace('_', '-')} "
                            f"{before[key]}, not {getattr(opts, key)}.", "Resume with the same options, or use --force.")
    if saved["split"]["train"]["files"] != split_doc["train"]["files"]:
        raise UserError("The dataset or its split changed since the run started.",
                        "Resume with the same --data, --seed and --val-fraction, or start again with --force.")
    net.load_state_dict(saved["model_state"])
    optimiser.load_state_dict(saved["optimiser_state"])
    scaler.load_state_dict(saved["scaler_state"])
    return {k: saved[k] for k in ("epoch", "best_loss", "best_epoch", "best_state", "history")}


def _provenance(opts: TrainOptions, dataset, labelled: Labelled) -> dict[str, Any]:
    import torch
    import torchvision
    weights = opts.weights if opts.arch == "resnet152" else "none"   # the tiny net always starts random
    if weights not in ("imagenet", "none") and Path(weights).is_file():
        weights = {"file": weights, "sha256": file_sha256(Path(weights))}
    return {"kind": "trained", "trained": True, "data": summarise(dataset), "model_images": labelled.counts(),
            "initial_weights": weights, "recipe": "Adam, cross-entropy, lowest validation loss, temperature scaling",
            "torch": str(torch.__version__), "torchvision": str(torchvision.__version__), "python": platform.python_version(),
            "created": utc_now()}
