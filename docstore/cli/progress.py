"""Progress bars on a terminal's stderr for long library calls (the library reports
``(done, total)``; the CLI draws)."""

from __future__ import annotations

import sys
from typing import Any

import typer

PROGRESS_MIN = 1000
"""Units (documents, transactions, entries) below which a bar is not worth showing."""


class StageBars:
    """Progress bars on a terminal's stderr for the stages of :func:`docstore.open` that
    build derived state from the log (one bar a stage)."""

    def __init__(self, label: str = "building the {} from the log") -> None:
        self.label = label
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.close()
            self.stage = stage
            if total >= PROGRESS_MIN and sys.stderr.isatty():
                self.bar = typer.progressbar(length=total, label=self.label.format(stage), file=sys.stderr)
                self.bar.__enter__()
        if self.bar is not None:
            self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
        self.bar = None
