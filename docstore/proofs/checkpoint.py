"""Checkpoints (C2SP ``tlog-checkpoint``): a ledger state as the text of a signed note.

The note text is three lines: the origin (the ledger's name, also its key's name), the tree
size (the number of transactions, decimal, no leading zeros) and the base64 RFC 6962/9162
root hash of the ledger tree at that size::

    immudoc.example/trials
    42
    ZGVhZGJlZWY...=
    state-map sTaTeMaProOt...=

    — immudoc.example/trials AbCd...

The fourth line is an extension line (optional in the standard, which leaves extension lines
opaque): the root of the state map (docs/proofs.md) that the last transaction's header commits
to. It is written when that header has one (version 2), so a verifier holding the signed
checkpoint knows the map root without the header and its inclusion path; anyone who reads the
header can check it (the audit does), so it is as auditable as the tree root itself.

:func:`open_checkpoint` is pure: it checks the note's signature against pinned keys and
returns the state it authenticates.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import kvcore

from docstore.proofs.note import NoteError, Signer, Verifier, open_note, sign_note, split_note


MAP_LINE = "state-map "
"""The prefix of the extension line naming the state map's root."""


class Checkpoint(NamedTuple):
    """A parsed checkpoint: who issued it, the state it names, the signed note, and the state
    map's root it names (None: no such line)."""

    origin: str
    state: kvcore.State
    note: str
    map_root: bytes | None = None


def body(origin: str, state: kvcore.State, map_root: bytes | None = None) -> str:
    """The note text of a checkpoint of ``state`` (three lines, each ending in a newline, and
    the state-map line when ``map_root`` is given)."""
    text = f"{origin}\n{state.tx_id}\n{base64.b64encode(state.root).decode()}\n"
    if map_root is not None:
        if len(map_root) != 32:
            raise ValueError("a state map root is 32 bytes")
        text += f"{MAP_LINE}{base64.b64encode(map_root).decode()}\n"
    return text


def parse_body(text: str) -> tuple[str, kvcore.State]:
    """(origin, state) of a checkpoint's note text; NoteError if it is not one."""
    origin, state, _map = parse_text(text)
    return origin, state


def parse_text(text: str) -> tuple[str, kvcore.State, bytes | None]:
    """(origin, state, state-map root or None) of a checkpoint's note text; NoteError if it is
    not one. Other extension lines are opaque (ignored); a second state-map line, or one that
    is not a base64 32-byte root, is refused."""
    lines = text.split("\n")
    if lines[-1] != "":
        raise NoteError("a checkpoint's text ends with a newline")
    lines = lines[:-1]
    if len(lines) < 3 or any(not line for line in lines):
        raise NoteError("a checkpoint's text is at least three non-empty lines: origin, tree size, root hash")
    origin, size, root_b64 = lines[0], lines[1], lines[2]
    if not size.isascii() or not size.isdigit() or (size != "0" and size.startswith("0")) or len(size) > 20:
        raise NoteError(f"a checkpoint's tree size is a decimal number without leading zeros, got {size!r}")
    try:
        root = base64.b64decode(root_b64, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError("a checkpoint's root hash is not valid base64") from None
    if len(root) != 32:
        raise NoteError("a checkpoint's root hash is not 32 bytes")
    tx_id = int(size)
    if tx_id >= 2**63:
        raise NoteError("a checkpoint's tree size is out of range")
    map_root = None
    for line in lines[3:]:
        if not line.startswith(MAP_LINE):
            continue
        if map_root is not None:
            raise NoteError("a checkpoint names its state map's root once")
        try:
            map_root = base64.b64decode(line[len(MAP_LINE):], validate=True)
        except (binascii.Error, ValueError):
            raise NoteError("a checkpoint's state-map root is not valid base64") from None
        if len(map_root) != 32:
            raise NoteError("a checkpoint's state-map root is not 32 bytes")
    return origin, kvcore.State(tx_id, root), map_root


def sign(origin: str, state: kvcore.State, signers: Sequence[Signer], map_root: bytes | None = None) -> str:
    """The signed checkpoint of ``state`` (origin: the log's name; each signer signs it),
    naming the state map's root when given."""
    return sign_note(body(origin, state, map_root), signers)


def read_unverified(note: str | bytes) -> Checkpoint:
    """The checkpoint a note claims, its signatures NOT checked (for display and for a
    state the user saved and vouches for); use :func:`open_checkpoint` to authenticate."""
    hit = _READ.get(note)
    if hit is not None:
        return hit
    text, _sigs = split_note(note)
    origin, state, map_root = parse_text(text)
    c = Checkpoint(origin, state, note if isinstance(note, str) else note.decode(), map_root)
    if len(_READ) >= 256:
        _READ.clear()
    _READ[note] = c
    return c


_READ: dict[str | bytes, Checkpoint] = {}
"""Notes already parsed by :func:`read_unverified` (a memo of a pure function: proofs of one
state all carry the same checkpoint)."""


def open_checkpoint(note: str | bytes, verifiers: Iterable[Verifier], origin: str | None = None) -> Checkpoint:
    """Authenticate a signed checkpoint with pinned keys; return what it says.

    NoteError unless a pinned key signed it (and no pinned key's signature on it fails) and its
    origin line is ``origin``, by default the signing key's name (as immudoc ledgers name
    themselves; a log such as Go's checksum database, whose origin differs from its key's name,
    is opened by giving its origin).
    """
    pinned = tuple(verifiers)
    key = (note, pinned, origin)
    hit = _OPENED.get(key)
    if hit is not None:
        return hit
    c = _open(note, pinned, origin)
    if len(_OPENED) >= 256:
        _OPENED.clear()
    _OPENED[key] = c
    return c


_OPENED: dict[tuple[str | bytes, tuple[Verifier, ...], str | None], Checkpoint] = {}
"""Notes already authenticated by :func:`open_checkpoint`, by (note, pinned keys, origin): a
memo of a pure function (proofs of one state all carry the same checkpoint)."""


def _open(note: str | bytes, verifiers: Iterable[Verifier], origin: str | None) -> Checkpoint:
    text, good = open_note(note, verifiers)
    claimed, state, map_root = parse_text(text)
    if origin is not None:
        if claimed != origin:
            raise NoteError(f"the checkpoint's origin is {claimed!r}, not {origin!r}")
    elif not any(v.name == claimed for v in good):
        raise NoteError(
            f"the checkpoint's origin {claimed!r} is not the name of the pinned key that signed it "
            f"({', '.join(v.name for v in good)})"
        )
    return Checkpoint(claimed, state, note if isinstance(note, str) else note.decode(), map_root)


def looks_like(text: str) -> bool:
    """Whether ``text`` is a checkpoint note rather than a JSON state (a cheap sniff)."""
    return not text.lstrip().startswith("{")
