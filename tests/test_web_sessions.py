"""Server-side sessions: idle and absolute expiry, per-user logout (no server needed)."""
from __future__ import annotations

from appliance.web.sessions import SessionStore
from webutil import FakeClock

USER = {"username": "nurse1", "role": "nurse", "display_name": "Almaz", "language": "am"}


def test_idle_and_absolute_expiry():
    clock = FakeClock()
    store = SessionStore(idle_seconds=600, max_age_seconds=3600, clock=clock)
    session = store.create(USER)
    assert session.id != session.csrf_token and len(session.id) >= 40
    clock.advance(599)
    assert store.get(session.id) is session             # counts as activity
    clock.advance(599)
    assert store.get(session.id, touch=False) is session
    clock.advance(2)
    assert store.get(session.id) is None                 # idle too long, and gone for good
    active = store.create(USER)
    for _ in range(7):
        clock.advance(500)
        assert store.get(active.id) is active
    clock.advance(500)
    assert store.get(active.id) is None                  # busy all day still ends after max age


def test_zero_idle_minutes_means_no_idle_logout_and_users_can_be_logged_out():
    clock = FakeClock()
    store = SessionStore(idle_seconds=0, max_age_seconds=3600, clock=clock)
    first, second = store.create(USER), store.create(USER)
    clock.advance(3000)
    assert store.get(first.id) is first and store.seconds_left(first) == 600
    assert store.delete_user("nurse1") == 2
    assert store.get(second.id) is None and store.get(None) is None and store.get("forged") is None
