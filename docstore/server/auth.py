"""Bearer tokens: who may call, what each may do in which collection, and under what name.

A tokens file is JSON or text. JSON: ``{"<token>": "<role>", ...}``, or a list of entries::

    [{"token": "t-ann", "name": "Ann Smith", "role": "write"},
     {"token": "t-site7", "name": "Site 7", "roles": {"visits": "write", "*": "read"}},
     {"token": "t-qa", "name": "QA", "role": "read", "audit": true}]

Text: one ``<token> <role> [<name>]`` per line (blank lines and lines starting with ``#`` are
ignored). Roles, each allowing what the one before allows: ``read`` (reads and proofs),
``write`` (document writes), ``admin`` (collection definitions: create, schema, indexes, the
reason rule; and the full audit). ``role`` applies to every collection; ``roles`` maps
collection names to roles, ``"*"`` standing for the others (a collection it does not name,
without ``"*"``, is closed to the token). ``audit: true`` lets a token below ``admin`` run the
full audit. A token's ``name`` is the principal the server records as the ``user`` of the
transactions written with it (docstore.documents.txmeta). The ledger-wide reads that show
every transaction's who and why (the log, transaction proofs) need ``read`` on ``"*"``.

With tokens configured, every call but the health check must carry ``authorization: Bearer
<token>``. The server reads the file again when it changes (its modification time or size,
looked at most once a second): tokens are added, changed and revoked without a restart; a
file that no longer parses keeps the tokens in force and says why on stderr.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

ROLES = ("read", "write", "admin")
RANK = {role: i + 1 for i, role in enumerate(ROLES)}
RELOAD_EVERY = 1.0
"""Seconds between two looks at the tokens file."""


class TokenFileError(ValueError):
    """The tokens file cannot be read or is malformed."""


@dataclass(frozen=True)
class Grant:
    """What one token may do: a role per collection (``"*"``: any other), the full audit, and
    the name it writes under."""

    roles: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    audit: bool = False

    def role_in(self, collection: str | None) -> str | None:
        """The token's role in ``collection`` (None: the ledger as a whole, ``"*"``)."""
        if collection is not None and collection in self.roles:
            return self.roles[collection]
        return self.roles.get("*")

    def may(self, need: str, collection: str | None) -> bool:
        """Whether the token's role in ``collection`` is at least ``need``."""
        role = self.role_in(collection)
        return role is not None and RANK[role] >= RANK[need]

    def may_somewhere(self, need: str) -> bool:
        return any(RANK[r] >= RANK[need] for r in self.roles.values())

    @property
    def role(self) -> str:
        """The role to report (Info): the one of ``"*"``, else the highest it has."""
        return self.roles.get("*") or max(self.roles.values(), key=RANK.__getitem__, default="")


ALL = Grant({"*": "admin"}, None, True)
"""Authentication off: everything is allowed."""


def load_grants(path: str | os.PathLike[str]) -> dict[str, Grant]:
    """``{token: Grant}`` from a tokens file (see the module); TokenFileError if malformed."""
    path = os.fspath(path)

    def bad(reason: str) -> TokenFileError:
        return TokenFileError(f"tokens file {path!r}: {reason}")

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise bad(f"cannot read it: {e.strerror}") from None
    entries: list[dict[str, Any]] = []
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise bad(f"not valid JSON: {e}") from None
        if isinstance(data, dict):
            entries = [{"token": t, "role": r} for t, r in data.items()]
        elif isinstance(data, list):
            for item in data:
                keys = set(item) if isinstance(item, dict) else set()
                if "token" not in keys or not keys <= {"token", "role", "roles", "name", "audit"} or (
                    ("role" in keys) == ("roles" in keys)
                ):
                    raise bad(f'each entry is {{"token", "role" or "roles", "name" and "audit" optional}}, got {item!r}')
                entries.append(item)
        else:
            raise bad("JSON must be an object of tokens and roles, or a list of entries")
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 2:
                raise bad(f"line {n}: expected '<token> <role> [<name>]'")
            entries.append({"token": parts[0], "role": parts[1], "name": parts[2].strip() if len(parts) == 3 else None})
    grants: dict[str, Grant] = {}
    for entry in entries:
        token, name, audit = entry["token"], entry.get("name"), entry.get("audit", False)
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise bad("a token is a non-empty string without spaces")
        roles = {"*": entry["role"]} if "role" in entry else entry["roles"]
        if not isinstance(roles, dict) or not roles:
            raise bad(f"roles is an object of collection names (or \"*\") and roles, got {roles!r}")
        for coll, role in roles.items():
            if role not in ROLES:
                raise bad(f"role {role!r} is not 'read', 'write' or 'admin'")
            if not isinstance(coll, str) or not coll:
                raise bad(f"a collection name in roles is a non-empty string, got {coll!r}")
        if token in grants:
            raise bad("a token is listed twice")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 256 or not name.isprintable()):
            raise bad(f"a token's name is 1 to 256 printable characters, got {name!r}")
        if type(audit) is not bool:
            raise bad(f"audit is true or false, got {audit!r}")
        grants[token] = Grant(dict(roles), name, audit)
    if not grants:
        raise bad("it lists no token")
    return grants


class Authorizer:
    """Checks a call's bearer token: ``Authorizer(None)`` is authentication off; with a
    ``path``, the tokens are read again when the file changes (see the module)."""

    def __init__(self, tokens: dict[str, Grant] | None, path: str | None = None) -> None:
        self._tokens: list[tuple[bytes, Grant]] | None = None if tokens is None else self._table(tokens)
        self._path = path
        self._seen = self._signature()
        self._looked = time.monotonic()
        self._lock = threading.Lock()

    @staticmethod
    def _table(tokens: dict[str, Grant]) -> list[tuple[bytes, Grant]]:
        return [(t.encode(), g) for t, g in tokens.items()]

    @property
    def enabled(self) -> bool:
        return self._tokens is not None

    def _signature(self) -> bytes | None:
        """The tokens file's SHA-256 (its content: a same-size edit within one clock tick, or
        a copy keeping the old time, is still seen), None if it cannot be read."""
        if self._path is None:
            return None
        try:
            with open(self._path, "rb") as f:
                return hashlib.sha256(f.read()).digest()
        except OSError:
            return None

    def _reload(self) -> None:
        if self._path is None or time.monotonic() - self._looked < RELOAD_EVERY:
            return
        with self._lock:
            self._looked = time.monotonic()
            sig = self._signature()
            if sig is None:
                if self._seen is not None:
                    print(f"immudoc server: cannot read the tokens file {self._path!r}: kept the tokens in force",
                          file=sys.stderr, flush=True)
                    self._seen = None
                return
            if sig == self._seen:
                return
            self._seen = sig
            try:
                self._tokens = self._table(load_grants(self._path))
            except TokenFileError as e:
                print(f"immudoc server: kept the tokens in force: {e}", file=sys.stderr, flush=True)
                return
        print(f"immudoc server: tokens file reloaded ({len(self._tokens or ())} tokens)", file=sys.stderr, flush=True)

    def grant(self, metadata: Any) -> Grant | None:
        """What the caller may do (ALL with auth off), None if not authenticated."""
        if self._tokens is None:
            return ALL
        self._reload()
        header = None
        for key, value in metadata or ():
            if key == "authorization":
                header = value
                break
        if not isinstance(header, str) or not header.startswith("Bearer "):
            return None
        given = header[len("Bearer ") :].strip().encode()
        found = None
        for token, grant in self._tokens or ():  # compare with every token in constant time
            if hmac.compare_digest(token, given):
                found = grant
        return found

    def role(self, metadata: Any) -> str | None:
        """The caller's role to report ("read"/"write"/"admin"), "" with auth off, None if not
        authenticated."""
        if self._tokens is None:
            return ""
        grant = self.grant(metadata)
        return None if grant is None else grant.role
