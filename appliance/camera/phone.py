"""One-time links that let a phone on a colposcope send one photo into one open exam.

The kiosk shows a QR code of ``http://<lan address>:<port>/phone/<token>``. The token is
the phone's only credential, so it is random (192 bits), bound to one exam being prepared
(a kiosk "draft") and to the clinician who asked for it, good for ``[camera]
phone_link_minutes``, and spent by the first photo that is accepted. A refused upload (not
an image, too large) leaves the link usable, so the nurse can simply take the photo again.
A new QR code for the same exam replaces the previous one.

Links live in memory: a restart ends them, which is what a one-time link wants anyway.
"""
from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from ..errors import UserError

T = TypeVar("T")
MAX_LINKS = 64          # a kiosk or two; bounds memory against a flood of link requests


class PhoneLinkRefused(UserError):
    """The link is unknown, used, expired, replaced, or its exam is closed."""


def _refused(message: str) -> PhoneLinkRefused:
    return PhoneLinkRefused(message, "Ask for a new QR code on the kiosk screen and scan it again.")


@dataclass
class PhoneLink:
    token: str
    draft_id: str
    owner: str
    created: float
    expires: float
    used: bool = False
    uploading: bool = False

    def seconds_left(self, now: float) -> float:
        return max(0.0, self.expires - now)


class PhoneLinks:
    """Thread-safe registry of phone links (one per server process)."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic):
        self.lifetime = float(minutes) * 60
        self._clock = clock
        self._lock = threading.Lock()
        self._links: dict[str, PhoneLink] = {}     # by sha256 of the token

    @staticmethod
    def _key(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()

    def create(self, draft_id: str, owner: str) -> PhoneLink:
        now = self._clock()
        link = PhoneLink(token=secrets.token_urlsafe(24), draft_id=draft_id, owner=owner,
                         created=now, expires=now + self.lifetime)
        with self._lock:
            self._forget_old(now)
            for key in [k for k, old in self._links.items() if old.draft_id == draft_id]:
                del self._links[key]                  # only the newest QR code of an exam works
            while len(self._links) >= MAX_LINKS:
                del self._links[min(self._links, key=lambda k: self._links[k].created)]
            self._links[self._key(link.token)] = link
        return link

    def check(self, token: str) -> PhoneLink:
        """The live link for ``token``; PhoneLinkRefused when it cannot be used (any more)."""
        with self._lock:
            return self._usable(token, self._clock())

    def redeem(self, token: str, attach: Callable[[PhoneLink], T]) -> T:
        """Run ``attach(link)`` (which validates and stores the photo) and spend the link when it
        succeeds. Two uploads at once cannot both pass; a failed ``attach`` leaves the link as
        it was."""
        with self._lock:
            link = self._usable(token, self._clock())
            if link.uploading:
                raise _refused("A photo is being sent with this link right now.")
            link.uploading = True
        try:
            result = attach(link)
        except BaseException:
            with self._lock:
                link.uploading = False
            raise
        with self._lock:
            link.uploading, link.used = False, True
        return result

    def seconds_left(self, link: PhoneLink) -> float:
        return link.seconds_left(self._clock())

    def revoke_draft(self, draft_id: str) -> None:
        with self._lock:
            for key in [k for k, link in self._links.items() if link.draft_id == draft_id]:
                del self._links[key]

    def _usable(self, token: str, now: float) -> PhoneLink:
        link = self._links.get(self._key(token)) if token else None
        if link is None:
            raise _refused("This link is not valid (it was replaced by a newer QR code, or the kiosk restarted).")
        if link.used:
            raise _refused("This link was already used to send a photo.")
        if now >= link.expires:
            raise _refused("This link has expired.")
        return link

    def _forget_old(self, now: float) -> None:
        # Used and expired links are kept a while so the phone still gets the right message.
        for key in [k for k, link in self._links.items() if now - link.expires > self.lifetime + 600]:
            del self._links[key]


# --- the address a phone can reach -------------------------------------------------------------
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "")
ANY_HOSTS = ("0.0.0.0", "::")


def phone_host(server) -> str | None:
    """The host name or address to put in a phone link, or None when phones cannot reach the box.

    ``[server] lan_host`` wins (``auto``: the box's private IPv4 address): the server listens
    there for phones only, the kiosk itself stays on ``host``. Without it phones work only when
    the whole kiosk listens on the network (``host = 0.0.0.0``, discouraged): its LAN address.
    """
    if server.lan_host == "auto":
        return lan_address()
    if server.lan_host:
        return server.lan_host          # the phones' own listener (appliance/web/phone_listener.py)
    if server.host in LOOPBACK_HOSTS:
        return None
    # No lan_host, and the whole kiosk listens on the network (discouraged, docs/camera.md).
    if server.host not in ANY_HOSTS:
        return server.host
    return lan_address()


def lan_address() -> str | None:
    """This box's address on the local network (private IPv4), or None when it has none."""
    try:
        import psutil
        interfaces = psutil.net_if_addrs()
    except Exception:
        interfaces = {}
    candidates = []
    for name, addrs in interfaces.items():
        for addr in addrs:
            if addr.family != socket.AF_INET:
                continue
            ip = ipaddress.ip_address(addr.address)
            if ip.is_private and not ip.is_loopback and not ip.is_link_local:
                # Wired and Wi-Fi first; container bridges (docker0, br-...) last.
                rank = 1 if name.startswith(("docker", "br-", "veth", "virbr")) else 0
                candidates.append((rank, name, addr.address))
    return min(candidates)[2] if candidates else None


def phone_url(host: str, port: int, token: str) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"                     # a bare IPv6 address
    return f"http://{host}:{port}/phone/{token}"
