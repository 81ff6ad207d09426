"""What a verifying reader trusts, and the one place that decides when that may change.

:class:`TrustTracker` holds a trusted state (optionally persisted in a state file) and the
verifier keys the reader pins. Both verifying readers use it: the embedded database opened
with ``verify=True`` and the remote client of ``docstore.connect``. Its rules:

- An **older** state is accepted once a consistency proof shows the trusted state extends it
  (it is remembered as part of the trusted history; the trusted state does not move).
- A **newer** state is accepted only if a pinned key signed its checkpoint *and* a consistency
  proof shows it extends the trusted state; the trusted state then advances to it and is saved
  (as the signed checkpoint) atomically. A consistency proof alone never suffices: anyone who
  knows the trusted tree's right edge can extend it with leaves of their choosing. Only with
  the explicit ``trust_unsigned=True`` and no key pinned (a ledger without a key) is a
  consistency proof enough, and an :class:`UnsignedStateWarning` says so; once a key is
  pinned a signature is always required (stripping the checkpoint is no downgrade).
- The same transaction with another root, or a state behind the trusted one presented as
  current, is a rewritten or rolled-back history: ``VerificationError``.
- A document's latest revision never goes back: a revision older than one already seen for
  the same document is refused (a stale answer).

A state file is this reader's trust store: the trusted state, the signed checkpoint it was
reached through, and the keys pinned with it (given by the user, or taken from the server on
first use with ``trust_on_first_use=True``, as SSH pins a host key), so later readers keep
the same pin.

The empty ledger's state (transaction 0) trusts any history, so it is refused as a first
trusted state unless keys are pinned (then signatures authenticate every later state) or
``trust_on_first_use`` is chosen.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import kvcore
from kvcore.storage import atomic

from docstore.errors import StorageError, VerificationError
from docstore.proofs import checkpoint as ckpt
from docstore.proofs.note import Verifier, verifiers
from docstore.proofs.verify import authenticate_newer, authenticate_signature, check_extends

_REMEMBERED_STATES = 4096
_REMEMBERED_REVISIONS = 65536
MAX_STATE_FILE_BYTES = 1 << 16

Fetch = Callable[[kvcore.State, kvcore.State], kvcore.ConsistencyProof]
"""Asks the (untrusted) source for a consistency proof from the first state to the second."""


class UnsignedStateWarning(UserWarning):
    """A reader with ``trust_unsigned=True`` advanced its trusted state without a signature."""


# ------------------------------------------------------------------------- state files
class TrustRecord(NamedTuple):
    """What a state file holds: the trusted state, its signed checkpoint (if it was reached
    through one) and the verifier keys pinned with it (if any)."""

    state: kvcore.State
    checkpoint: str | None = None
    verifier_keys: tuple[str, ...] = ()


def read_trust_file(path: str | os.PathLike[str]) -> TrustRecord:
    """Read a state file: a signed checkpoint (``immudoc state --save``, C2SP tlog-checkpoint),
    or JSON ``{"tx_id": n, "root": "<hex>"}`` with optional ``"checkpoint"`` (its note text) and
    ``"verifier_keys"`` (the keys a reader pinned with it).

    The file is the reader's own record of what it trusts: a signature in it is not checked
    here (a reader that pins keys checks it)."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read(MAX_STATE_FILE_BYTES + 1)
    except OSError as e:
        raise VerificationError(f"cannot read the state file {name!r}: {e.strerror}") from None
    if len(raw) > MAX_STATE_FILE_BYTES:
        raise VerificationError(f"the state file {name!r} is larger than a state or checkpoint can be")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise VerificationError(f"the state file {name!r} is not UTF-8 text") from None
    try:
        if ckpt.looks_like(text):
            c = ckpt.read_unverified(text)
            return TrustRecord(c.state, c.note)
        try:
            d = json.loads(text)
        except ValueError:
            raise VerificationError("it is not JSON") from None
        if not isinstance(d, dict) or set(d) - {"tx_id", "root", "checkpoint", "verifier_keys"}:
            raise VerificationError("it holds fields other than tx_id, root, checkpoint and verifier_keys")
        state = kvcore.State.from_dict({"tx_id": d.get("tx_id"), "root": d.get("root")})
        note = d.get("checkpoint")
        if note is not None and (not isinstance(note, str) or ckpt.read_unverified(note).state != state):
            raise VerificationError("its checkpoint does not name its state")
        keys = d.get("verifier_keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise VerificationError("'verifier_keys' is a list of key strings")
        verifiers(keys)  # each must parse
        return TrustRecord(state, note, tuple(keys))
    except kvcore.VerificationError as e:
        raise VerificationError(f"the state file {name!r} is malformed: {e}") from None


def read_state_file(path: str | os.PathLike[str]) -> kvcore.State:
    """The state saved in a state file (a checkpoint or a JSON state); see :func:`read_trust_file`."""
    return read_trust_file(path).state


def write_state_file(
    path: str | os.PathLike[str],
    state: kvcore.State,
    checkpoint: str | None = None,
    verifier_keys: Sequence[str] = (),
) -> None:
    """Write a state file atomically (temporary file, fsync, rename, fsync of the directory):
    JSON ``{"tx_id", "root"}``, with its signed ``checkpoint`` and pinned ``verifier_keys``
    when given.

    StorageError (naming ``path``) if it cannot be written, e.g. its directory is missing."""
    name = os.fspath(path)
    d: dict[str, Any] = state.to_dict()
    if checkpoint is not None:
        if ckpt.read_unverified(checkpoint).state != state:
            raise VerificationError("the checkpoint to save names another state")
        d["checkpoint"] = checkpoint
    if verifier_keys:
        d["verifier_keys"] = [str(k) for k in verifier_keys]
    tmp = f"{name}.tmp.{os.getpid()}.{threading.get_ident()}"
    try:
        atomic.write_json(name, d, tmp)
    except OSError as e:
        raise StorageError(f"cannot write the state file {name!r}: {e.strerror or e}") from e


def write_checkpoint_file(path: str | os.PathLike[str], note: str) -> None:
    """Save a signed checkpoint as it is (C2SP text), atomically."""
    name = os.fspath(path)
    ckpt.read_unverified(note)
    tmp = f"{name}.tmp.{os.getpid()}.{threading.get_ident()}"
    try:
        atomic.write_text(name, note, tmp)
    except OSError as e:
        raise StorageError(f"cannot write the checkpoint file {name!r}: {e.strerror or e}") from e


# ------------------------------------------------------------------------- the tracker
class TrustTracker:
    """A verifying reader's trusted state, pinned keys and seen revisions (thread-safe).

    ``trusted``: a State or a checkpoint's text you vouch for (a checkpoint's signature is
    checked if keys are pinned); or None to use the one saved in ``state_file``.
    """

    def __init__(
        self,
        trusted: kvcore.State | str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        *,
        verifier_keys: Any = None,
        trust_on_first_use: bool = False,
        trust_unsigned: bool = False,
    ) -> None:
        self.path = None if state_file is None else os.fspath(state_file)
        record = read_trust_file(self.path) if self.path and os.path.exists(self.path) else None
        keys = verifiers(verifier_keys)
        self.pinned: list[Verifier] = keys or verifiers(list(record.verifier_keys) if record else None)
        """The verifier keys pinned: those given, else those saved with the state file."""
        self.trust_unsigned = bool(trust_unsigned)
        self._lock = threading.RLock()
        self._on_history: OrderedDict[int, bytes] = OrderedDict()
        self._revisions: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self._warned = False
        explicit, explicit_note = self._explicit(trusted)
        saved, saved_note = (record.state, record.checkpoint) if record else (None, None)
        if saved is not None and saved_note is not None and self.pinned and saved_note:
            try:  # a saved checkpoint must carry the pinned key's signature (a key rotated since: kept as is)
                ckpt.open_checkpoint(saved_note, self.pinned)
            except VerificationError:
                saved_note = None
        if explicit is None and saved is None:
            raise VerificationError(
                "a verifying reader needs a first trusted state: pass trusted_state=..., or a "
                "state_file that holds one (there is no silent trust on first use)"
            )
        for s in (explicit, saved):
            if s is not None and s.tx_id == 0 and not self.pinned and not trust_on_first_use:
                raise VerificationError(
                    "the empty ledger's state (transaction 0) trusts any history: save a state after "
                    "the first transaction, pin the ledger's key (verifier_key=...), or choose "
                    "trust_on_first_use=True explicitly"
                )
        if saved is not None and (explicit is None or saved.tx_id >= explicit.tx_id):
            self._state, self._note = saved, saved_note
        else:
            assert explicit is not None
            self._state, self._note = explicit, explicit_note
        self._explicit_state = explicit
        self._saved_state = saved
        self._pending_check = explicit is not None and saved is not None and saved != explicit
        if self.path and saved is None:
            self._save(self._state, self._note)
        elif self.path and saved is not None and keys and record is not None and tuple(map(str, keys)) != record.verifier_keys:
            # new pins for the state already saved; an explicit newer state is saved once linked
            self._save(saved, saved_note, force=True)

    def _explicit(self, trusted: object) -> tuple[kvcore.State | None, str | None]:
        if trusted is None:
            return None, None
        if isinstance(trusted, kvcore.State):
            if type(trusted.tx_id) is not int or trusted.tx_id < 0 or type(trusted.root) is not bytes or len(trusted.root) != 32:
                raise VerificationError("the trusted state is malformed (a transaction id and a 32-byte root)")
            return trusted, None
        if isinstance(trusted, (str, bytes)):
            c = ckpt.open_checkpoint(trusted, self.pinned) if self.pinned else ckpt.read_unverified(trusted)
            return c.state, c.note
        raise VerificationError(f"trusted_state must be a kvcore.State or a checkpoint's text, got {type(trusted).__name__}")

    # -------------------------------------------------------------------- reading
    @property
    def state(self) -> kvcore.State:
        return self._state

    @property
    def checkpoint(self) -> str | None:
        """The signed checkpoint of the trusted state, when it was reached through one."""
        return self._note

    def link(self, fetch: Fetch) -> None:
        """If an explicit trusted state and a different saved one were given, check once that
        one extends the other (both are the caller's own: no signature is needed)."""
        with self._lock:
            if not self._pending_check or self._explicit_state is None:
                return
            a, b = self._explicit_state, self._saved_state
            assert b is not None
            old, new = (a, b) if a.tx_id <= b.tx_id else (b, a)
            if old.tx_id == new.tx_id:
                raise VerificationError("the state file and the given trusted state differ at the same transaction")
            try:
                kvcore.verify_consistency(old, new, fetch(old, new))
            except kvcore.VerificationError as e:
                raise VerificationError(f"the state file is not consistent with the given trusted state: {e}") from None
            self._pending_check = False
            if self._state == a and a.tx_id > b.tx_id:  # the given state is newer: now it is linked, save it
                self._save(self._state, self._note)

    # ------------------------------------------------------------------- accepting
    def accept(
        self,
        state: kvcore.State,
        note: str | None,
        fetch: Fetch,
        base: kvcore.State | None = None,
        proof: kvcore.ConsistencyProof | None = None,
    ) -> None:
        """Make sure ``state`` is on the trusted history; advance to it if it is newer.

        ``note``: its signed checkpoint (needed if it is newer); ``proof``: a consistency
        proof from ``base`` to ``state`` the source already sent (used if ``base`` is still the
        trusted state); ``fetch`` asks for any other proof needed. VerificationError if the
        state cannot be authenticated."""
        if not isinstance(state, kvcore.State):
            raise VerificationError(f"expected a state, got {type(state).__name__}")
        with self._lock:
            cur = self._state
            if state == cur or self._on_history.get(state.tx_id) == state.root:
                return
            if state.tx_id == cur.tx_id or self._on_history.get(state.tx_id, state.root) != state.root:
                raise VerificationError(
                    f"the root at transaction {state.tx_id} differs from the trusted one: the history "
                    "was rewritten (or different readers are shown different histories)"
                )
            if state.tx_id < cur.tx_id:
                check_extends(state, cur, fetch(state, cur))
                self._remember(state)
                return
            unsigned = self.trust_unsigned and not self.pinned  # a pinned key always needs its signature
            if not unsigned:  # the signature first: no consistency proof is asked for a state no pinned key signed
                authenticate_signature(cur, state, note, self.pinned)
            cp = proof if (proof is not None and base == cur) else fetch(cur, state)
            if unsigned:
                check_extends(cur, state, cp)
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"advancing the trusted state to {state.tx_id} without a signature (trust_unsigned=True): "
                        "a server or disk that knows the trusted state could extend it with forged transactions",
                        UnsignedStateWarning,
                        stacklevel=3,
                    )
                note = None
            else:
                authenticate_newer(cur, state, note, cp, self.pinned)
            self._remember(cur)
            self._save(state, note)
            self._state, self._note = state, note

    def check_current(self, state: kvcore.State, base: kvcore.State | None = None) -> None:
        """A state a source presents as its current one must not be behind the trusted state
        (``base``: the trusted state when the source was asked; another thread may have moved
        the trusted state on since, and an answer to an earlier question is no rollback)."""
        cur = self._state if base is None else base
        if state.tx_id < cur.tx_id:
            raise VerificationError(
                f"the ledger is at transaction {state.tx_id}, before the trusted state {cur.tx_id}: "
                "it lost transactions (its history was rolled back)"
            )

    def seen_revision(self, collection: str, doc_id: str, revision: int, started: float) -> None:
        """Record the latest revision read of a document; refuse an older one served to a read
        that started (``started``: ``time.monotonic()`` before asking) after a newer one was
        seen. Reads in flight at the same time may legitimately finish in any order."""
        key = (collection, doc_id)
        now = time.monotonic()
        with self._lock:
            seen = self._revisions.get(key)
            if seen is not None and revision < seen[0] and started > seen[1]:
                raise VerificationError(
                    f"document {doc_id!r} in {collection!r}: revision {revision} was served as the latest, "
                    f"but revision {seen[0]} was already seen (a stale or rolled-back answer)"
                )
            if seen is None or revision > seen[0]:
                self._revisions[key] = (revision, now)
            self._revisions.move_to_end(key)
            while len(self._revisions) > _REMEMBERED_REVISIONS:
                self._revisions.popitem(last=False)

    # -------------------------------------------------------------------- internals
    def _remember(self, state: kvcore.State) -> None:
        self._on_history[state.tx_id] = state.root
        self._on_history.move_to_end(state.tx_id)
        while len(self._on_history) > _REMEMBERED_STATES:
            self._on_history.popitem(last=False)

    def _save(self, state: kvcore.State, note: str | None, force: bool = False) -> None:
        """Write the state file (under its lock) unless it already holds a newer state
        (``force``: write it anyway, for new pins of the same state)."""
        if not self.path:
            return
        lock_path = self.path + ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StorageError(f"cannot write the state file {self.path!r} (its lock file: {e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            on_disk = read_state_file(self.path) if os.path.exists(self.path) else None
            if force or on_disk is None or on_disk.tx_id <= state.tx_id:
                write_state_file(self.path, state, note, [str(k) for k in self.pinned])
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
