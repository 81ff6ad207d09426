"""The ledger's size limits and the checks of its arguments (keys, values, ``(key, value)``
pairs, transaction ids), shared by the ledger, its transactions and its prover.

A leaf module: it imports nothing of kvcore but its errors, so every other module may import
it. The limits are re-exported by :mod:`kvcore` and :mod:`kvcore.ledger`.
"""

from __future__ import annotations

from typing import Any

from kvcore.errors import InvalidInputError, LimitError, TxNotFoundError, printable

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 32 * 1024 * 1024
MAX_TX_ENTRIES = 1 << 20
MAX_TX_BYTES = 256 * 1024 * 1024


def check_key(key: object) -> bytes:
    """``key`` as bytes (a bytearray or memoryview is copied); InvalidInputError if it is not
    bytes-like, LimitError if it is empty or longer than MAX_KEY_BYTES."""
    if type(key) is not bytes:
        if not isinstance(key, (bytearray, memoryview)):
            raise InvalidInputError(f"keys are bytes, got {type(key).__name__}")
        key = bytes(key)  # then apply the same limits as to bytes
    if not key:
        raise LimitError("a key cannot be empty")
    if len(key) > MAX_KEY_BYTES:
        raise LimitError(f"key of {len(key)} bytes exceeds the limit of {MAX_KEY_BYTES} bytes")
    return key


def check_value(key: bytes, value: object) -> bytes:
    """``value`` (of ``key``, named in errors) as bytes; InvalidInputError if it is not
    bytes-like, LimitError if it is longer than MAX_VALUE_BYTES."""
    if type(value) is not bytes:
        if not isinstance(value, (bytearray, memoryview)):
            raise InvalidInputError(f"values are bytes, got {type(value).__name__} for key {printable(key)}")
        value = bytes(value)  # then apply the same limit as to bytes
    if len(value) > MAX_VALUE_BYTES:
        raise LimitError(
            f"value of {len(value)} bytes for key {printable(key)} exceeds the limit of "
            f"{MAX_VALUE_BYTES} bytes"
        )
    return value


_BYTES, _TUPLE, _PAIR = {bytes}, {tuple}, {2}


def valid_pairs(items: list[Any]) -> tuple[bytes, ...] | None:
    """The keys of ``items`` if every item is a ``(bytes key, bytes value)`` tuple within the
    limits (checked a column at a time, in C loops), else None: check one by one to learn why."""
    if not items or set(map(type, items)) != _TUPLE or set(map(len, items)) != _PAIR:
        return None
    keys, values = zip(*items)
    if (
        set(map(type, keys)) == _BYTES
        and set(map(type, values)) == _BYTES
        and 0 < min(map(len, keys))
        and max(map(len, keys)) <= MAX_KEY_BYTES
        and max(map(len, values)) <= MAX_VALUE_BYTES
    ):
        return keys
    return None


def check_tx(tx_id: object, tx_count: int) -> None:
    """TxNotFoundError unless ``tx_id`` is the id of one of ``tx_count`` committed
    transactions (an int from 1 to ``tx_count``; not a bool or a float that equals one)."""
    if type(tx_id) is not int or not 1 <= tx_id <= tx_count:
        raise TxNotFoundError(f"transaction {tx_id!r} does not exist (the ledger is at {tx_count})")
