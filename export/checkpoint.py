"""Training checkpoints: what ``train`` leaves and ``export`` reads.

A checkpoint is a ``torch.save``d dict (loadable with ``weights_only=True``: tensors and
plain data only)::

    {"format": "bccdms-checkpoint/1", "model_id", "analysis", "architecture", "classes",
     "input": {...}, "state_dict": {...}, "temperature": float, "validation": {...},
     "split": {...}, "provenance": {...}, "training": {...}}
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from appliance import catalogue
from appliance.errors import UserError

FORMAT = "bccdms-checkpoint/1"
_REQUIRED = ("model_id", "architecture", "classes", "input", "state_dict", "temperature")


def save_atomic(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename: an interrupted save never
    leaves a truncated checkpoint behind."""
    import torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_torch_file(path: Path, what: str, hint: str) -> Any:
    """``torch.load`` restricted to tensors and plain data (no code runs from the file)."""
    import torch
    if not path.is_file():
        raise UserError(f"The {what} {path} does not exist.", hint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and torch errors all mean "not a file we can read"
        raise UserError(f"{path} is not a readable {what} ({type(exc).__name__}).", hint) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint written by ``bccdms-export train``."""
    path = Path(path)
    ckpt = load_torch_file(path, "checkpoint", "Pass the checkpoint.pt written by 'bccdms-export train'.")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or any(k not in ckpt for k in _REQUIRED):
        raise UserError(f"{path} is not a bccdms-export checkpoint.",
                        "Pass the checkpoint.pt written by 'bccdms-export train'.")
    spec = catalogue.MODELS.get(ckpt["model_id"])
    if spec is None or tuple(ckpt["classes"]) != spec.class_ids:
        raise UserError(f"The checkpoint {path} is for model {ckpt['model_id']!r} with classes {ckpt['classes']}, "
                        "which this software's catalogue does not have.", "Retrain it with this version.")
    ckpt["path"] = str(path)
    return ckpt


def network_from_checkpoint(ckpt: dict[str, Any]):
    """The trained network, in eval mode."""
    from .models import build_network
    net = build_network(ckpt["architecture"], len(ckpt["classes"]), weights=None)
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError:
        raise UserError(f"The weights in {ckpt.get('path', 'the checkpoint')} do not fit a "
                        f"{ckpt['architecture']} network.", "The checkpoint is damaged; retrain.") from None
    return net.eval()
