"""The bundle file: a signed envelope around an encrypted stream (format ``bccdms-bundle/1``).

Layout (all integers big-endian)::

    "BCCDMSB1"                  8 bytes magic
    header length               u32
    header                      JSON, UTF-8 (cleartext; no patient data)
    ciphertext                  the payload in chunks of CHUNK bytes, each sealed with
                                AES-256-GCM (+16 bytes tag); the last chunk may be shorter
    "BCCDMSS1"                  8 bytes trailer magic
    ciphertext length           u64
    sha256(ciphertext)          32 bytes
    Ed25519 signature           64 bytes, over SIGNATURE_CONTEXT || sha256(magic..header)
                                || ciphertext length || sha256(ciphertext)

Encryption: an ephemeral X25519 key agrees a secret with the supervisor's public key; HKDF-SHA256
(random 32-byte salt from the header, info = context || sha256(header)) gives a fresh 256-bit
key for this bundle only. Chunk ``i`` is sealed with the nonce ``i`` (11 bytes) || ``last``
(1 byte, 1 for the final chunk only): the STREAM construction (as in age and Tink's streaming
AEAD), so a reordered, dropped, appended or cut chunk fails to open. Because the key is
derived from the whole header, a header changed in any way (another post id, another
signing key, another recipient) yields a key that opens nothing.

Signing (encrypt-then-sign): the post signs the header and the hash of the ciphertext. The
supervisor checks "which post, and unaltered" with the post's public key alone, in one
hashing pass and before decrypting anything; a truncated file has no valid trailer and is
refused at once. See docs/exchange.md for why this order was chosen.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .. import signing
from ..errors import UserError
from ..fsutil import fsync_dir
from . import keys as exchange_keys

FORMAT = "bccdms-bundle/1"
MAGIC = b"BCCDMSB1"
TRAILER_MAGIC = b"BCCDMSS1"
CHUNK = 1 << 20
TAG = 16
SEALED_CHUNK = CHUNK + TAG
MAX_HEADER = 64 * 1024
TRAILER = struct.Struct(">8sQ32s64s")
SIGNATURE_CONTEXT = b"bccdms-bundle/1 signature\x00"
KEY_CONTEXT = b"bccdms-bundle/1 payload key\x00"
SUFFIX = ".bccdms"
PARTIAL_SUFFIX = ".partial"
_HASH_BLOCK = 4 << 20
_WRITE_BACK = 8 << 20         # bytes written between two nudges to the disk to start writing


class BundleRefused(UserError):
    """A bundle that is not imported: damaged, altered, foreign, replayed or hostile."""


def _refuse(path, what: str, hint: str) -> BundleRefused:
    return BundleRefused(f"The bundle {Path(path).name} was refused: {what}.", hint)


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _derive_key(shared: bytes, salt: bytes, header_bytes: bytes) -> bytes:
    info = KEY_CONTEXT + hashlib.sha256(header_bytes).digest()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(shared)


def _signed_message(prefix_digest: bytes, ct_len: int, ct_digest: bytes) -> bytes:
    return SIGNATURE_CONTEXT + prefix_digest + struct.pack(">Q", ct_len) + ct_digest


def _prefix(header_bytes: bytes) -> bytes:
    return MAGIC + struct.pack(">I", len(header_bytes)) + header_bytes


# -- writing ------------------------------------------------------------------------------

class BundleWriter(io.RawIOBase):
    """Write a bundle to ``<directory>/<name>`` through a temporary name.

    Everything goes to ``.<name>.partial`` first; ``commit()`` seals the last chunk, writes the
    signed trailer, fsyncs the file, renames it to its final name and fsyncs the folder. A stick
    pulled early therefore holds only a ``.partial`` file, which has no trailer and is refused.
    """

    def __init__(self, directory: Path, name: str, header: dict[str, Any],
                 signing_key: Ed25519PrivateKey, recipient: X25519PublicKey):
        super().__init__()
        self.directory = Path(directory)
        self.final_path = self.directory / name
        self.tmp_path = self.directory / f".{name}{PARTIAL_SUFFIX}"
        ephemeral = X25519PrivateKey.generate()
        salt = os.urandom(32)
        self.header = dict(header)
        self.header.update({
            "format": FORMAT,
            "cipher": "X25519-HKDF-SHA256/AES-256-GCM-STREAM",
            "chunk_size": CHUNK,
            "post_signing_key": signing.public_b64(signing_key),
            "recipient_key": signing.b64(exchange_keys.x25519_public_raw(recipient)),
            "ephemeral_key": signing.b64(exchange_keys.x25519_public_raw(ephemeral)),
            "salt": signing.b64(salt),
        })
        header_bytes = json.dumps(self.header, sort_keys=True, ensure_ascii=False).encode("utf-8")
        if len(header_bytes) > MAX_HEADER:
            raise ValueError("bundle header too large")
        prefix = _prefix(header_bytes)
        self._prefix_digest = hashlib.sha256(prefix).digest()
        self._aead = AESGCM(_derive_key(ephemeral.exchange(recipient), salt, header_bytes))
        self._signing_key = signing_key
        self._ct_hash = hashlib.sha256()
        self._ct_len = 0
        self._counter = 0
        # One chunk of plaintext being filled, and one of ciphertext: reused, never reallocated.
        self._plain = memoryview(bytearray(CHUNK))
        self._filled = 0
        self._sealed = memoryview(bytearray(SEALED_CHUNK))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.tmp_path, "wb")
        self._fh.write(prefix)
        self._written_back = 0
        self.plaintext_bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = view.nbytes
        self.plaintext_bytes += size
        # A full chunk is sealed only once a byte after it arrives: the final chunk is sealed by
        # commit() with the "last" flag. Whole chunks of a large write are sealed straight from it.
        while view.nbytes:
            if self._filled == CHUNK:
                self._seal(self._plain, last=False)
                self._filled = 0
            if self._filled == 0 and view.nbytes > CHUNK:
                self._seal(view[:CHUNK], last=False)
                view = view[CHUNK:]
                continue
            take = min(CHUNK - self._filled, view.nbytes)
            self._plain[self._filled:self._filled + take] = view[:take]
            self._filled += take
            view = view[take:]
        return size

    def _seal(self, chunk: memoryview, last: bool) -> None:
        sealed = self._sealed[:chunk.nbytes + TAG]
        self._aead.encrypt_into(_nonce(self._counter, last), chunk, None, sealed)
        self._counter += 1
        self._ct_hash.update(sealed)
        self._ct_len += sealed.nbytes
        self._fh.write(sealed)
        if self._ct_len - self._written_back >= _WRITE_BACK:
            self._start_write_back()

    def _start_write_back(self) -> None:
        """Have the disk start writing what is in memory now, without waiting for it. Otherwise the
        kernel holds it all until commit()'s fsync, and the export's work and the stick's writing
        happen one after the other instead of together (and a big export fills the memory)."""
        if not hasattr(os, "posix_fadvise"):
            return
        self._fh.flush()
        end = self._fh.tell()
        with contextlib.suppress(OSError):       # advice only: the fsync at commit() is what counts
            os.posix_fadvise(self._fh.fileno(), self._written_back, end - self._written_back,
                             os.POSIX_FADV_DONTNEED)
        self._written_back = end

    def commit(self) -> Path:
        self._seal(self._plain[:self._filled], last=True)
        self._filled = 0
        ct_digest = self._ct_hash.digest()
        signature = self._signing_key.sign(_signed_message(self._prefix_digest, self._ct_len, ct_digest))
        self._fh.write(TRAILER.pack(TRAILER_MAGIC, self._ct_len, ct_digest, signature))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.tmp_path, self.final_path)
        fsync_dir(self.directory, best_effort=True)   # a stick's vfat may refuse it
        return self.final_path

    def abort(self) -> None:
        """Drop the half-written file; quietly, since the stick may already be gone."""
        try:
            if not self._fh.closed:
                self._fh.close()
        except OSError:
            pass
        try:
            self.tmp_path.unlink(missing_ok=True)
        except OSError:
            pass

    @property
    def bytes_written(self) -> int:
        return self._ct_len


# -- reading ------------------------------------------------------------------------------

@dataclass
class Envelope:
    """The cleartext parts of a bundle, read without any key."""
    path: Path
    header: dict[str, Any]
    header_bytes: bytes
    ct_offset: int
    ct_len: int
    ct_digest: bytes
    signature: bytes
    size: int

    @property
    def post_id(self) -> str:
        return str(self.header.get("post_id", ""))


def read_envelope(path: str | os.PathLike) -> Envelope:
    """Parse the header and the trailer; refuse files that are not whole bundles."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise UserError(f"The bundle {path} cannot be read ({exc.strerror}).",
                        "Check the path, and that the stick is still plugged in.") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        head = fh.read(12)
        if len(head) < 12 or head[:8] != MAGIC:
            raise _refuse(path, "it is not a BCCDMS bundle", "Choose a .bccdms file written by 'appliance export'.")
        (hlen,) = struct.unpack(">I", head[8:])
        if hlen > MAX_HEADER:
            raise _refuse(path, "its header is malformed", "Ask the health post for a new export.")
        header_bytes = fh.read(hlen)
        ct_offset = 12 + hlen
        if len(header_bytes) != hlen or size < ct_offset + TRAILER.size:
            raise _refuse(path, "the file is incomplete (the stick was probably removed during the export)",
                          "Ask the health post to export again.")
        try:
            header = json.loads(header_bytes)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _refuse(path, "its header is malformed", "Ask the health post for a new export.") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise _refuse(path, f"it is not a {FORMAT} bundle (made by another software version?)",
                          "Update the software on this box, or ask the post to export again.")
        fh.seek(size - TRAILER.size)
        magic, ct_len, ct_digest, signature = TRAILER.unpack(fh.read(TRAILER.size))
    if magic != TRAILER_MAGIC:
        raise _refuse(path, "the file is incomplete (the stick was probably removed during the export)",
                      "Ask the health post to export again.")
    if ct_offset + ct_len + TRAILER.size != size:
        raise _refuse(path, "its length does not match its trailer: it was cut or altered",
                      "Ask the health post to export again.")
    if header.get("chunk_size") != CHUNK:
        raise _refuse(path, "it uses an unknown chunk size", "Ask the health post to export again.")
    return Envelope(path, header, header_bytes, ct_offset, ct_len, ct_digest, signature, size)


def _hash_range(fh, offset: int, length: int) -> bytes:
    h = hashlib.sha256()
    fh.seek(offset)
    left = length
    while left:
        block = fh.read(min(_HASH_BLOCK, left))
        if not block:
            break
        h.update(block)
        left -= len(block)
    return h.digest()


def verify_envelope(env: Envelope, known_posts: dict[str, str], *, accept_unknown: bool = False) -> bool:
    """Check who signed the bundle and that not a byte changed. Returns True for a known post.

    A post that is not in ``known_posts`` is refused unless ``accept_unknown``; a known post
    id with another key is always refused (someone else pretending to be that post).
    """
    key = env.header.get("post_signing_key")
    post_id = env.post_id
    if not isinstance(key, str) or not post_id:
        raise _refuse(env.path, "it does not say which post made it", "Ask the health post to export again.")
    known_key = known_posts.get(post_id)
    if known_key is not None and known_key.strip() != key:
        raise _refuse(env.path, f"it claims to come from post {post_id}, but is signed with a different key "
                                "than the one listed for that post",
                      "Do not import it. Check [exchange] known_posts against 'appliance keys show' on that post.")
    if known_key is None and not accept_unknown:
        raise _refuse(env.path, f"it comes from post {post_id} ({env.header.get('post_name', '?')}), "
                                "which is not in [exchange] known_posts",
                      f"If you trust this post, add it: {post_id} = \"{key}\" under [exchange.known_posts], "
                      "or import once with --accept-unknown.")
    with open(env.path, "rb") as fh:
        actual = _hash_range(fh, env.ct_offset, env.ct_len)
    message = _signed_message(hashlib.sha256(_prefix(env.header_bytes)).digest(), env.ct_len, env.ct_digest)
    try:
        signing.public_key_from_b64(key, "post signing key").verify(env.signature, message)
    except (InvalidSignature, UserError):
        raise _refuse(env.path, "its signature does not match: it was altered after the post made it",
                      "Do not import it; ask the health post to export again.") from None
    if actual != env.ct_digest:
        raise _refuse(env.path, "its content does not match the signed checksum: it was altered or damaged",
                      "Do not import it; ask the health post to export again.")
    return known_key is not None


class PayloadReader(io.RawIOBase):
    """The decrypted payload as a stream, one chunk in memory at a time.

    Every chunk is authenticated before any of its bytes are returned; the stream ends only
    after the chunk marked last, and the ciphertext is hashed again and compared with the
    signed hash (the file on a stick may change between two reads).
    """

    def __init__(self, env: Envelope, supervisor_key: X25519PrivateKey):
        super().__init__()
        self.env = env
        mine = exchange_keys.x25519_public_raw(supervisor_key)
        theirs = signing.unb64(str(env.header.get("recipient_key", "")), "recipient key")
        if theirs != mine:
            raise _refuse(env.path, "it was encrypted for another supervisor key "
                                    f"({exchange_keys.fingerprint(theirs)}), not for this box's key "
                                    f"({exchange_keys.fingerprint(mine)})",
                          "Import it on the supervisor box whose public key the post has, or ask the "
                          "post to set [exchange] supervisor_public_key to this box's key and export again.")
        try:
            ephemeral = X25519PublicKey.from_public_bytes(
                signing.unb64(str(env.header.get("ephemeral_key", "")), "ephemeral key"))
            salt = signing.unb64(str(env.header.get("salt", "")), "salt")
            shared = supervisor_key.exchange(ephemeral)
        except ValueError:
            raise _refuse(env.path, "its key exchange data is invalid", "Ask the health post to export again.") from None
        self._aead = AESGCM(_derive_key(shared, salt, env.header_bytes))
        self._fh = open(env.path, "rb")
        self._fh.seek(env.ct_offset)
        self._left = env.ct_len
        self._counter = 0
        self._hash = hashlib.sha256()
        self._plain = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> None:
        take = min(SEALED_CHUNK, self._left)
        sealed = self._fh.read(take)
        if len(sealed) != take or take < TAG:
            raise _refuse(self.env.path, "the file ended early", "Ask the health post to export again.")
        self._left -= take
        last = self._left == 0
        self._hash.update(sealed)
        try:
            plain = self._aead.decrypt(_nonce(self._counter, last), sealed, None)
        except InvalidTag:
            raise _refuse(self.env.path, "it cannot be decrypted: it was altered, or made for another key",
                          "Ask the health post to export again.") from None
        self._counter += 1
        if last:
            if self._hash.digest() != self.env.ct_digest:
                raise _refuse(self.env.path, "its content changed while it was being read",
                              "Copy the bundle off the stick and import the copy.")
            self._done = True
        self._plain = memoryview(plain)

    def readinto(self, buffer) -> int:
        while not self._plain.nbytes:
            if self._done:
                return 0
            self._next_chunk()
        n = min(len(buffer), self._plain.nbytes)
        buffer[:n] = self._plain[:n]
        self._plain = self._plain[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_payload(env: Envelope, supervisor_key: X25519PrivateKey) -> io.BufferedReader:
    return io.BufferedReader(PayloadReader(env, supervisor_key), buffer_size=CHUNK)


