"""The one training loop, for ``bccdms-export train`` (``train.py``) and the GPU recipe
(``recipes/device_train.py``).

Each epoch draws an order of the training images (shuffled, or class-balanced: every class as
likely as every other, drawn with replacement), hands batches of *stored squares* (``augment.py``)
to the one augmentation, steps the optimiser under the learning-rate schedule, then validates and
keeps the state of the epoch with the lowest validation loss. It stops after ``epochs`` epochs, or
when the time budget is spent (the GPU recipe), whichever comes first.

What differs between the callers is passed in: where a batch of squares comes from (files decoded
by a DataLoader, or rows of images already on the GPU), how validation logits are made, the
optimiser, the schedule, and what to do after each epoch (write ``last.pt``, log a line).

Only torch and NumPy are imported (the GPU machine has nothing else).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.errors import UserError

from .augment import augment

SAMPLING = ("balanced", "shuffle")


@dataclass
class LoopOptions:
    spec: dict                            # the input spec (``transforms.input_spec``) crops are made to
    epochs: int                           # at most this many epochs
    batch_size: int
    lr: float                             # the peak (or constant) learning rate
    seed: int = 0
    sampling: str = "shuffle"             # shuffle | balanced
    schedule: str = "constant"            # constant | cosine (5 % warm-up, then cosine to zero)
    budget_s: float | None = None         # stop after the epoch that spends it (and schedule over it)
    microscopy: bool = True               # free rotation and vertical flips (not for colposcopy)
    train_mode: bool = True               # False: BatchNorm keeps its statistics (frozen backbone)
    amp: bool = True                      # mixed precision on CUDA (bf16 where the GPU has it)
    channels_last: bool = False
    diverge_hint: str = "Lower --lr; --resume continues from the last good epoch."


@dataclass
class LoopState:
    """What survives between epochs (and an interruption: ``train.py`` saves it in ``last.pt``)."""
    epoch: int = 0
    best_loss: float = float("inf")
    best_epoch: int | None = None
    best_state: dict | None = None
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    scaler_state: dict | None = None      # the mixed-precision gradient scaler's (fp16 on CUDA)

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "best_loss": self.best_loss, "best_epoch": self.best_epoch,
                "best_state": self.best_state, "history": self.history, "scaler_state": self.scaler_state}


def epoch_order(targets: np.ndarray, sampling: str, generator) -> "Any":
    """The indices of one epoch (a CPU tensor): a permutation, or as many class-balanced draws.

    Balanced: each draw picks a class uniformly, then one of its images, so a class with a tenth
    of the images is seen as often as the others (rare classes are repeated, common ones sampled).
    """
    import torch
    if sampling not in SAMPLING:
        raise ValueError(f"unknown sampling {sampling!r}")
    n = len(targets)
    if sampling == "shuffle":
        return torch.randperm(n, generator=generator)
    targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    counts = torch.bincount(targets).double()
    weights = 1.0 / counts[targets]
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def _lr_at(opts: LoopOptions, fraction: float) -> float:
    if opts.schedule == "constant":
        return opts.lr
    fraction = min(max(fraction, 0.0), 1.0)
    lr = opts.lr * (fraction / 0.05 if fraction < 0.05 else 0.5 * (1 + math.cos(math.pi * fraction)))
    return max(lr, opts.lr * 1e-3)


def _precision(device, wanted: bool):
    """(autocast dtype or None, whether a gradient scaler is needed)."""
    import torch
    if not wanted or device.type != "cuda":
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def fit(net, optimiser, opts: LoopOptions, *, targets: np.ndarray,
        batches: Callable[[Any], Iterable[tuple[Any, Any]]],
        validate: Callable[[Callable], tuple[np.ndarray, np.ndarray]],
        device, state: LoopState | None = None, on_epoch: Callable[[LoopState, dict], None] | None = None,
        bar: Callable[..., Iterable] | None = None) -> LoopState:
    """Train ``net`` in place (ending with the best epoch's weights); returns the final state.

    ``batches(order)`` yields ``(squares uint8 N×3×S×S, targets N)`` for an epoch's index order,
    full batches only; ``validate(forward)`` returns validation logits and targets, computing
    logits with ``forward(x)`` (the network under this loop's autocast). ``on_epoch(state,
    record)`` runs after every epoch; ``bar(iterable, total=, desc=)`` wraps the batches.
    """
    import torch
    from torch import nn

    dtype, needs_scaler = _precision(device, opts.amp)
    state = state or LoopState()
    scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler)
    if state.scaler_state:
        scaler.load_state_dict(state.scaler_state)
    loss_fn = nn.CrossEntropyLoss()
    order_generator = torch.Generator().manual_seed(opts.seed + state.epoch)
    augment_generator = torch.Generator(device=device).manual_seed(opts.seed + state.epoch)
    memory = torch.channels_last if opts.channels_last else torch.contiguous_format
    per_epoch = max(1, len(targets) // opts.batch_size)
    started = time.monotonic() - state.seconds

    def forward(x):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return net(x.to(device, non_blocking=True).contiguous(memory_format=memory)).float()

    def fraction(epoch: int, step: int) -> float:
        if opts.budget_s:
            return (time.monotonic() - started) / opts.budget_s
        return (epoch - 1 + step / per_epoch) / opts.epochs

    while state.epoch < opts.epochs:
        if opts.budget_s and state.epoch > 0 and time.monotonic() - started >= opts.budget_s:
            break
        epoch = state.epoch + 1
        epoch_started = time.monotonic()
        net.train(opts.train_mode)
        order = epoch_order(targets, opts.sampling, order_generator)
        total = torch.zeros((), device=device)      # summed on the device: no sync per step
        seen = 0
        iterator: Iterable = batches(order)
        if bar is not None:
            iterator = bar(iterator, total=per_epoch, desc=f"epoch {epoch}/{opts.epochs}")
        for step, (squares, y) in enumerate(iterator):
            for group in optimiser.param_groups:
                group["lr"] = _lr_at(opts, fraction(epoch, step))
            x = augment(squares.to(device, non_blocking=True), opts.spec, opts.microscopy, augment_generator)
            y = y.to(device, non_blocking=True)
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(forward(x), y)
            if step == 0 and not torch.isfinite(loss):
                raise UserError(f"Training diverged in epoch {epoch}: the loss became {loss.item()}.", opts.diverge_hint)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            total += loss.detach() * len(y)
            seen += len(y)
            state.steps += 1
        train_loss = float(total) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise UserError(f"Training diverged in epoch {epoch}: the loss became {train_loss}.", opts.diverge_hint)
        net.eval()
        with torch.no_grad():
            val_logits, val_targets = validate(forward)
        val_loss = float(loss_fn(torch.from_numpy(val_logits).float(), torch.from_numpy(val_targets).long()))
        val_acc = float((val_logits.argmax(1) == val_targets).mean())
        improved = val_loss < state.best_loss
        if improved:
            state.best_loss, state.best_epoch = val_loss, epoch
            state.best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_acc,
                  "seconds": round(time.monotonic() - epoch_started, 1), "improved": improved}
        state.history.append({k: v for k, v in record.items() if k != "improved"})
        state.epoch = epoch
        state.seconds = time.monotonic() - started
        state.scaler_state = scaler.state_dict()
        if on_epoch is not None:
            on_epoch(state, record)
    if state.best_state is not None:
        net.load_state_dict(state.best_state)
    return state


def full_batches(order, batch_size: int) -> Iterator[Any]:
    """An epoch's order cut into full batches (BatchNorm needs more than one image; a tiny last
    batch is noise)."""
    usable = len(order) - len(order) % batch_size
    for start in range(0, usable, batch_size):
        yield order[start:start + batch_size]
