"""Wrong passwords per client address: after too many in a while, logins from that address wait.

Independent of the per-account lockout (``[server] lockout_failures``): an address that keeps
guessing is stopped whatever usernames it tries, and the attempts it makes while it waits are
refused before any password is checked, so they do not lock the accounts it names either.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Callable

MAX_ADDRESSES = 4096        # memory stays bounded whatever addresses a network sends


class LoginLimiter:
    def __init__(self, max_failures: int, window_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()

    def wait_seconds(self, address: str) -> float:
        """0 when ``address`` may try a password now, else how long it must wait."""
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            if len(times) < self.max_failures:
                return 0.0
            return max(1.0, times[0] + self.window_seconds - now)

    def failed(self, address: str) -> None:
        """One more wrong password (or a locked or disabled account) from ``address``."""
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            times.append(now)
            self._failures[address] = times
            self._failures.move_to_end(address)
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)

    def _recent(self, address: str, now: float) -> deque:
        times = self._failures.get(address, deque())
        while times and now - times[0] > self.window_seconds:
            times.popleft()
        return times
