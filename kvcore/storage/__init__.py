"""Where a ledger's bytes live. The ledger's logic talks only to :class:`Storage`."""

from kvcore.storage.base import Storage
from kvcore.storage.file import FileStorage

__all__ = ["Storage", "FileStorage"]
