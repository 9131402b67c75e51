"""Torch files on disk: an atomic ``torch.save`` and a ``torch.load`` that runs no code.

Checkpoints (``checkpoint.py``), state dicts of backbones (``models.py``) and resumable training
states (``train.py``) all go through here, so no module needs another just to read or write a file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from appliance.errors import UserError


def save_atomic(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename: an interrupted save never
    leaves a truncated file behind."""
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
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The {what} {path} does not exist.", hint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and torch errors all mean "not a file we can read"
        raise UserError(f"{path} is not a readable {what} ({type(exc).__name__}).", hint) from None
