"""The box's keys sealed with a passphrase, for backups (``appliance backup --with-keys``).

The keys folder holds the post's signing key (whoever has it can forge the post's bundles),
the pseudonym secret (it links research exports back to patients) and, on a supervisor's box,
the private key that opens every bundle. A backup stick gets lost, so the keys never go on it
in plain text: they are sealed into one file, ``keys.sealed``, with AES-256-GCM under a key
derived from the passphrase by scrypt (memory-hard, so guessing passphrases on a GPU is slow).
The header (format, KDF parameters, salt, nonce) is authenticated with the ciphertext, so a
changed parameter fails like a wrong passphrase.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import unicodedata

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import UserError

FORMAT = "bccdms-sealed-keys/1"
FILE_NAME = "keys.sealed"
MIN_PASSPHRASE = 12
# scrypt N=2^17, r=8 (128 MiB, about half a second on a Raspberry Pi 5): the current OWASP advice.
SCRYPT = {"n": 1 << 17, "r": 8, "p": 1}
_MAX_N = 1 << 20           # refuse a sealed file that asks for more than 1 GiB of memory


def check_passphrase(passphrase: str) -> str:
    if not isinstance(passphrase, str) or len(passphrase.strip()) < MIN_PASSPHRASE:
        raise UserError(f"The passphrase for the keys must have at least {MIN_PASSPHRASE} characters.",
                        "Choose a longer one (several words are easy to remember), and write it down in a safe "
                        "place apart from the stick: without it the keys cannot be restored.")
    return passphrase


def _key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # NFC: the same passphrase typed on another keyboard (Ethiopic input methods) gives the same bytes.
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret)


def _aad(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def seal(files: dict[str, bytes], passphrase: str) -> bytes:
    """The files (name -> bytes) encrypted under the passphrase, as one JSON document."""
    check_passphrase(passphrase)
    header = {"format": FORMAT, "kdf": {"name": "scrypt", **SCRYPT, "salt": _b64(os.urandom(16))},
              "cipher": "AES-256-GCM", "nonce": _b64(os.urandom(12))}
    plain = json.dumps({name: _b64(data) for name, data in sorted(files.items())}).encode("utf-8")
    key = _key(passphrase, _unb64(header["kdf"]["salt"]), SCRYPT["n"], SCRYPT["r"], SCRYPT["p"])
    ciphertext = AESGCM(key).encrypt(_unb64(header["nonce"]), plain, _aad(header))
    return json.dumps({**header, "ciphertext": _b64(ciphertext)}, indent=1).encode("utf-8") + b"\n"


def unseal(blob: bytes, passphrase: str) -> dict[str, bytes]:
    """The files sealed in ``blob``; a ``UserError`` for a wrong passphrase or a damaged file."""
    try:
        doc = json.loads(blob)
        header = {k: doc[k] for k in ("format", "kdf", "cipher", "nonce")}
        kdf = header["kdf"]
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        if header["format"] != FORMAT or kdf["name"] != "scrypt" or header["cipher"] != "AES-256-GCM" \
                or not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError("unknown format or parameters")
        salt, nonce, ciphertext = _unb64(kdf["salt"]), _unb64(header["nonce"]), _unb64(doc["ciphertext"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise UserError(f"The sealed keys ({FILE_NAME}) in this backup are damaged or of an unknown format.",
                        "Use another backup, or restore without the keys (--without-keys).") from None
    try:
        plain = AESGCM(_key(passphrase, salt, n, r, p)).decrypt(nonce, ciphertext, _aad(header))
    except InvalidTag:
        raise UserError("The passphrase does not open the keys in this backup.",
                        "Type the passphrase given when the backup was made; nothing was changed.") from None
    files = json.loads(plain)
    return {name: _unb64(data) for name, data in files.items()}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
