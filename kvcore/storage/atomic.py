"""Replacing a small file atomically and durably: what a crash leaves is the old file or the new."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, data: Any, tmp: str) -> None:
    """Write ``data`` as one line of JSON to ``tmp``, fsync it, rename it over ``path`` and
    fsync the directory. Raises OSError (the caller says what it was writing)."""
    write_text(path, json.dumps(data) + "\n", tmp)


def write_text(path: str, text: str, tmp: str) -> None:
    """Write ``text`` (UTF-8) to ``tmp``, fsync it, rename it over ``path`` and fsync the
    directory. Raises OSError (the caller says what it was writing)."""
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path)


def fsync_dir(path: str) -> None:
    """fsync the directory holding ``path`` (so a rename or link in it is durable)."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
