"""Progress for long steps, on stderr so that stdout stays clean for reports and JSON.

``Progress(enabled)`` is handed down to every long-running function; ``enabled=False``
silences it (tests, library use).
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def say(self, message: str) -> None:
        if self.enabled:
            print(f"==> {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def step(self, message: str) -> Iterator[None]:
        """Announce a long step and say how long it took."""
        self.say(f"{message} ...")
        start = time.perf_counter()
        yield
        if self.enabled:
            print(f"    done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

    def bar(self, iterable: Iterable[T] | None = None, *, total: int | None = None,
            desc: str = "", unit: str = "it", leave: bool = True):
        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave,
                    disable=not self.enabled, file=sys.stderr, dynamic_ncols=True)


@contextlib.contextmanager
def quiet_libraries(enabled_progress: bool) -> Iterator[None]:
    """Keep the exporter's and NNCF's chatter down to warnings (and their bars off when silent)."""
    import warnings
    names = ("nncf", "torch.onnx", "torch.export", "onnxscript", "torch.utils.cpp_extension")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING if enabled_progress else logging.ERROR)
    # Importing NNCF makes torch look for a CUDA toolkit and warn when there is none.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # torch.onnx and torch.export warn about internals we cannot act on.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            yield
        finally:
            for n, level in saved.items():
                logging.getLogger(n).setLevel(level)
