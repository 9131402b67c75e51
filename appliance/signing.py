"""Ed25519 keys and signatures, shared by model packs and USB bundles.

Keys travel as base64 text (what a technician pastes into config.toml); private keys are
kept in files readable by their owner only.
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import UserError


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
    """Write a private key readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(b64(private_bytes(key)) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        raw = unb64(path.read_text(), f"private key in {path}")
    except OSError as exc:
        raise UserError(f"The private key {path} cannot be read ({exc.strerror}).",
                        "Check that the file exists and that this user may read it.") from None
    if len(raw) != 32:
        raise UserError(f"The private key in {path} is damaged.", "Restore it from a backup.")
    return Ed25519PrivateKey.from_private_bytes(raw)


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        return read_private_key(path)
    key = new_private_key()
    write_private_key(key, path)
    return key


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
