"""The database's signing keys, kept in a key file (mode 0600).

One signer key string (``PRIVATE+KEY+...``, see :mod:`docstore.proofs.note`) per line: the
first is the current key, any further lines are earlier keys that still co-sign every
checkpoint after a rotation, so verifiers that pin an earlier key keep verifying until they
learn the new one. Lines starting with ``#`` are comments.
"""

from __future__ import annotations

import errno
import os
import secrets

from kvcore.storage import atomic

from docstore.errors import StorageError
from docstore.proofs.note import NoteError, Signer, check_key_name

KEY_FILE = "signing.key"
"""The key file's name in a database directory (unless a path is given)."""
KEY_FILE_ENV = "IMMUDOC_KEY_FILE"
MAX_KEYS = 8


def default_origin() -> str:
    """A new ledger's name: unique, without spaces or ``+`` (a schema-less URL path)."""
    return f"immudoc/{secrets.token_hex(8)}"


def load(path: str) -> list[Signer]:
    """The signers in a key file, current first. StorageError if it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 16)
    except OSError as e:
        raise StorageError(f"cannot read the signing key file {path!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise StorageError(f"the signing key file {path!r} is not text") from None
    signers = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            signers.append(Signer.parse(line))
        except NoteError as e:
            raise StorageError(f"the signing key file {path!r}, line {n}: {e}") from None
    if not signers:
        raise StorageError(f"the signing key file {path!r} holds no key")
    if len({s.name for s in signers}) != 1:
        raise StorageError(f"the keys in {path!r} have different names: one ledger signs under one name")
    return signers


def write(path: str, signers: list[Signer], *, create: bool = False) -> None:
    """Write the key file atomically (mode 0600); with ``create``, refuse to replace one."""
    text = (
        "# immudoc signing keys: the first signs checkpoints, the others co-sign after a rotation.\n"
        "# Keep this file secret; publish only `immudoc key` (the verifier keys).\n"
        + "".join(s.private_string() + "\n" for s in signers)
    )
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if create:
            try:
                os.link(tmp, path)  # fails if another process made one meanwhile
            finally:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
        atomic.fsync_dir(path)
    except OSError as e:
        if create and e.errno == errno.EEXIST:
            return
        raise StorageError(f"cannot write the signing key file {path!r}: {e.strerror}") from None


def load_or_create(path: str, origin: str | None, create: bool) -> list[Signer] | None:
    """The key file's signers; if it is missing, a new key (named ``origin``) when ``create``,
    else None."""
    if not os.path.exists(path):
        if not create:
            return None
        name = check_key_name(origin) if origin is not None else default_origin()
        write(path, [Signer.generate(name)], create=True)
    signers = load(path)
    if origin is not None and signers[0].name != origin:
        raise StorageError(
            f"the signing key in {path!r} is named {signers[0].name!r}, not {origin!r} (a ledger keeps its name)"
        )
    return signers
