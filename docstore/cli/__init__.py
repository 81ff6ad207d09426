"""The ``immudoc`` command: a thin shell over the library (every command is one library call).

Importing this package loads typer only; the library is imported by the commands that use it.
"""

from docstore.cli.app import app, open_db


def main() -> None:
    """Entry point of the ``immudoc`` console script."""
    app(prog_name="immudoc")


__all__ = ["app", "main", "open_db"]
