"""The keys of USB exchange.

- The post's Ed25519 signing key (``<data>/keys/post_signing.key``): signs every bundle the
  post writes, so a supervisor knows which post made it and that nothing was altered.
- The post's pseudonym secret (``<data>/keys/post_pseudonym.key``): the HMAC key that turns
  patient and exam ids into pseudonyms in de-identified exports. It never leaves the box, so
  nobody else can link a pseudonym back to a patient, and pseudonyms stay stable per post.
- The supervisor's X25519 key pair: bundles are encrypted to the public key (pasted into each
  post's ``[exchange] supervisor_public_key``); the private key stays with the supervisor, in
  the file named by ``[exchange] supervisor_private_key`` (default
  ``<data>/keys/supervisor_exchange.key``).

Private keys are base64 text in files readable by their owner only (``fsutil.write_secret``: written
atomically, never overwriting a key another process created at the same moment).
"""
from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .. import signing
from ..errors import UserError
from ..fsutil import write_secret

POST_SIGNING_KEY = "post_signing.key"
PSEUDONYM_SECRET = "post_pseudonym.key"
SUPERVISOR_KEY = "supervisor_exchange.key"


def keys_dir(cfg) -> Path:
    return Path(cfg.data_dir) / "keys"


def post_signing_key(cfg) -> Ed25519PrivateKey:
    """The post's signing key; created on first use (the first start of the box)."""
    return signing.load_or_create_private_key(keys_dir(cfg) / POST_SIGNING_KEY)


def pseudonym_secret(cfg) -> bytes:
    """The post's secret for stable pseudonyms; created on first use, never exported."""
    path = keys_dir(cfg) / PSEUDONYM_SECRET
    if path.exists():
        text = _read_text(path)
    else:      # first use; another process creating it at the same moment wins and both use its secret
        text = write_secret(path, _secret_text(secrets.token_bytes(32))).decode("ascii", "replace")
    raw = signing.unb64(text, f"pseudonym secret in {path}")
    if len(raw) != 32:
        raise UserError(f"The pseudonym secret in {path} is damaged.", "Restore it from a backup.")
    return raw


def fingerprint(public_raw: bytes) -> str:
    """A short, readable id of a public key (what people compare by eye)."""
    digest = hashlib.sha256(public_raw).hexdigest()[:20]
    return "-".join(digest[i:i + 4] for i in range(0, 20, 4))


# -- the supervisor's key pair ------------------------------------------------------------

def x25519_public_raw(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def supervisor_key_path(cfg) -> Path:
    configured = getattr(cfg.exchange, "supervisor_private_key", "")
    return Path(configured) if configured else keys_dir(cfg) / SUPERVISOR_KEY


def create_supervisor_key(path: Path, *, overwrite: bool = False) -> X25519PrivateKey:
    """Write a new supervisor key pair's private key to ``path`` and return it."""
    if path.exists() and not overwrite:
        raise UserError(f"A supervisor key already exists at {path}.",
                        "Keep using it: bundles made for it can only be opened with it. "
                        "To replace it anyway, give --force (old bundles then cannot be opened).")
    key = X25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    if write_secret(path, _secret_text(raw), replace=overwrite) != _secret_text(raw):
        raise UserError(f"A supervisor key was created at {path} at the same moment by another command.",
                        "Keep using that one: run 'appliance keys show' to see it.")
    return key


def load_supervisor_key(cfg) -> X25519PrivateKey:
    path = supervisor_key_path(cfg)
    if not path.exists():
        raise UserError(f"This box has no supervisor key (looked for {path}).",
                        "On the supervisor's box run 'appliance keys supervisor-init', or set "
                        "[exchange] supervisor_private_key to the key file you keep.")
    raw = signing.unb64(_read_text(path), f"supervisor key in {path}")
    if len(raw) != 32:
        raise UserError(f"The supervisor key in {path} is damaged.", "Restore it from your backup copy.")
    return X25519PrivateKey.from_private_bytes(raw)


def supervisor_public_key(cfg) -> X25519PublicKey:
    """The supervisor's public key configured on a post (bundles are encrypted to it)."""
    text = cfg.exchange.supervisor_public_key
    if not text:
        raise UserError("No supervisor key is set on this box, so an export cannot be encrypted.",
                        "Ask the supervisor for the public key printed by 'appliance keys supervisor-init' "
                        "and set it as [exchange] supervisor_public_key in the configuration file.")
    raw = signing.unb64(text, "supervisor public key ([exchange] supervisor_public_key)")
    if len(raw) != 32:
        raise UserError(f"The supervisor public key has {len(raw)} bytes instead of 32.",
                        "Copy the key printed by 'appliance keys supervisor-init' again, whole.")
    key = X25519PublicKey.from_public_bytes(raw)
    try:
        X25519PrivateKey.generate().exchange(key)     # a degenerate key agrees on nothing secret
    except ValueError:
        raise UserError("The supervisor public key is not a usable key.",
                        "Copy the key printed by 'appliance keys supervisor-init' again.") from None
    return key


# -- files --------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise UserError(f"The key file {path} cannot be read ({exc.strerror}).",
                        "Check that it exists and that this user may read it.") from None


def _secret_text(raw: bytes) -> bytes:
    return (signing.b64(raw) + "\n").encode("ascii")
