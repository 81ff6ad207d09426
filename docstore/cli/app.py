"""Typer application. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="immudoc",
    help="immudoc: a verifiable document database on an append-only Merkle ledger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """immudoc: a verifiable document database on an append-only Merkle ledger."""


@app.command()
def demo(
    entries: int = typer.Option(5000, help="How many key/value entries to write."),
) -> None:
    """Write and verify entries in a temporary ledger, and print its state."""
    from docstore.cli.demo import run_demo

    run_demo(entries, typer.echo)
