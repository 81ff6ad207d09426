"""``immudoc backup DIR`` and ``immudoc restore DIR``: thin shells over ``Database.backup`` and
``docstore.restore`` (docs/storage.md, "Backup and restore")."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from docstore.cli import output
from docstore.cli.app import FormatOpt, _fmt, app, open_db, settings
from docstore.cli.progress import StageBars


@app.command()
def backup(
    ctx: typer.Context,
    directory: Annotated[str, typer.Argument(metavar="DIR", help="A new or empty directory for the backup.")],
    with_key: Annotated[
        bool, typer.Option("--with-key", help="Also copy the signing key (whoever holds the backup can then sign as the database).")
    ] = False,
    fmt: FormatOpt = None,
) -> None:
    """Back up the whole database (--db, a directory) into DIR: its ledger as of now (a writer
    may go on), and a manifest with that state's root and signed checkpoint; its signing key
    only with --with-key. Collections, schemas, indexes and history are all in the ledger;
    `immudoc restore` rebuilds the rest and checks the copy against the manifest. A database
    on PostgreSQL is backed up with pg_dump.

    Examples:

      immudoc --db ./trial backup /backups/trial-2026-12-06

      immudoc --db ./trial backup /secure/trial-with-key --with-key
    """
    if settings(ctx).server is not None:
        raise typer.BadParameter("back up where the database is (--db), not over --server", param_hint="--server")
    bars = StageBars("backing up ({})")
    try:
        with open_db(ctx) as db:
            manifest = db.backup(directory, with_key=with_key, progress=lambda done, total: bars("transactions", done, total))
    finally:
        bars.close()
    output.emit(
        manifest | {"directory": directory}, _fmt(fmt),
        lambda m: f"backed up transactions 1 to {m['tx_id']} into {m['directory']} (root {m['root']})"
        + ("; with the signing key: keep it safe" if m["with_key"] else "; without the signing key"),
    )


@app.command()
def restore(
    ctx: typer.Context,
    directory: Annotated[str, typer.Argument(metavar="DIR", help="A backup made by `immudoc backup`.")],
    key_file: Annotated[
        Optional[str],
        typer.Option("--key-file", metavar="FILE", help="The signing key to restore with (when the backup has none)."),
    ] = None,
    fmt: FormatOpt = None,
) -> None:
    """Restore the backup in DIR into a new database at --db (a new or empty directory), and
    check it: the copy's state and root must equal the manifest's, and the manifest's
    checkpoint must be signed by its verifier key (or the keys pinned with the global --key)
    and name that state. Without the key in the backup or --key-file, the restored database
    signs with a new key.

    Examples:

      immudoc --db ./trial-restored restore /backups/trial-2026-12-06

      immudoc --db ./trial-restored --key "$(cat trial.vkey)" restore /backups/trial --key-file trial-signing.key
    """
    import docstore

    s = settings(ctx)
    if s.server is not None:
        raise typer.BadParameter("restore makes an embedded database: give --db, not --server", param_hint="--server")
    bars = StageBars("restoring ({})")
    try:
        result = docstore.restore(directory, s.db, key_file=key_file, verifier_keys=list(s.keys) or None,
                                  progress=lambda done, total: bars("transactions", done, total))
    finally:
        bars.close()
    output.emit(
        result | {"directory": directory, "db": s.db}, _fmt(fmt),
        lambda r: f"restored transactions 1 to {r['tx_id']} into {r['db']}: same root and checkpoint as the backup "
        f"(signing key: {r['signing_key']})",
    )


__all__ = ["backup", "restore"]
