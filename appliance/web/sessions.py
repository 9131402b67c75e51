"""Server-side login sessions for the kiosk.

The browser only holds a random session id in an HttpOnly, SameSite=Strict cookie; who is
logged in, the CSRF token and the page state (filters, flash messages) stay on the box.
A session ends after ``idle_seconds`` without user activity (a shared touchscreen must not
stay logged in) and after ``max_age_seconds`` in any case. Sessions live in memory: a
restart or power cut logs everyone out, which is what a shared kiosk wants anyway.
"""
from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

# Ids of sessions ended because their account changed, remembered so the login page can say so.
ENDED_MEMORY = 1024


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Session:
    id: str
    username: str
    role: str
    display_name: str
    language: str
    csrf_token: str
    created: float
    last_active: float
    calendar: str = "gregorian"      # how dates are shown and typed for this user
    # The account's password stamp at login (store.users.access): a new password ends the session.
    password_stamp: str = ""
    # Messages to show once on the next page ("Patient registered.").
    flashes: list[tuple[str, str]] = field(default_factory=list)
    # Page state that must not travel in URLs (search text, record filters).
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> dict:
        return {"username": self.username, "role": self.role,
                "display_name": self.display_name or self.username, "language": self.language,
                "calendar": self.calendar}

    def flash(self, message: str, kind: str = "info") -> None:
        self.flashes.append((kind, message))

    def pop_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out


class SessionStore:
    """Thread-safe in-memory sessions with idle and absolute expiry."""

    def __init__(self, idle_seconds: float, max_age_seconds: float = 12 * 3600,
                 clock: Callable[[], float] = time.monotonic):
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._changed: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, user: dict) -> Session:
        now = self._clock()
        session = Session(id=new_token(), username=user["username"], role=user["role"],
                          display_name=user.get("display_name") or "",
                          language=user.get("language") or "en",
                          calendar=user.get("calendar") or "gregorian",
                          csrf_token=new_token(), created=now, last_active=now)
        with self._lock:
            self._drop_expired(now)
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None, *, touch: bool = True) -> Session | None:
        """The live session for ``session_id``; ``touch`` counts this request as user activity."""
        if not session_id:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if self._expired(session, now):
                del self._sessions[session_id]
                return None
            if touch:
                session.last_active = now
            return session

    def seconds_left(self, session: Session) -> float:
        now = self._clock()
        end = session.created + self.max_age_seconds
        if self.idle_seconds > 0:
            end = min(end, session.last_active + self.idle_seconds)
        return max(0.0, end - now)

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def delete_user(self, username: str) -> int:
        """End every session of ``username`` because the account changed (disabled, new
        password, new role): ``account_changed`` says so for those ids afterwards."""
        with self._lock:
            gone = [sid for sid, s in self._sessions.items() if s.username == username]
            for sid in gone:
                del self._sessions[sid]
                self._remember_changed(sid)
        return len(gone)

    def end_changed(self, session_id: str) -> None:
        """End one session because its account changed (found by the guard)."""
        with self._lock:
            self._sessions.pop(session_id, None)
            self._remember_changed(session_id)

    def account_changed(self, session_id: str | None) -> bool:
        """The session ``session_id`` was ended because its account changed."""
        with self._lock:
            return bool(session_id) and session_id in self._changed

    def _remember_changed(self, session_id: str) -> None:
        self._changed[session_id] = None
        while len(self._changed) > ENDED_MEMORY:
            self._changed.popitem(last=False)

    def _expired(self, session: Session, now: float) -> bool:
        # idle_seconds <= 0 ([server] idle_logout_minutes = 0): no idle logout, only the maximum age.
        idle = self.idle_seconds > 0 and now - session.last_active > self.idle_seconds
        return idle or now - session.created > self.max_age_seconds

    def _drop_expired(self, now: float) -> None:
        for sid in [sid for sid, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[sid]
