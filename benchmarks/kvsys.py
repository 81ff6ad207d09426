"""The key-value stores measured: kvcore and LMDB (``sync=True``: every commit is durable)."""

from __future__ import annotations

import os

KVCORE = "immudoc kvcore"
LMDB = "lmdb (sync)"


class KvcoreKV:
    name = KVCORE

    def __init__(self, path: str) -> None:
        import kvcore

        self.path = path
        self.led = kvcore.Ledger.open(path)

    def write_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self.led.set_all(pairs)

    def put(self, key: bytes, value: bytes) -> None:
        self.led.set(key, value)

    def get(self, key: bytes) -> bytes:
        return self.led.get(key).value

    def get_many(self, keys: list[bytes]) -> None:
        get = self.led.get
        for k in keys:
            get(k)

    def close(self) -> None:
        self.led.close()


class LmdbKV:
    name = LMDB

    def __init__(self, path: str) -> None:
        import lmdb

        self.path = path
        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(path, map_size=1 << 36, sync=True, metasync=True)

    def write_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            txn.cursor().putmulti(pairs)

    def put(self, key: bytes, value: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key, value)

    def get(self, key: bytes) -> bytes:
        with self.env.begin() as txn:
            return txn.get(key)

    def get_many(self, keys: list[bytes]) -> None:
        """One read transaction for the whole chunk (LMDB's fastest way to read)."""
        with self.env.begin() as txn:
            get = txn.get
            for k in keys:
                get(k)

    def get_many_txn_each(self, keys: list[bytes]) -> None:
        begin = self.env.begin
        for k in keys:
            with begin() as txn:
                txn.get(k)

    def close(self) -> None:
        self.env.close()
