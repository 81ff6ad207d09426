"""The state a client trusts, kept in a local file, advanced only by verified consistency proofs."""

from __future__ import annotations

import fcntl
import json
import os
import threading

import kvcore
from kvcore.storage import atomic

from docstore.errors import StorageError, VerificationError


def read_state_file(path: str | os.PathLike[str]) -> kvcore.State:
    """A state saved by :func:`write_state_file` (or ``immudoc state --save``)."""
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except OSError as e:
        raise VerificationError(f"cannot read the state file {os.fspath(path)!r}: {e.strerror}") from None
    except ValueError:
        raise VerificationError(f"the state file {os.fspath(path)!r} is not JSON") from None
    try:
        return kvcore.State.from_dict(d)
    except kvcore.VerificationError as e:
        raise VerificationError(f"the state file {os.fspath(path)!r} is malformed: {e}") from None


def write_state_file(path: str | os.PathLike[str], state: kvcore.State) -> None:
    """Write a state atomically: a temporary file, fsync, rename, fsync of the directory.

    StorageError (naming ``path``) if it cannot be written, e.g. its directory is missing."""
    path = os.fspath(path)
    try:
        atomic.write_json(path, state.to_dict(), f"{path}.tmp.{os.getpid()}.{threading.get_ident()}")
    except OSError as e:
        raise StorageError(f"cannot write the state file {path!r}: {e.strerror or e}") from e


class TrustedState:
    """What a verifying client trusts: a state, optionally persisted in ``state_file``.

    The state only moves forward, and only after a consistency proof from the current one
    verifies; then it is saved atomically (under an advisory lock, so several processes may
    share a file). There is no trust on first use: the first state comes from the caller (an
    auditor, a signed copy, a printout) or from an existing state file.
    """

    def __init__(self, trusted_state: kvcore.State | None = None, state_file: str | os.PathLike[str] | None = None) -> None:
        self.path = None if state_file is None else os.fspath(state_file)
        self._lock = threading.Lock()
        saved = read_state_file(self.path) if self.path and os.path.exists(self.path) else None
        if trusted_state is not None and not isinstance(trusted_state, kvcore.State):
            raise VerificationError(f"trusted_state must be a kvcore.State, got {type(trusted_state).__name__}")
        if trusted_state is None and saved is None:
            raise VerificationError(
                "a verifying client needs a first trusted state: pass trusted_state=..., or a "
                "state_file that holds one (there is no silent trust on first use)"
            )
        self._explicit = trusted_state
        self._state = saved if saved is not None and (trusted_state is None or saved.tx_id >= trusted_state.tx_id) else trusted_state
        self._pending_check = trusted_state is not None and saved is not None and saved != trusted_state
        if self.path and saved is None:
            write_state_file(self.path, self._state)

    @property
    def state(self) -> kvcore.State:
        return self._state

    @property
    def needs_link(self) -> tuple[kvcore.State, kvcore.State] | None:
        """Two trusted states (explicit and saved) whose consistency is not yet verified."""
        if self._pending_check and self._explicit is not None:
            return (self._explicit, self._state)
        return None

    def confirm_link(self, proof: kvcore.ConsistencyProof) -> None:
        """Verify that the saved state extends the explicitly given one (or vice versa)."""
        a, b = self.needs_link or (self._state, self._state)
        old, new = (a, b) if a.tx_id <= b.tx_id else (b, a)
        try:
            kvcore.verify_consistency(old, new, proof)
        except kvcore.VerificationError as e:
            raise VerificationError(f"the state file is not consistent with the given trusted state: {e}") from None
        self._pending_check = False

    def advance(self, new_state: kvcore.State, proof: kvcore.ConsistencyProof) -> None:
        """Move to ``new_state`` once ``proof`` shows it extends the current state."""
        with self._lock:
            cur = self._state
            if new_state == cur:
                return
            if new_state.tx_id < cur.tx_id:
                raise VerificationError(
                    f"the server's state {new_state.tx_id} is older than the trusted state {cur.tx_id}: "
                    "its history was rolled back"
                )
            try:
                kvcore.verify_consistency(cur, new_state, proof)
            except kvcore.VerificationError as e:
                raise VerificationError(
                    f"consistency check failed from trusted state {cur.tx_id} to {new_state.tx_id}: {e}"
                ) from None
            if self.path:
                self._save(new_state)
            self._state = new_state

    def _save(self, new_state: kvcore.State) -> None:
        lock_path = self.path + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            on_disk = read_state_file(self.path) if os.path.exists(self.path) else None
            if on_disk is None or on_disk.tx_id <= new_state.tx_id:
                write_state_file(self.path, new_state)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
