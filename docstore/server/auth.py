"""Bearer tokens: who may call, and who may write.

A tokens file is either JSON — ``{"<token>": "read" | "write", ...}`` or
``[{"token": "<token>", "role": "read" | "write"}, ...]`` — or text, one ``<token> <role>``
per line (blank lines and lines starting with ``#`` are ignored). With tokens configured,
every call but the health check must carry ``authorization: Bearer <token>``.
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
    path = os.fspath(path)

    def bad(reason: str) -> TokenFileError:
        return TokenFileError(f"tokens file {path!r}: {reason}")

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise bad(f"cannot read it: {e.strerror}") from None
    pairs: list[tuple[Any, Any]] = []
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as e:
            raise bad(f"not valid JSON: {e}") from None
        if isinstance(data, dict):
            pairs = list(data.items())
        else:
            for item in data:
                if not isinstance(item, dict) or set(item) != {"token", "role"}:
                    raise bad(f'each entry is {{"token": ..., "role": ...}}, got {item!r}')
                pairs.append((item["token"], item["role"]))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise bad(f"line {n}: expected '<token> <role>'")
            pairs.append((parts[0], parts[1]))
    tokens: dict[str, str] = {}
    for token, role in pairs:
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise bad("a token is a non-empty string without spaces")
        if role not in ROLES:
            raise bad(f"role {role!r} is not 'read' or 'write'")
        if token in tokens:
            raise bad("a token is listed twice")
        tokens[token] = role
    if not tokens:
        raise bad("it lists no token")
    return tokens


class Authorizer:
    """Checks a call's bearer token; ``None`` tokens means authentication is off."""

    def __init__(self, tokens: dict[str, str] | None) -> None:
        self._tokens = None if tokens is None else [(t.encode(), r) for t, r in tokens.items()]

    @property
    def enabled(self) -> bool:
        return self._tokens is not None

    def role(self, metadata: Any) -> str | None:
        """The caller's role ("read"/"write"), "" with auth off, None if not authenticated."""
        if self._tokens is None:
            return ""
        header = None
        for key, value in metadata or ():
            if key == "authorization":
                header = value
                break
        if not isinstance(header, str) or not header.startswith("Bearer "):
            return None
        given = header[len("Bearer ") :].strip().encode()
        found = None
        for token, role in self._tokens:  # compare with every token in constant time
            if hmac.compare_digest(token, given):
                found = role
        return found
