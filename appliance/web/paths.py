"""The shapes of the kiosk's addresses: the patterns route rules use for record ids, drafts,
tokens and names, and the families of paths the guard and the error pages tell apart."""
from __future__ import annotations

from ..fsutil import SHA256_PATTERN

UUID = r"[0-9a-fA-F-]{32,36}"          # a patient or exam record
DRAFT = r"[A-Za-z0-9_-]{16,40}"        # an exam being prepared (drafts.DraftStore ids)
SHA256 = SHA256_PATTERN                # a stored image
PHONE_TOKEN = r"[A-Za-z0-9_-]{1,200}"  # a one-time phone link (appliance.camera.phone)
USERNAME = r"[A-Za-z0-9_.@-]{1,64}"
MODEL_ID = r"[a-z_]{1,40}"

API_PREFIX = "/api/"
# What a phone opens from a QR code: it must only ever see phone pages (no kiosk chrome).
PHONE_PREFIX = "/phone/"
STATIC_PREFIX = "/static/"


def is_api(path: str) -> bool:
    return path.startswith(API_PREFIX)


def is_phone(path: str) -> bool:
    return path.startswith(PHONE_PREFIX)


def is_static(path: str) -> bool:
    return path.startswith(STATIC_PREFIX)


def matches(path: str, prefixes) -> bool:
    """``path`` is one of ``prefixes``: a prefix ending in "/" (or ".ico") covers what lies below
    it, any other is the path itself or a folder of that name."""
    for prefix in prefixes:
        if prefix.endswith("/") or prefix.endswith(".ico"):
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return True
        elif path == prefix or path.startswith(prefix + "/"):
            return True
    return False
