"""Optimistic transactions: read a snapshot, buffer writes, commit or raise ConflictError."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvcore.errors import ConflictError, InvalidInputError, KeyNotFoundError, KvError
from kvcore.limits import MAX_KEY_BYTES, MAX_VALUE_BYTES, check_key, check_value, valid_pairs
from kvcore.models import Entry
from kvcore.payload import StateRoot

if TYPE_CHECKING:
    from kvcore.ledger import Ledger


@dataclass(frozen=True)
class CommitRequest:
    """One transaction of a group commit (:meth:`Ledger.commit_many`): validated ``writes``,
    with ``check`` and ``state_root`` as for :meth:`Ledger.commit`."""

    writes: list[tuple[bytes, bytes | None]]
    check: Callable[[int], None] | None = None
    state_root: StateRoot | None = None


class Transaction:
    """Use as ``with ledger.transaction() as tx:``; commits on a clean exit.

    Reads see the ledger as of the transaction's start plus its own writes. At commit, if a
    key it read or wrote (or a key under a prefix it scanned) was committed by another
    transaction since its snapshot, :class:`ConflictError` is raised and nothing is written.
    Pending writes appear in reads as entries with ``tx_id == 0``. Writes to keys under the
    ledger's unindexed prefixes are blind (the key index cannot tell who wrote them last);
    reads of them raise InvalidInputError.
    """

    def __init__(self, ledger: Ledger, at_tx: int | None = None) -> None:
        self._ledger = ledger
        self.snapshot = ledger.tx_id if at_tx is None else at_tx
        self._reads: set[bytes] = set()
        self._prefixes: set[bytes] = set()
        self._writes: dict[bytes, bytes | None] = {}
        self._checked: set[bytes] = set()  # written keys whose later change is a conflict
        self._done = False
        self.tx_id: int | None = None
        """Id of the committed transaction (None until committed, or if it wrote nothing)."""

    @property
    def write_count(self) -> int:
        """How many entries the transaction writes so far: the next new key written becomes
        entry ``write_count`` of the committed transaction (entries keep the order in which
        their keys were first written)."""
        return len(self._writes)

    def _active(self) -> None:
        if self._done:
            raise KvError("the transaction has already been committed or rolled back")

    def get(self, key: bytes) -> Entry:
        self._active()
        key = check_key(key)
        if key in self._writes:
            value = self._writes[key]
            if value is None:
                raise KeyNotFoundError(f"key {key!r} was deleted in this transaction")
            return Entry(key, value, 0, 0)
        self._reads.add(key)
        return self._ledger.get(key, at_tx=self.snapshot)

    def lookup(self, key: bytes) -> Entry | None:
        """Like :meth:`get`, but None for a missing or deleted key (recorded as read all the same)."""
        self._active()
        key = check_key(key)
        if key in self._writes:
            value = self._writes[key]
            return None if value is None else Entry(key, value, 0, 0)
        self._reads.add(key)
        return self._ledger.lookup(key, at_tx=self.snapshot)

    def exists(self, key: bytes) -> bool:
        try:
            self.get(key)
            return True
        except KeyNotFoundError:
            return False

    def set(self, key: bytes, value: bytes) -> None:
        self._active()
        key = check_key(key)
        self._writes[key] = check_value(key, value)
        self._checked.add(key)

    def set_many(self, items: Iterable[tuple[bytes, bytes]], *, blind: bool = False) -> None:
        """Buffer several writes; they commit in this order (after earlier writes).

        ``blind=True`` marks writes to keys no other transaction can write (fresh keys of the
        caller's own design): they are not checked for write-write conflicts, which saves a
        lookup per key. Keys the transaction also read are still checked.
        """
        self._active()
        items = items if type(items) is list else list(items)
        keys = valid_pairs(items)
        if keys is not None:  # all valid: no per-item calls
            if not blind:
                self._checked.update(keys)
            self._writes.update(items)
            return
        # the slow path says what is wrong, and buffers nothing unless every pair is valid
        valid: list[tuple[bytes, bytes]] = []
        for item in items:
            try:
                key, value = item
            except (TypeError, ValueError):
                raise InvalidInputError(f"set_many takes (key, value) pairs, got {item!r:.80}") from None
            if (
                type(key) is bytes
                and type(value) is bytes
                and 0 < len(key) <= MAX_KEY_BYTES
                and len(value) <= MAX_VALUE_BYTES
            ):
                valid.append((key, value))
            else:
                key = check_key(key)
                valid.append((key, check_value(key, value)))
        if not blind:
            self._checked.update(k for k, _ in valid)
        self._writes.update(valid)

    def delete(self, key: bytes) -> None:
        self._active()
        key = check_key(key)
        if not self.exists(key):
            raise KeyNotFoundError(f"key {key!r} does not exist (or is already deleted)")
        self._reads.add(key)
        try:
            self._ledger.get(key, at_tx=self.snapshot)
        except KeyNotFoundError:  # set earlier in this transaction only: just forget the write
            del self._writes[key]
            return
        self._writes[key] = None
        self._checked.add(key)

    def scan(self, prefix: bytes = b"") -> Iterator[Entry]:
        """Live keys under ``prefix`` in this transaction's view, in key order."""
        self._active()
        if type(prefix) is not bytes:  # checked before it is recorded as read
            raise InvalidInputError(f"prefix must be bytes, got {type(prefix).__name__}")
        base = self._ledger.scan(prefix, at_tx=self.snapshot)
        self._prefixes.add(prefix)
        mine = sorted(k for k in self._writes if k.startswith(prefix))
        return _merge(base, mine, self._writes)

    def commit(self, state_root: StateRoot | None = None) -> int | None:
        """Commit; returns the new transaction id (None if nothing was written).
        ``state_root``: as :meth:`kvcore.Ledger.commit` (a version-2 header committing to it)."""
        request = self.request(state_root)
        if request is None:
            return None
        outcome = self._ledger.commit_many([request])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        self.tx_id = outcome
        return outcome

    def request(self, state_root: StateRoot | None = None) -> CommitRequest | None:
        """End the transaction and return what commits it, for :meth:`kvcore.Ledger.commit_many`
        (a group commit; the caller sets :attr:`tx_id` from its outcome), or None if it wrote
        nothing."""
        self._active()
        self._done = True
        if not self._writes:
            return None
        keys = self._checked | self._reads
        snapshot = self.snapshot
        ledger = self._ledger
        last_write = ledger.last_write

        if ledger.unindexed_prefixes:  # writes the index cannot see are blind (Ledger.open)
            keys = {k for k in keys if ledger.indexed(k)}

        def no_conflict(_last: int) -> None:
            for key in keys:
                tx = last_write(key)
                if tx is not None and tx > snapshot:
                    raise ConflictError(
                        f"key {key[:64]!r} was changed by transaction {tx} "
                        f"after this transaction's snapshot {snapshot}",
                        key,
                    )
            for prefix in self._prefixes:
                for key in ledger.keys_ever_written(prefix):
                    tx = last_write(key)
                    if tx is not None and tx > snapshot:
                        raise ConflictError(
                            f"prefix {prefix[:64]!r} changed (key {key[:64]!r}, transaction "
                            f"{tx}) after snapshot {snapshot}",
                            prefix,
                        )

        return CommitRequest(list(self._writes.items()), no_conflict, state_root)

    def rollback(self) -> None:
        self._done = True
        self._writes.clear()
        self._checked.clear()

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


def _merge(base: Iterator[Entry], mine: list[bytes], writes: dict[bytes, bytes | None]) -> Iterator[Entry]:
    i = 0
    for entry in base:
        while i < len(mine) and mine[i] < entry.key:
            value = writes[mine[i]]
            if value is not None:
                yield Entry(mine[i], value, 0, 0)
            i += 1
        if i < len(mine) and mine[i] == entry.key:
            value = writes[mine[i]]
            if value is not None:
                yield Entry(entry.key, value, 0, 0)
            i += 1
            continue
        yield entry
    for key in mine[i:]:
        value = writes[key]
        if value is not None:
            yield Entry(key, value, 0, 0)
