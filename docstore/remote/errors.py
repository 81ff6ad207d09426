"""Errors that only a remote database raises (transport, authentication, deadlines).

Everything the server's library raises reaches the client as the same exception type as the
embedded API (``DuplicateIdError``, ``ConflictError``, ...), with the server's message; these
classes cover what has no embedded counterpart. All derive from :class:`RemoteError`, itself a
:class:`docstore.DocstoreError`. ``code`` is the gRPC status code's name.
"""

from __future__ import annotations

from docstore.errors import DocstoreError


class RemoteError(DocstoreError):
    """A call to the server failed for a reason of its own (``code``: the gRPC status name)."""

    idempotency_key: str | None = None
    """For a write that failed this way (unavailable, past its deadline): the key to send it
    again with, so that it is committed at most once (docs/errors.md)."""

    def __init__(self, message: str, code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.code = code


class UnavailableError(RemoteError, ConnectionError):
    """The server cannot be reached, or is shutting down."""


class AuthenticationError(RemoteError, PermissionError):
    """No bearer token, or one the server does not know (gRPC UNAUTHENTICATED)."""


class PermissionDeniedError(RemoteError, PermissionError):
    """The token's role does not allow the call, e.g. a write with a read-only token."""


class MessageTooLargeError(RemoteError):
    """A request (or a reply) is larger than the message limit (gRPC RESOURCE_EXHAUSTED); a
    request refused so wrote nothing. Send less at once, or raise ``max_message_mb``."""


class DeadlineExceededError(RemoteError, TimeoutError):
    """The call did not finish within its deadline (``timeout=``)."""


__all__ = [
    "AuthenticationError",
    "DeadlineExceededError",
    "MessageTooLargeError",
    "PermissionDeniedError",
    "RemoteError",
    "UnavailableError",
]
