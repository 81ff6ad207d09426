"""What the client and the server agree on besides the .proto: JSON payloads, states and
consistency proofs as messages, and exceptions carried in trailing metadata.

JSON payloads are exact: orjson when it is exact, the standard library otherwise (integers
beyond 64 bits, NaN and infinities, which orjson would turn into floats or ``null``), so the
server's library sees precisely the value the caller passed and fails, or not, as it would
embedded.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import grpc
import orjson

import kvcore

from docstore import errors as derrors
from docstore.remote import errors as rerrors
from docstore.rpc import immudoc_pb2 as pb

API_VERSION = "immudoc.v1"
REPLY_FLOOR_BYTES = 32 * 1024 * 1024
"""Replies may always be this large, whatever the message limit: a reply to a write carries the
written document (at most 4 MiB flattened, up to ~2.5x that as JSON), and a write must never
commit on the server and then fail to reach the client. Requests and stream pages keep to the
configured limit."""
SERVICE = "immudoc.v1.Docstore"
HEALTH_SERVICE = "grpc.health.v1.Health"
ERROR_KEY = "immudoc-error-bin"

_INF = float("inf")
_BIG_DIGITS = re.compile(rb"\d{20}")  # a run this long may be an integer orjson cannot read


# =========================================================================== JSON
class Unsendable(TypeError):
    """A value that has no JSON form (a set, bytes, a tuple, a non-string key, ...)."""


def _orjson_exact(obj: Any, strict: bool) -> bool:
    """Whether orjson encodes ``obj`` exactly; raises Unsendable for non-JSON values.

    ``strict`` (documents) accepts exactly the types documents may hold, as the embedded API
    does; otherwise (filters, sort specs, updates, ...) subclasses and tuples are accepted too.
    """
    exact = True
    stack = [obj]
    pop, push, extend = stack.pop, stack.append, stack.extend
    while stack:
        o = pop()
        t = type(o)
        if t is str or t is bool or o is None:
            continue
        if t is dict or not strict and isinstance(o, dict):
            for k, v in o.items():
                if not (type(k) is str or not strict and isinstance(k, str)):
                    raise Unsendable(f"non-string key {k!r}")
                push(v)
        elif t is list or not strict and isinstance(o, (list, tuple)):
            extend(o)
        elif t is int or not strict and isinstance(o, int):
            if not -(2**63) <= o < 2**64:
                exact = False
        elif t is float or not strict and isinstance(o, float):
            if o != o or o == _INF or o == -_INF:
                exact = False
        elif not strict and isinstance(o, str):
            continue
        else:
            raise Unsendable(
                f"unsupported type {t.__name__} (only dict, list, str, int, float, bool and None "
                "are stored, subclasses excluded)"
            )
    return exact


def dumps(obj: Any, error: type[Exception] = derrors.QueryError, strict: bool = False) -> bytes:
    """JSON bytes of ``obj``; ``error`` (with the reason) if it has no JSON form."""
    try:
        exact = _orjson_exact(obj, strict)
        if exact:
            return orjson.dumps(obj)
    except Unsendable as e:
        raise error(f"cannot send this value: {e}") from None
    except TypeError as e:  # e.g. nested deeper than orjson's recursion limit
        if "ecursion" not in str(e):
            raise error(f"cannot send this value: {e}") from None
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode()
    except (TypeError, ValueError, RecursionError) as e:
        raise error(f"cannot send this value: {e}") from None


def dumps_doc(doc: Any) -> bytes:
    """JSON bytes of a document: exactly the types a document may hold (else
    InvalidDocumentError, as embedded)."""
    return dumps(doc, derrors.InvalidDocumentError, strict=True)


def dumps_opt(obj: Any, error: type[Exception] = derrors.QueryError) -> bytes:
    """``b""`` for None (an absent optional payload), else :func:`dumps`."""
    return b"" if obj is None else dumps(obj, error)


def loads(data: bytes, error: type[Exception] = derrors.QueryError) -> Any:
    """The value of JSON bytes, exactly (integers of any size, floats bit for bit)."""
    try:
        if not _BIG_DIGITS.search(data):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass  # NaN / Infinity written by the standard library, or not JSON at all
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise error(f"payload is not JSON: {e}") from None


def loads_opt(data: bytes, error: type[Exception] = derrors.QueryError) -> Any:
    return None if not data else loads(data, error)


# ====================================================================== states, proofs
def state_to_pb(state: kvcore.State, name: str = "state") -> pb.LedgerState:
    """A state as a message; QueryError (as embedded) for what names no transaction of any ledger."""
    if not isinstance(state, kvcore.State):
        raise derrors.QueryError(f"{name} must be a kvcore.State, got {type(state).__name__}")
    if type(state.tx_id) is not int or not 0 <= state.tx_id < 2**64:
        raise derrors.QueryError(f"{name} names no transaction: {state.tx_id!r}")
    if type(state.root) is not bytes or len(state.root) != 32:
        raise derrors.QueryError(f"{name} must hold a 32-byte root")
    return pb.LedgerState(tx_id=state.tx_id, root=state.root)


def state_from_pb(msg: pb.LedgerState) -> kvcore.State:
    if len(msg.root) != 32:
        raise derrors.VerificationError(f"a ledger state's root must be 32 bytes, got {len(msg.root)}")
    return kvcore.State(msg.tx_id, bytes(msg.root))


def opt_state(parent: Any, field: str) -> kvcore.State | None:
    """The state in message field ``field`` of ``parent``, None if unset."""
    return state_from_pb(getattr(parent, field)) if parent.HasField(field) else None


def consistency_to_pb(proof: kvcore.ConsistencyProof) -> pb.ConsistencyProof:
    return pb.ConsistencyProof(old_tx_id=proof.old_tx_id, new_tx_id=proof.new_tx_id, path=list(proof.path))


def consistency_from_pb(msg: pb.ConsistencyProof) -> kvcore.ConsistencyProof:
    path = [bytes(h) for h in msg.path]
    if any(len(h) != 32 for h in path):
        raise derrors.VerificationError("a consistency proof holds a hash that is not 32 bytes")
    return kvcore.ConsistencyProof(msg.old_tx_id, msg.new_tx_id, path)


MAX_TIME_KEY = "immudoc-max-time-ms"
"""Call metadata: the milliseconds the call's queries may run (a client's ``max_time_ms``)."""


def max_time_seconds(metadata: Any) -> float | None:
    """The ``max_time_ms`` a call's metadata carries, in seconds (None: none or not a whole
    number of milliseconds from 1 up; then the server's own limit applies)."""
    for key, value in metadata or ():
        if key == MAX_TIME_KEY:
            try:
                ms = int(value)
            except (TypeError, ValueError):
                return None
            return ms / 1000 if ms > 0 else None
    return None


IDEMPOTENCY_KEY = "immudoc-idempotency-key"
"""Call metadata: the idempotency key of a write (docstore.transactions.requests)."""


def idempotency_key(metadata: Any) -> str | None:
    """The idempotency key a write's metadata carries (checked by the library), or None."""
    for key, value in metadata or ():
        if key == IDEMPOTENCY_KEY:
            return value if isinstance(value, str) else None
    return None


TX_META = "immudoc-tx-meta"
"""Call metadata of a write: its transaction's ``reason`` and ``meta``, as JSON
(docstore.documents.txmeta); the ``user`` is the principal the server authenticated."""


def tx_meta(metadata: Any) -> dict[str, Any]:
    """``{"reason": ..., "meta": ...}`` a write's metadata carries ({} if none); QueryError if
    it is not a JSON object of those (their values are checked by the library)."""
    for key, value in metadata or ():
        if key == TX_META:
            try:
                got = json.loads(value) if isinstance(value, str) else None
            except ValueError:
                got = None
            if not isinstance(got, dict) or not set(got) <= {"reason", "meta"}:
                raise derrors.QueryError(f"call metadata {TX_META} is a JSON object of reason and meta")
            return got
    return {}


# ============================================================================ errors
_CODES: list[tuple[type[BaseException] | tuple[type[BaseException], ...], grpc.StatusCode]] = [
    (kvcore.ConflictError, grpc.StatusCode.ABORTED),  # docstore's ConflictError derives from it
    ((derrors.NotFoundError, kvcore.KeyNotFoundError, kvcore.TxNotFoundError), grpc.StatusCode.NOT_FOUND),
    (
        (derrors.DuplicateIdError, derrors.DuplicateKeyError, derrors.CollectionExistsError),
        grpc.StatusCode.ALREADY_EXISTS,
    ),
    ((derrors.VerificationError, kvcore.VerificationError), grpc.StatusCode.FAILED_PRECONDITION),
    ((derrors.CorruptDataError, kvcore.CorruptionError), grpc.StatusCode.DATA_LOSS),
    ((kvcore.ClosedError, kvcore.LockedError), grpc.StatusCode.UNAVAILABLE),
    (derrors.QueryTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (kvcore.ReadOnlyError, grpc.StatusCode.FAILED_PRECONDITION),
    ((ValueError, TypeError), grpc.StatusCode.INVALID_ARGUMENT),
    (LookupError, grpc.StatusCode.NOT_FOUND),
]

# Modules whose exception classes a client will raise by name (nothing else is imported).
_ERROR_MODULES = ("docstore.errors", "kvcore.errors", "docstore.remote.errors")
_BUILTINS = {c.__name__: c for c in (ValueError, TypeError, LookupError, KeyError, IndexError)}


def is_api_error(exc: BaseException) -> bool:
    """Errors of the library's API (sent to the caller as such), as opposed to server bugs."""
    return isinstance(exc, (derrors.DocstoreError, kvcore.KvError))


def encode_error(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """(status code, message, trailing metadata) that carry ``exc`` to the client."""
    code = grpc.StatusCode.UNKNOWN
    for classes, c in _CODES:
        if isinstance(exc, classes):
            code = c
            break
    t = type(exc)
    info: dict[str, Any] = {"type": f"{t.__module__}.{t.__qualname__}", "message": str(exc)}
    if isinstance(getattr(exc, "path", None), str):
        info["path"] = exc.path  # type: ignore[attr-defined]
    errs = getattr(exc, "errors", None)
    if isinstance(errs, list):
        info["errors"] = [list(e) if isinstance(e, tuple) else e for e in errs]
    try:
        blob = dumps(info)
    except derrors.DocstoreError:
        blob = json.dumps({"type": info["type"], "message": info["message"]}, default=str).encode()
    return code, str(exc), ((ERROR_KEY, blob),)


def _resolve(type_name: Any) -> type[BaseException] | None:
    if not isinstance(type_name, str) or "." not in type_name:
        return None
    module, _, name = type_name.rpartition(".")
    if module == "builtins":
        return _BUILTINS.get(name)
    if module not in _ERROR_MODULES:
        return None
    cls = getattr(importlib.import_module(module), name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return None


def _build(cls: type[BaseException], message: str) -> BaseException:
    exc = cls.__new__(cls)
    BaseException.__init__(exc, message)
    return exc


_STATUS_ERRORS: dict[grpc.StatusCode, type[rerrors.RemoteError]] = {
    grpc.StatusCode.UNAUTHENTICATED: rerrors.AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: rerrors.PermissionDeniedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: rerrors.DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: rerrors.UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: rerrors.MessageTooLargeError,
}


def decode_error(err: grpc.RpcError) -> BaseException:
    """The exception a failed call stands for: the server's own type when it sent one."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or str(err)
    meta = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    blob = next((v for k, v in (meta or ()) if k == ERROR_KEY), None)
    if blob is not None:
        try:
            info = loads(blob if isinstance(blob, bytes) else blob.encode())
        except derrors.DocstoreError:
            info = None
        if isinstance(info, dict):
            cls = _resolve(info.get("type"))
            message = info["message"] if isinstance(info.get("message"), str) else str(details or "")
            if cls is not None:
                exc = _build(cls, message)
                if isinstance(info.get("path"), str):
                    exc.path = info["path"]  # type: ignore[attr-defined]
                if isinstance(info.get("errors"), list):
                    exc.errors = [tuple(e) if isinstance(e, list) else e for e in info["errors"]]  # type: ignore[attr-defined]
                if isinstance(exc, rerrors.RemoteError):
                    exc.code = code.name if code else "UNKNOWN"
                return exc
    cls = _STATUS_ERRORS.get(code, rerrors.RemoteError)
    name = code.name if code is not None else "UNKNOWN"
    return cls(f"{name}: {details}", name)
