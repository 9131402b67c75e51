"""Wrong passwords per client address: past a few, each one more makes the next try wait longer.

The first ``free_failures`` wrong passwords in ``window_seconds`` cost nothing; each one after
that doubles the wait before the next attempt from that address (2 s, 4 s, 8 s ...), up to the
window itself. The kiosk's own screen (the box's browser is 127.0.0.1, where every nurse logs
in) is slowed the same way but never waits more than ``LOCAL_MAX_WAIT``: a guessing game on
the touchscreen must not keep the whole health post out for ten minutes.

Independent of the per-account lockout (``[server] lockout_failures``): an address that keeps
guessing is slowed whatever usernames it tries, and the attempts it makes while it waits are
refused before any password is checked, so they neither lock the accounts it names nor make
its own wait longer.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from typing import Callable

MAX_ADDRESSES = 4096        # memory stays bounded whatever addresses a network sends
FIRST_WAIT = 2.0            # seconds after the first failure beyond the free ones
LOCAL_MAX_WAIT = 30.0       # the box's own screen never waits longer than this


class LoginLimiter:
    def __init__(self, free_failures: int, window_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.free_failures = free_failures
        self.window_seconds = window_seconds
        self._clock = clock
        self._failures: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()

    def wait_seconds(self, address: str, *, local: bool = False) -> float:
        """0 when ``address`` may try a password now, else how long it must wait first.
        ``local``: the request comes from the box's own screen."""
        now = self._clock()
        with self._lock:
            times = self._recent(address, now)
            beyond = len(times) - self.free_failures + 1
            if beyond <= 0:
                return 0.0
            longest = min(self.window_seconds, LOCAL_MAX_WAIT) if local else self.window_seconds
            delay = min(longest, FIRST_WAIT * 2 ** min(beyond - 1, 30))
            return max(0.0, times[-1] + delay - now)

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
