"""The remote database: ``docstore.connect("host:port", ...)`` and the same interface as
``docstore.open(path)``, with every document ``get`` returns verified against a trusted state.

>>> db = docstore.connect("db.example:3323", state_file="trusted.json", tls="ca.pem",
...                       token=os.environ["IMMUDOC_TOKEN"])          # doctest: +SKIP
>>> db["trials"].get("patient-17")       # proven against trusted.json, which then advances

Importing this package does not import grpc; :func:`connect` does.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from docstore.remote.errors import (
    AuthenticationError,
    DeadlineExceededError,
    MessageTooLargeError,
    PermissionDeniedError,
    RemoteError,
    UnavailableError,
)

if TYPE_CHECKING:
    import kvcore

    from docstore.remote.client import TLS, RemoteDatabase


def connect(
    target: str,
    *,
    state_file: str | os.PathLike[str] | None = None,
    trusted_state: kvcore.State | str | None = None,
    trust_on_first_use: bool = False,
    verify: bool = True,
    verifier_key: str | list[str] | None = None,
    trust_unsigned: bool = False,
    token: str | None = None,
    tls: bool | str | os.PathLike[str] | dict[str, Any] | TLS | None = None,
    timeout: float | None = 60.0,
    stream_timeout: float | None = None,
    max_message_mb: float = 64.0,
    batch_size: int = 1000,
) -> RemoteDatabase:
    """Connect to an immudoc server (``python -m docstore.server`` / ``immudoc serve``).

    Verified by default: there is no silent trust on first use. Pass the state you trust
    (``trusted_state``: a State or a checkpoint's text, e.g. from an auditor), or a
    ``state_file`` that holds one (it is then kept up to date, written atomically under a
    lock), and pin the server's ``verifier_key`` (``immudoc key`` on the server: a key string
    or a list). The trusted state advances to a newer one only when a pinned key signed that
    state's checkpoint and a consistency proof shows it extends the trusted one.
    ``trust_on_first_use=True`` explicitly accepts the server's current signed checkpoint and
    its keys when ``state_file`` holds nothing yet, and saves both there (as SSH pins a host
    key). ``trust_unsigned=True`` lets a consistency proof alone advance the trusted state (a
    ledger without a key; unsafe against a forger who knows the trusted state: it warns).
    ``verify=False`` turns verification off altogether.

    On connecting, the server must prove that its current state extends the trusted one, or
    VerificationError is raised (a rewritten or rolled-back history).

    ``tls``: None/False for plaintext; True for TLS with the system's CA certificates; a path
    to the PEM CA certificate that signed the server's certificate; or a :class:`TLS` (or a
    dict of its fields: ``ca``, ``cert`` and ``key`` for mutual TLS, ``server_name``).
    ``token``: a bearer token from the server's tokens file. ``timeout``: deadline in seconds of
    each call (``stream_timeout`` for find and history streams; None: none). ``batch_size``:
    documents per message of ``insert_many`` (the whole call stays one transaction).
    """
    from docstore.remote.client import RemoteDatabase

    return RemoteDatabase(
        target,
        state_file=state_file,
        trusted_state=trusted_state,
        trust_on_first_use=trust_on_first_use,
        verify=verify,
        verifier_key=verifier_key,
        trust_unsigned=trust_unsigned,
        token=token,
        tls=tls,
        timeout=timeout,
        stream_timeout=stream_timeout,
        max_message_mb=max_message_mb,
        batch_size=batch_size,
    )


def __getattr__(name: str) -> Any:
    if name in ("RemoteDatabase", "TLS"):
        from docstore.remote import client

        return getattr(client, name)
    if name == "RemoteCollection":
        from docstore.remote.collection import RemoteCollection

        return RemoteCollection
    if name in ("RemoteTransaction", "RemoteTxCollection"):
        from docstore.remote import transaction

        return getattr(transaction, name)
    raise AttributeError(f"module 'docstore.remote' has no attribute {name!r}")


__all__ = [
    "AuthenticationError",
    "DeadlineExceededError",
    "MessageTooLargeError",
    "PermissionDeniedError",
    "RemoteCollection",
    "RemoteDatabase",
    "RemoteError",
    "RemoteTransaction",
    "RemoteTxCollection",
    "TLS",
    "UnavailableError",
    "connect",
]
