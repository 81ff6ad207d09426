"""Signed notes (C2SP ``signed-note``) with Ed25519 keys, and their key strings.

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
``— <key name> <base64(4-byte key id || signature)>``. Keys are written as Go's
``golang.org/x/mod/sumdb/note`` writes them:

- verifier key: ``<name>+<key id, 8 hex digits>+<base64(0x01 || 32-byte public key)>``
- signer key:   ``PRIVATE+KEY+<name>+<key id>+<base64(0x01 || 32-byte seed)>``

with ``key id = SHA-256(name || 0x0A || 0x01 || public key)[:4]`` (big-endian uint32).

Verification (:func:`open_note`) is pure: signatures of keys the caller does not pin are
ignored; a signature of a pinned key must verify, or the note is refused; a note with no
verified signature of a pinned key is refused. Specified in docs/proofs.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from docstore.errors import VerificationError

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_BAD_NAME = re.compile(r"[\s+\x00-\x1f\x7f]")
ALG_ED25519 = 0x01
MAX_NOTE_BYTES = 1 << 16
"""Largest note read (checked before parsing): room for well over 16 Ed25519 signatures."""
MAX_SIGNATURES = 64
_DASH = "\u2014"


class NoteError(VerificationError):
    """A note, key string or signature is malformed, or no pinned key signed the note."""


def key_id(name: str, public_key: bytes) -> int:
    """The 32-bit key id of an Ed25519 key (C2SP signed-note, its recommended derivation)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def check_key_name(name: object) -> str:
    """A key name: non-empty, no Unicode spaces, no ``+``, no control characters."""
    if not isinstance(name, str) or not name:
        raise NoteError("a key name is a non-empty string")
    if _BAD_NAME.search(name):
        raise NoteError(f"key name {name!r} may not hold spaces, '+' or control characters")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise NoteError("a key name must be UTF-8 text") from None
    return name


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None


class Verifier(NamedTuple):
    """A pinned public key: its name, 32-bit id and 32-byte Ed25519 public key."""

    name: str
    id: int
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """Parse ``<name>+<hex id>+<base64(0x01 || key)>``; NoteError if anything is off."""
        if not isinstance(text, str):
            raise NoteError(f"a verifier key is a string, got {type(text).__name__}")
        text = text.strip()
        parts = text.split("+", 2)  # base64 may hold '+'; name and id do not
        if len(parts) != 3:
            raise NoteError("a verifier key reads '<name>+<key id>+<base64 key>'")
        name, hex_id, data = parts
        check_key_name(name)
        if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
            raise NoteError("a verifier key's id is 8 lowercase hex digits")
        raw = _b64(data, "the verifier key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("the verifier key is not an Ed25519 key (0x01 and 32 bytes)")
        public = raw[1:]
        if key_id(name, public) != int(hex_id, 16):
            raise NoteError("the verifier key's id does not match its name and key")
        return cls(name, int(hex_id, 16), public)

    def __str__(self) -> str:
        data = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.id:08x}+{data}"

    def check(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Signer:
    """An Ed25519 signing key with its name (keep its :meth:`private_string` secret).

    The key object (and the ``cryptography`` import) is made on first use, so opening a
    database that never signs costs nothing; a key string whose id does not match its key is
    refused then (NoteError)."""

    def __init__(self, name: str, seed: bytes, claimed_id: int | None = None) -> None:
        check_key_name(name)
        if len(seed) != 32:
            raise NoteError("an Ed25519 private key is 32 bytes")
        self.name = name
        self._seed = seed
        self._claimed_id = claimed_id
        self._key: Any = None
        self._verifier: Verifier | None = None

    def _private(self) -> Any:
        if self._key is None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            self._key = Ed25519PrivateKey.from_private_bytes(self._seed)
        return self._key

    @property
    def verifier(self) -> Verifier:
        """The matching verifier key (NoteError if the key string named another key id)."""
        if self._verifier is None:
            public = self._private().public_key().public_bytes_raw()
            verifier = Verifier(self.name, key_id(self.name, public), public)
            if self._claimed_id is not None and verifier.id != self._claimed_id:
                raise NoteError("the signer key's id does not match its name and key")
            self._verifier = verifier
        return self._verifier

    @property
    def id(self) -> int:
        return self.verifier.id

    @classmethod
    def generate(cls, name: str) -> Signer:
        import os

        return cls(name, os.urandom(32))

    @classmethod
    def parse(cls, text: str) -> Signer:
        """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>`` (its id is checked
        against the key on first use)."""
        if not isinstance(text, str):
            raise NoteError(f"a signer key is a string, got {type(text).__name__}")
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("a signer key reads 'PRIVATE+KEY+<name>+<key id>+<base64 key>'")
        name, hex_id, data = parts[2:]
        if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
            raise NoteError("a signer key's id is 8 lowercase hex digits")
        raw = _b64(data, "the signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("the signer key is not an Ed25519 key (0x01 and 32 bytes)")
        return cls(name, raw[1:], int(hex_id, 16))

    def private_string(self) -> str:
        data = base64.b64encode(bytes([ALG_ED25519]) + self._seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.id:08x}+{data}"

    def __repr__(self) -> str:  # never the private key
        return f"<Signer {self.verifier}>"

    def signature_line(self, text: str) -> str:
        sig = self._private().sign(text.encode())
        blob = self.id.to_bytes(4, "big") + sig
        return f"{_DASH} {self.name} {base64.b64encode(blob).decode()}\n"


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    if _CONTROL.search(text):
        raise NoteError("a note may hold no control characters but newlines")


def sign_note(text: str, signers: Sequence[Signer]) -> str:
    """The signed note: ``text``, a blank line, one signature line per signer."""
    _check_text(text)
    if not signers:
        raise NoteError("a note needs at least one signer")
    return text + "\n" + "".join(s.signature_line(text) for s in signers)


class Signature(NamedTuple):
    name: str
    id: int
    signature: bytes


def split_note(note: str | bytes) -> tuple[str, list[Signature]]:
    """(text, signatures) of a note, checking its format only (nothing is verified)."""
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise NoteError(f"a signed note is at most {MAX_NOTE_BYTES} bytes")
        try:
            note = note.decode()
        except UnicodeDecodeError:
            raise NoteError("a signed note must be UTF-8 text") from None
    if not isinstance(note, str):
        raise NoteError(f"a signed note is text, got {type(note).__name__}")
    if len(note) > MAX_NOTE_BYTES or len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise NoteError(f"a signed note is at most {MAX_NOTE_BYTES} bytes")
    try:
        note.encode()
    except UnicodeEncodeError:
        raise NoteError("a signed note must be UTF-8 text") from None
    if _CONTROL.search(note):
        raise NoteError("a signed note may hold no control characters but newlines")
    if not note.endswith("\n"):
        raise NoteError("a signed note ends with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("a signed note has no blank line before its signatures")
    text, sig_block = note[: cut + 1], note[cut + 2 :]
    lines = sig_block[:-1].split("\n") if sig_block else []
    if not lines:
        raise NoteError("a signed note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"a signed note holds at most {MAX_SIGNATURES} signatures")
    sigs = []
    for line in lines:
        if not line.startswith(_DASH + " "):
            raise NoteError("a signature line starts with an em dash and a space")
        fields = line[2:].split(" ")
        if len(fields) != 2:
            raise NoteError("a signature line is '\u2014 <key name> <base64 signature>'")
        name, blob = fields
        check_key_name(name)
        raw = _b64(blob, "a signature")
        if len(raw) < 5:
            raise NoteError("a signature is a 4-byte key id and the signature bytes")
        sigs.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return text, sigs


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> tuple[str, list[Verifier]]:
    """The note's text and the pinned keys whose signatures verified.

    Signatures by keys not in ``verifiers`` (name and id) are ignored. NoteError if a
    signature by a pinned key fails, or if no pinned key signed the note.
    """
    pinned = tuple(verifiers)
    memo_key = (note, pinned)
    hit = _OPENED.get(memo_key)
    if hit is not None:
        return hit[0], list(hit[1])
    text, sigs = split_note(note)
    known = {(v.name, v.id): v for v in pinned}
    if not known:
        raise NoteError("no verifier key is pinned: a signed note is trusted only with its signer's key")
    good: list[Verifier] = []
    message = text.encode()
    for sig in sigs:
        v = known.get((sig.name, sig.id))
        if v is None:
            continue
        if not v.check(message, sig.signature):
            raise NoteError(f"the signature of key {v.name}+{v.id:08x} does not verify: the note was altered")
        if v not in good:
            good.append(v)
    if not good:
        names = ", ".join(sorted({f"{s.name}+{s.id:08x}" for s in sigs}))
        raise NoteError(
            f"the note is not signed by a pinned key (it is signed by {names}; pinned: "
            + ", ".join(f"{v.name}+{v.id:08x}" for v in known.values())
            + ")"
        )
    if len(_OPENED) >= _OPENED_MAX:
        _OPENED.clear()
    _OPENED[memo_key] = (text, tuple(good))
    return text, good


_OPENED: dict[tuple[str | bytes, tuple[Verifier, ...]], tuple[str, tuple[Verifier, ...]]] = {}
"""Notes that :func:`open_note` accepted, keyed on the exact note and pinned keys.

A memo of a pure computation (the same bytes and keys give the same answer): a verifier
checking many proofs that carry the same checkpoint pays for its signature once. Only
successes are kept; anything else is checked in full."""
_OPENED_MAX = 256


def verifiers(keys: str | Verifier | Iterable[str | Verifier] | None) -> list[Verifier]:
    """Pinned keys from a key string, a :class:`Verifier`, or a list of them (None: none)."""
    if keys is None:
        return []
    if isinstance(keys, (str, Verifier)):
        keys = [keys]
    out = []
    try:
        items = list(keys)
    except TypeError:
        raise NoteError(f"verifier keys are a key string or a list of them, got {type(keys).__name__}") from None
    for k in items:
        out.append(k if isinstance(k, Verifier) else Verifier.parse(k))
    return out
