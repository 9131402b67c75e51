"""Training checkpoints: what ``train`` leaves and ``export`` reads.

A checkpoint is a ``torch.save``d dict (loadable with ``weights_only=True``: tensors and
plain data only)::

    {"format": "bccdms-checkpoint/1", "model_id", "analysis", "architecture", "classes",
     "input": {...}, "state_dict": {...}, "temperature": float, "validation": {...},
     "split": {...}, "provenance": {...}, "training": {...}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance import catalogue
from appliance.errors import UserError

from .models import build_network
from .torchio import load_torch_file

FORMAT = "bccdms-checkpoint/1"
_REQUIRED = ("model_id", "architecture", "classes", "input", "state_dict", "temperature")


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
    net = build_network(ckpt["architecture"], len(ckpt["classes"]), weights=None)
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError:
        raise UserError(f"The weights in {ckpt.get('path', 'the checkpoint')} do not fit a "
                        f"{ckpt['architecture']} network.", "The checkpoint is damaged; retrain.") from None
    return net.eval()
