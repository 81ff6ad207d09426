"""The ``immudoc`` command: a thin shell over the library (every command is one library call)."""

from docstore.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
