"""The per-address limit on wrong passwords: free tries, then a wait that doubles with each more
wrong password, capped at the window (half a minute for the kiosk's own screen), forgotten after it."""
from __future__ import annotations

from appliance.web.login_limit import FIRST_WAIT, LOCAL_MAX_WAIT, LoginLimiter

from webutil import FakeClock


def _fail(limiter, clock, address, times, *, local=False):
    for _ in range(times):
        clock.advance(limiter.wait_seconds(address, local=local))
        limiter.failed(address)


def test_the_wait_doubles_past_the_free_failures():
    clock = FakeClock()
    limiter = LoginLimiter(3, 600, clock=clock)
    _fail(limiter, clock, "10.0.0.5", 2)
    assert limiter.wait_seconds("10.0.0.5") == 0          # free tries left
    waits = []
    for _ in range(5):
        _fail(limiter, clock, "10.0.0.5", 1)
        waits.append(limiter.wait_seconds("10.0.0.5"))
    assert waits == [FIRST_WAIT * 2 ** i for i in range(5)]
    assert limiter.wait_seconds("10.0.0.6") == 0          # another address is not held up


def test_a_network_address_waits_at_most_the_window_and_the_box_at_most_half_a_minute():
    clock = FakeClock()
    limiter = LoginLimiter(3, 600, clock=clock)
    for _ in range(14):                                  # wrong passwords in quick succession
        limiter.failed("10.0.0.5")
        limiter.failed("127.0.0.1")
    assert limiter.wait_seconds("10.0.0.5") == 600
    assert limiter.wait_seconds("127.0.0.1", local=True) == LOCAL_MAX_WAIT


def test_failures_older_than_the_window_are_forgotten():
    clock = FakeClock()
    limiter = LoginLimiter(3, 60, clock=clock)
    _fail(limiter, clock, "10.0.0.5", 5)
    assert limiter.wait_seconds("10.0.0.5") > 0
    clock.advance(61)
    assert limiter.wait_seconds("10.0.0.5") == 0
