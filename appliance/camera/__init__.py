"""Image capture: one Camera interface, its backends, the per-process owner, phone links.

``CameraManager(cfg, busy=engine.busy)`` is the only thing the web part uses (contract in
docs/ARCHITECTURE.md, "Camera"). Backends (``picamera2``, ``opencv``, ``folder``) import their
camera library inside their own module, so importing this package never loads one.
"""
from __future__ import annotations

from .base import Camera, CameraUnavailable
from .manager import CameraManager
from .phone import PhoneLinkRefused, PhoneLinks

__all__ = ["Camera", "CameraManager", "CameraUnavailable", "PhoneLinkRefused", "PhoneLinks"]
