"""Bearer tokens: who may call, and who may write.

A tokens file is either JSON — ``{"<token>": "read" | "write", ...}`` or
``[{"token": "<token>", "role": "read" | "write", "name": "<who>"}, ...]`` (``name``
optional) — or text, one ``<token> <role> [<name>]`` per line (blank lines and lines
starting with ``#`` are ignored). With tokens configured, every call but the health check must
carry ``authorization: Bearer <token>``. A token's name is the principal the server records as
the ``user`` of the transactions written with it (docstore.documents.txmeta).
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any

ROLES = ("read", "write")


class TokenFileError(ValueError):
    """The tokens file cannot be read or is malformed."""


def load_tokens(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{token: role}`` from a tokens file (see the module)."""
    return {token: role for token, (role, _name) in load_named_tokens(path).items()}


def load_named_tokens(path: str | os.PathLike[str]) -> dict[str, tuple[str, str | None]]:
    """``{token: (role, name or None)}`` from a tokens file (see the module)."""
    path = os.fspath(path)

    def bad(reason: str) -> TokenFileError:
        return TokenFileError(f"tokens file {path!r}: {reason}")

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise bad(f"cannot read it: {e.strerror}") from None
    pairs: list[tuple[Any, Any, Any]] = []
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise bad(f"not valid JSON: {e}") from None
        if isinstance(data, dict):
            pairs = [(t, r, None) for t, r in data.items()]
        else:
            for item in data:
                if not isinstance(item, dict) or not {"token", "role"} <= set(item) <= {"token", "role", "name"}:
                    raise bad(f'each entry is {{"token": ..., "role": ..., "name": ... (optional)}}, got {item!r}')
                pairs.append((item["token"], item["role"], item.get("name")))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 2)
            if len(parts) < 2:
                raise bad(f"line {n}: expected '<token> <role> [<name>]'")
            pairs.append((parts[0], parts[1], parts[2].strip() if len(parts) == 3 else None))
    tokens: dict[str, tuple[str, str | None]] = {}
    for token, role, name in pairs:
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise bad("a token is a non-empty string without spaces")
        if role not in ROLES:
            raise bad(f"role {role!r} is not 'read' or 'write'")
        if token in tokens:
            raise bad("a token is listed twice")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 256 or not name.isprintable()):
            raise bad(f"a token's name is 1 to 256 printable characters, got {name!r}")
        tokens[token] = (role, name)
    if not tokens:
        raise bad("it lists no token")
    return tokens


class Authorizer:
    """Checks a call's bearer token; ``None`` tokens means authentication is off."""

    def __init__(self, tokens: dict[str, str] | dict[str, tuple[str, str | None]] | None) -> None:
        self._tokens = None if tokens is None else [
            (t.encode(), v if isinstance(v, tuple) else (v, None)) for t, v in tokens.items()
        ]

    @property
    def enabled(self) -> bool:
        return self._tokens is not None

    def role(self, metadata: Any) -> str | None:
        """The caller's role ("read"/"write"), "" with auth off, None if not authenticated."""
        if self._tokens is None:
            return ""
        found = self._match(metadata)
        return None if found is None else found[0]

    def principal(self, metadata: Any) -> str | None:
        """The name of the caller's token, None if it has none (or auth is off)."""
        if self._tokens is None:
            return None
        found = self._match(metadata)
        return None if found is None else found[1]

    def _match(self, metadata: Any) -> tuple[str, str | None] | None:
        header = None
        for key, value in metadata or ():
            if key == "authorization":
                header = value
                break
        if not isinstance(header, str) or not header.startswith("Bearer "):
            return None
        given = header[len("Bearer ") :].strip().encode()
        found = None
        for token, entry in self._tokens or ():  # compare with every token in constant time
            if hmac.compare_digest(token, given):
                found = entry
        return found
