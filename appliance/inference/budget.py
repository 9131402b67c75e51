"""The box's memory for decoding images, shared by every request of the server process.

Decoding is where an image costs memory: a 59-megapixel PNG of 58 KB on the wire takes
hundreds of MB while its pixels are decoded, converted and reduced to what the models, the
quality gate and the screen need (a few MB kept afterwards). Eight such uploads at once would
need gigabytes on a box that has 2-8 GB. So each decode first reserves its estimated peak
(`imageio.Probe.memory_bytes`) from one `MemoryBudget`: decodes that fit run side by side,
the others wait their turn (first come, first served) for up to ``wait_seconds``, and are then
refused with a sentence the kiosk translates. One image larger than the whole budget is still
decoded, alone, once the budget is free.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import Callable, Iterator

from ..errors import BadImage
from ..i18n import N_


class Busy(BadImage):
    """Too many large images are being decoded at once: this one waited too long for memory.
    A BadImage, so every image source answers it as it answers an image it cannot take (the
    sentence, nothing changed, the phone link still valid), though the image itself is fine."""


def busy() -> Busy:
    return Busy(N_("The box is busy analysing other images; try again in a moment."),
                N_("Wait a few seconds, then send the image again."))


class MemoryBudget:
    """``total_bytes`` of decoding memory, handed out first come, first served."""

    def __init__(self, total_bytes: int, wait_seconds: float, *, clock: Callable[[], float] = time.monotonic):
        self.total_bytes = max(1, int(total_bytes))
        self.wait_seconds = wait_seconds
        self._clock = clock
        self._used = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def used_bytes(self) -> int:
        with self._changed:
            return self._used

    @contextlib.contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` (at most the whole budget) for the block; raises `Busy` when they
        were not free within ``wait_seconds``."""
        need = min(max(0, int(nbytes)), self.total_bytes)
        ticket = object()
        deadline = self._clock() + self.wait_seconds
        with self._changed:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self._used + need > self.total_bytes:
                    left = deadline - self._clock()
                    if left <= 0:
                        raise busy()
                    self._changed.wait(min(left, 1.0))
            finally:
                self._queue.remove(ticket)
                self._changed.notify_all()      # the next in the queue may fit now
            self._used += need
        try:
            yield
        finally:
            with self._changed:
                self._used -= need
                self._changed.notify_all()


__all__ = ["Busy", "MemoryBudget", "busy"]
