"""A database's signing keys: where they live, signing checkpoints, rotation.

The keys are kept in a key file (:mod:`docstore.proofs.keyfile`); checkpoints are C2SP signed
notes (:mod:`docstore.proofs.checkpoint`), signed by the current key and by earlier keys kept
after a rotation. Signing is cached per state (a few dozen): a server answering many proofs of
one state signs it once.
"""

from __future__ import annotations

import os
import threading

import kvcore

from docstore.errors import QueryError, StorageError
from docstore.proofs import checkpoint as ckpt
from docstore.proofs import keyfile
from docstore.proofs.note import NoteError, Signer, check_key_name

_CACHED = 64


class Signing:
    """The signers of one database (None: it has no key yet) and its signed-checkpoint cache."""

    def __init__(self, key_path: str, signers: list[Signer] | None) -> None:
        self.key_path = key_path
        self._signers = signers
        self._signed: dict[kvcore.State, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def check_origin(origin: str | None) -> None:
        """QueryError unless ``origin`` is None or a valid ledger (key) name."""
        if origin is not None:
            try:
                check_key_name(origin)
            except NoteError as e:
                raise QueryError(f"origin: {e}") from None

    @classmethod
    def load(cls, db_path: str, key_file: str | os.PathLike[str] | None, origin: str | None, create: bool) -> Signing:
        """The keys in ``key_file`` (default: ``$IMMUDOC_KEY_FILE``, else ``signing.key`` in the
        database directory); a new key named ``origin`` if there is none and ``create``."""
        cls.check_origin(origin)
        path = os.fspath(key_file) if key_file is not None else (
            os.environ.get(keyfile.KEY_FILE_ENV) or os.path.join(db_path, keyfile.KEY_FILE)
        )
        return cls(path, keyfile.load_or_create(path, origin, create=create))

    @property
    def has_key(self) -> bool:
        return bool(self._signers)

    @property
    def current(self) -> Signer:
        """The current signer; StorageError if the database has no key, or its key file holds
        a key whose id does not match it."""
        if not self._signers:
            raise StorageError(
                f"this database has no signing key ({self.key_path!r} is missing): open it once "
                "for writing to create one, or give its key file (key_file=..., IMMUDOC_KEY_FILE)"
            )
        for signer in self._signers:
            try:
                signer.verifier  # noqa: B018 - checks the key against its id (first use)
            except NoteError as e:
                raise StorageError(f"the signing key file {self.key_path!r}: {e}") from None
        return self._signers[0]

    def verifier_keys(self) -> list[str]:
        """The verifier keys: the current one first, then earlier ones that still co-sign."""
        self.current  # noqa: B018 - StorageError without a key
        assert self._signers is not None
        return [str(s.verifier) for s in self._signers]

    def cached(self, state: kvcore.State) -> str | None:
        """The checkpoint of ``state`` if it was signed before (then it is this ledger's)."""
        return self._signed.get(state)

    def sign(self, state: kvcore.State, map_root: bytes | None = None) -> str:
        """The signed checkpoint of ``state`` (the caller checked it is this ledger's), naming
        ``map_root``, the state map's root its last header commits to (if any)."""
        note = self._signed.get(state)
        if note is None:
            signer = self.current
            assert self._signers is not None
            note = ckpt.sign(signer.name, state, self._signers, map_root)
            with self._lock:
                if len(self._signed) >= _CACHED:
                    self._signed.clear()
                self._signed[state] = note
        return note

    def rotate(self, keep_old: bool) -> str:
        """A new current key of the same name (the old ones keep co-signing if ``keep_old``);
        the key file is replaced atomically. Returns the new verifier key."""
        signer = self.current
        assert self._signers is not None
        new = Signer.generate(signer.name)
        keys = ([new] + (self._signers if keep_old else []))[: keyfile.MAX_KEYS]
        keyfile.write(self.key_path, keys)
        self._signers = keys
        self._signed.clear()
        return str(new.verifier)

    def retire_old(self) -> None:
        """Only the current key signs from now on."""
        signer = self.current
        keyfile.write(self.key_path, [signer])
        self._signers = [signer]
        self._signed.clear()
