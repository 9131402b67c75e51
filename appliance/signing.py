"""Ed25519 keys and signatures, shared by model packs and USB bundles.

Keys travel as base64 text (what a technician pastes into config.toml); private keys are
kept in files readable by their owner only (written by ``fsutil.write_secret``).
"""
from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import UserError
from .fsutil import write_secret


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"The {what} is not valid base64 text.", "Copy the key again, whole.") from None


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def public_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return b64(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def public_key_from_b64(text: str, what: str = "public key") -> Ed25519PublicKey:
    raw = unb64(text, what)
    if len(raw) != 32:
        raise UserError(f"The {what} has {len(raw)} bytes instead of 32.", "Copy the key again, whole.")
    return Ed25519PublicKey.from_public_bytes(raw)


def write_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write (or replace) a private key readable by its owner only, atomically."""
    write_secret(path, _key_text(key), replace=True)


def _key_text(key: Ed25519PrivateKey) -> bytes:
    return (b64(private_bytes(key)) + "\n").encode("ascii")


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"The private key {path} cannot be read ({getattr(exc, 'strerror', None) or exc}).",
                        "Check that the file exists and that this user may read it.") from None
    return _parse_private_key(text, path)


def _parse_private_key(text: str, path: Path) -> Ed25519PrivateKey:
    raw = unb64(text, f"private key in {path}")
    if len(raw) != 32:
        raise UserError(f"The private key in {path} is damaged.", "Restore it from a backup.")
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """The key in ``path``, created on first use. Two processes starting at once end up with the
    same key: the file is never overwritten, and the one that lost the race reads the winner's."""
    if path.exists():
        return read_private_key(path)
    stored = write_secret(path, _key_text(new_private_key()))
    return _parse_private_key(stored.decode("ascii", "replace"), path)


def sign(key: Ed25519PrivateKey, data: bytes) -> str:
    return b64(key.sign(data))


def verify(public_key_b64: str, data: bytes, signature_b64: str) -> bool:
    """True when ``signature_b64`` is a valid signature of ``data`` by that key."""
    try:
        key = public_key_from_b64(public_key_b64)
        key.verify(unb64(signature_b64, "signature"), data)
        return True
    except (InvalidSignature, UserError):
        return False
