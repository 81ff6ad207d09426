"""The ``immudoc`` command line: a thin shell over the library.

Every command parses its arguments, makes one library call (``docstore.open`` then a
``Database``/``Collection`` method, or ``docstore.verify``), and prints the result. The library
(docstore, kvcore, orjson, jsonschema_rs) is imported inside the commands only, so that
``immudoc --help`` stays fast. Errors become one line on stderr and an exit code through the
single handler in :class:`ImmudocGroup` and the table in :mod:`docstore.cli.errors`.
"""

import os
import sys
import warnings
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup
from typer.exceptions import TyperException

from docstore.cli import output
from docstore.cli.errors import epilog
from docstore.cli.progress import PROGRESS_MIN, StageBars

DEFAULT_DB = "./immudoc-data"


def _one_line_warning(message: Any, category: Any, *_args: Any, **_kw: Any) -> None:
    print(f"immudoc: warning: {message}", file=sys.stderr)


class ImmudocGroup(TyperGroup):
    """The root command group; its ``invoke`` is the one place library errors are reported."""

    def invoke(self, ctx: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning  # e.g. kvcore's RecoveryWarning
                return super().invoke(ctx)
        except TyperException as e:  # a usage error: a global option after the command gets a hint
            self._hint_global_option(ctx, e)
            raise
        except (typer.Exit, typer.Abort, BrokenPipeError):
            raise  # explicit exits, Ctrl-C and closed pipes: typer's business
        except Exception as e:  # noqa: BLE001 - every other error: one line, one exit code
            from docstore.cli.errors import handle

            raise typer.Exit(handle(e)) from None


    def _hint_global_option(self, ctx: Any, e: TyperException) -> None:
        """"No such option: --db" after a command: say that it is a global option, and where it goes."""
        name = getattr(e, "option_name", None)
        message = getattr(e, "message", None)
        if not isinstance(name, str) or not isinstance(message, str):
            return
        for param in self.params:
            if name in getattr(param, "opts", ()):
                metavar = "" if getattr(param, "is_flag", False) else f" {param.metavar or 'VALUE'}"
                sub = getattr(e, "ctx", None)
                path = getattr(sub, "command_path", "") or ""
                command = path.split(" ", 1)[1] if " " in path else "COMMAND"
                e.message = (f"{message}: {name} is a global option: put it before the command: "
                             f"immudoc {name}{metavar} {command} ...")
                e.possibilities = None  # type: ignore[attr-defined]
                return


def _typer(**kw: Any) -> typer.Typer:
    kw.setdefault("add_completion", False)
    return typer.Typer(no_args_is_help=True, rich_markup_mode=None, **kw)


app = _typer(
    name="immudoc",
    cls=ImmudocGroup,
    add_completion=True,  # --install-completion, --show-completion (bash, zsh, fish, PowerShell)
    help=(
        "immudoc: a verifiable JSON document database on an append-only Merkle ledger.\n\n"
        "Output is JSON when stdout is a pipe or a file, a table on a terminal (--format "
        "overrides). Filters, changes and projections are JSON, Mongo style. Start with "
        "`immudoc demo`."
    ),
    epilog=epilog(),
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
collection_app = _typer(help="Create, list and show collections.")
index_app = _typer(help="Create and drop secondary indexes.")
key_app = typer.Typer(
    add_completion=False, rich_markup_mode=None, invoke_without_command=True,
    help="Print the ledger's verifier keys (pin them to verify signed checkpoints); rotate the signing key.",
)
app.add_typer(collection_app, name="collection")
app.add_typer(index_app, name="index")
app.add_typer(key_app, name="key")


# --------------------------------------------------------------------- database resolution
@dataclass
class Settings:
    """Global options (given before the command)."""

    db: str = DEFAULT_DB
    server: Optional[str] = None
    token: Optional[str] = None
    tls_ca: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    state_file: Optional[str] = None
    trust_on_first_use: bool = False
    verify: bool = True
    keys: tuple[str, ...] = ()
    trust_unsigned: bool = False


def settings(ctx: typer.Context) -> Settings:
    found = ctx.find_object(Settings)
    return found if found is not None else Settings()


def open_db(ctx: typer.Context, *, write: bool = False, create: bool = False) -> Any:
    """The database the global options name (the one place that resolves it).

    Read-only unless ``write``; only ``init`` passes ``create``: other commands refuse a path
    that holds no database rather than create one by mistake.
    """
    s = settings(ctx)
    if s.server is not None:
        return _connect(s, create)
    path = s.db
    if not create and not _is_database(path):
        from docstore.cli.errors import DatabaseMissingError

        raise DatabaseMissingError(
            f"no immudoc database at {path!r} (create one with `immudoc init`, "
            "or choose another with --db or IMMUDOC_DB)"
        )
    import docstore

    if write and s.state_file is not None and s.verify:
        _check_write_can_stay_verified(s)
    bars = StageBars()
    if not write and not create:
        _upgrade(path, bars)
    try:
        if s.state_file is not None and s.verify and not create:  # a trusted state given: verify every read
            return docstore.open(
                path, readonly=not write, verify=True, state_file=s.state_file, verifier_key=list(s.keys) or None,
                trust_unsigned=s.trust_unsigned, trust_on_first_use=s.trust_on_first_use, progress=bars,
            )
        return docstore.open(path, readonly=not write, progress=bars)
    finally:
        bars.close()


def _check_write_can_stay_verified(s: Settings) -> None:
    """A write with a trusted state file and no key pinned would commit, then leave the state
    file behind the ledger for good (a newer state is accepted only if signed by a pinned
    key): every later verified read would refuse. Refuse the write up front instead."""
    if s.keys or s.trust_unsigned or s.trust_on_first_use or s.state_file is None:
        return
    from docstore.proofs.trust import read_trust_file

    if os.path.exists(s.state_file) and not read_trust_file(s.state_file).verifier_keys:
        raise typer.BadParameter(
            "a write with --state-file needs the ledger's verifier key pinned (--key KEY; the key "
            "is `immudoc key`): without it the trusted state cannot advance to the state the write "
            "makes, and every later verified read would refuse. Pin the key, or write without "
            "--state-file (--no-verify).",
            param_hint="--state-file",
        )


def _is_database(path: str) -> bool:
    """Whether ``path`` holds a database: a directory with a ledger, or a ``postgresql://`` URL
    (whose database the library opens, or says it holds no ledger)."""
    from kvcore.storage.postgres import is_url

    return is_url(path) or os.path.isdir(os.path.join(path, "ledger"))


def _upgrade(path: str, bars: StageBars) -> None:
    """A read-only command on a database whose derived state is not on disk yet (one written
    by an earlier version) builds it once, with a progress bar, if it can take the writer
    lock; otherwise (another process writes, or the directory is read-only) it reads with a
    private derived state, as any reader does."""
    from kvcore.storage.postgres import is_url

    if is_url(path) or all(os.path.isdir(os.path.join(path, *p)) for p in (("state.lmdb",), ("ledger", "index.lmdb"))):
        return
    import docstore
    import kvcore

    try:
        docstore.open(path, progress=bars).close()
    except (kvcore.LockedError, kvcore.ReadOnlyError, kvcore.StorageError, OSError):
        pass  # the read-only open below reads without it
    finally:
        bars.close()


def _connect(s: Settings, create: bool) -> Any:
    """The remote database named by --server (verified against --state-file by default)."""
    assert s.server is not None
    if create:
        raise typer.BadParameter("init creates an embedded database; a server creates its own", param_hint="--server")
    import docstore

    tls = None
    if s.tls_ca or s.tls_cert:
        tls = {"ca": s.tls_ca, "cert": s.tls_cert, "key": s.tls_key}
    if s.verify and s.state_file is None:
        raise typer.BadParameter(
            "a verified connection needs --state-file (a saved trusted state; add "
            "--trust-on-first-use to start one from the server's state), or --no-verify",
            param_hint="--server",
        )
    return docstore.connect(
        s.server,
        state_file=s.state_file,
        trust_on_first_use=s.trust_on_first_use,
        verify=s.verify,
        verifier_key=(list(s.keys) or None) if s.verify else None,
        trust_unsigned=s.trust_unsigned if s.verify else False,
        token=s.token,
        tls=tls,
    )


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"immudoc {version()}")
        raise typer.Exit()


def version() -> str:
    """The installed immudoc's version (pyproject.toml's)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("immudoc")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "0+unknown"


@app.callback()
def _root(
    ctx: typer.Context,
    db: Annotated[
        str,
        typer.Option(
            "--db", envvar="IMMUDOC_DB", metavar="PATH", help="Database directory (embedded)."
        ),
    ] = DEFAULT_DB,
    server: Annotated[
        Optional[str],
        typer.Option("--server", envvar="IMMUDOC_SERVER", metavar="HOST:PORT",
                     help="Use an immudoc server instead of --db (document commands)."),
    ] = None,
    token: Annotated[
        Optional[str], typer.Option("--token", envvar="IMMUDOC_TOKEN", help="Bearer token for --server.")
    ] = None,
    tls_ca: Annotated[
        Optional[str], typer.Option("--tls-ca", metavar="PEM", help="CA certificate of the server (TLS).")
    ] = None,
    tls_cert: Annotated[
        Optional[str], typer.Option("--tls-cert", metavar="PEM", help="Client certificate (mutual TLS).")
    ] = None,
    tls_key: Annotated[
        Optional[str], typer.Option("--tls-key", metavar="PEM", help="Client key (mutual TLS).")
    ] = None,
    state_file: Annotated[
        Optional[str],
        typer.Option("--state-file", envvar="IMMUDOC_STATE_FILE", metavar="FILE",
                     help="Trusted state to verify every read against (--server or --db); kept up to date."),
    ] = None,
    key: Annotated[
        list[str],
        typer.Option("--key", envvar="IMMUDOC_VERIFIER_KEY", metavar="VKEY",
                     help="Pin the ledger's verifier key (`immudoc key`): newer states must be signed by it; repeatable."),
    ] = [],  # noqa: B006
    trust_on_first_use: Annotated[
        bool, typer.Option("--trust-on-first-use",
                           help="Start --state-file from the ledger's signed state and pin its key (as SSH does).")
    ] = False,
    trust_unsigned: Annotated[
        bool, typer.Option("--trust-unsigned", help="Advance the trusted state without a signature (unsafe; warns).")
    ] = False,
    no_verify: Annotated[
        bool, typer.Option("--no-verify", help="Do not verify what is read (ignores --state-file).")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", "-V", is_eager=True, callback=_print_version, help="Print immudoc's version and exit.")
    ] = False,
) -> None:
    """Global options."""
    ctx.obj = Settings(
        db=db, server=server, token=token, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
        state_file=state_file, trust_on_first_use=trust_on_first_use, verify=not no_verify,
        keys=tuple(k for item in key for k in item.split()), trust_unsigned=trust_unsigned,
    )


# --------------------------------------------------------------------- shared options
class Format(str, Enum):
    json = "json"
    jsonl = "jsonl"
    table = "table"


FormatOpt = Annotated[
    Optional[Format],
    typer.Option(
        "--format", "-f", help="json, jsonl or table (default: table on a terminal, else json).",
        case_sensitive=False,
    ),
]
CollArg = Annotated[str, typer.Argument(metavar="COLL", help="Collection name.", show_default=False)]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="Document id (_id).", show_default=False)]
AtTxOpt = Annotated[
    Optional[int], typer.Option("--at-tx", metavar="N", help="Read as of ledger transaction N (time travel).")
]
AtTimeOpt = Annotated[
    Optional[str],
    typer.Option("--at-time", metavar="TIME",
                 help="Read as of the last transaction committed at or before TIME (ISO 8601 with its offset, e.g. 2026-12-06T17:30:00Z)."),
]
ReasonOpt = Annotated[
    Optional[str], typer.Option("--reason", metavar="TEXT", help="Why: committed with the write (history and log show it).")
]
AsOpt = Annotated[
    Optional[str],
    typer.Option("--as", metavar="USER",
                 help="Who: committed with the write (an embedded database; a server records the principal it authenticated)."),
]
MetaOpt = Annotated[
    Optional[str],
    typer.Option("--meta", metavar="JSON", help='More about the write, committed with it, e.g. \'{"meaning": "approval"}\'.'),
]


def _tx_kw(reason: Optional[str], as_: Optional[str], meta: Optional[str]) -> dict[str, Any]:
    """The keywords that commit who, why and more with a write (only those given)."""
    from docstore.cli.inputs import parse_json

    kw: dict[str, Any] = {}
    if reason is not None:
        kw["reason"] = reason
    if as_ is not None:
        kw["user"] = as_
    if meta is not None:
        kw["meta"] = parse_json(meta, "--meta")
    return kw


MaxTimeOpt = Annotated[
    Optional[int],
    typer.Option("--max-time-ms", metavar="MS", min=1, max=2**31 - 1,
                 help="Stop the query after MS milliseconds (exit 8); a $regex has a budget of its own."),
]


def _fmt(fmt: Optional[Format]) -> Optional[str]:
    return None if fmt is None else fmt.value


def _file_or_dash(value: Optional[str]) -> Optional[str]:
    if value is not None and value != "-" and not os.path.isfile(value):
        raise typer.BadParameter(f"no such file: {value!r}")
    return value


def _json_or_file(value: Optional[str]) -> Optional[str]:
    if value is not None and value != "-" and not value.lstrip().startswith(("{", "[")):
        if not os.path.isfile(value):
            raise typer.BadParameter(f"{value!r} is neither inline JSON nor an existing file")
    return value


StateFileOpt = Annotated[
    str,
    typer.Option(
        "--state", metavar="STATE_FILE", callback=_file_or_dash,
        help="A trusted state saved with `immudoc state --save`.",
    ),
]


def _progress_wanted(n: int) -> bool:
    return n >= PROGRESS_MIN and output.stdout_is_terminal() and sys.stderr.isatty()


def _insert(db: Any, collection: CollArg, docs: list, tx_kw: dict[str, Any]) -> list[str]:
    """Insert documents in one atomic transaction (with a progress bar on a terminal)."""
    coll = db.collection(collection)
    if not db.local or not _progress_wanted(len(docs)):
        return coll.insert_many(docs, **tx_kw)  # a remote client batches the messages itself
    ids: list[str] = []
    with typer.progressbar(length=len(docs), label="inserting (one transaction)", file=sys.stderr) as bar:
        with db.transaction(**tx_kw) as tx:
            txc = tx[collection]
            for start in range(0, len(docs), 500):
                chunk = docs[start : start + 500]
                ids += txc.insert_many(chunk)
                bar.update(len(chunk))
    return ids


def _write_file(path: str, text: str) -> None:
    from docstore.cli.errors import InputError

    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise InputError(f"cannot write {path!r}: {e.strerror}") from None


# --------------------------------------------------------------------- tables
def _info_table(info: dict) -> str:
    from docstore.cli.index_cmds import describe_index

    idx = ", ".join(describe_index(i) for i in info["indexes"]) or "(none)"
    schema = "(none)" if info["schema"] is None else output.dumps(info["schema"], indent=True)
    schema = schema.replace("\n", "\n" + " " * 12)
    count = info.get("count", "(not proven as of a past transaction)")
    text = f"collection  {info['name']}\ndocuments   {count}\nindexes     {idx}\nschema      {schema}"
    if info.get("at_tx") is not None:
        text = f"as of       transaction {info['at_tx']} (defined in transaction {info['defined_in_tx']})\n" + text
    if info.get("schema_formats"):
        text += "\nformats     asserted (a value that does not match a schema's format is refused)"
    if info.get("require_reason"):
        text += "\nchanges     need a reason (--reason)"
    return text


def _collections_table(infos: list) -> str:
    if not infos:
        return "(no collections: create one with `immudoc collection create NAME`)"
    rows = [
        [
            i["name"],
            str(i["count"]),
            ", ".join(x["field"] + ("!" if x["unique"] else "") for x in i["indexes"]) or "-",
            "yes" if i["schema"] is not None else "no",
        ]
        for i in infos
    ]
    return output.render_table(["collection", "documents", "indexes (! unique)", "schema"], rows)


def _history_table(revs: list) -> str:
    import datetime as dt

    rows = []
    for r in revs:
        when = dt.datetime.fromtimestamp(r["timestamp_ns"] / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        if r.get("erasure"):
            what = "all properties" if r["pointers"] is None else ", ".join(r["pointers"])
            doc = f"(erased {what}: {r['erased']} stored values)"
            rows.append(["erased", str(r["tx_id"]), when, r.get("user") or "", output.cell(r.get("reason") or "", 40), doc])
            continue
        doc = "(deleted)" if r["deleted"] else output.cell(r["document"], 80)
        rows.append([str(r["revision"]), str(r["tx_id"]), when, r.get("user") or "", output.cell(r.get("reason") or "", 40), doc])
    return output.render_table(["rev", "tx", "time (UTC)", "user", "reason", "document"], rows)


def _log_table(records: list) -> str:
    import datetime as dt

    rows = []
    for r in records:
        when = dt.datetime.fromtimestamp(r["timestamp_ns"] / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        rows.append([str(r["tx_id"]), when, r.get("user") or "", output.cell(r.get("reason") or "", 50),
                     "" if r.get("meta") is None else output.cell(r["meta"], 40), str(r["entries"])])
    return output.render_table(["tx", "time (UTC)", "user", "reason", "meta", "entries"], rows)


def _where(p: dict) -> str:
    what = p["collection"] + ("" if p.get("id") is None else f"/{p['id']}")
    return what + (f" {p['pointer']}" if p.get("pointer") else "")


# ===================================================================== commands
WithHeaderOpt = Annotated[
    bool,
    typer.Option(
        "--with-header",
        help="With a proof of the current state: carry the state's transaction header and its path, for a "
        "verifier that pins no key (by default the signed checkpoint names the state map's root).",
    ),
]


@app.command()
def init(
    ctx: typer.Context,
    origin: Annotated[
        Optional[str],
        typer.Option(metavar="NAME", help="The ledger's name in its checkpoints, e.g. example.com/trials (default: random)."),
    ] = None,
    fmt: FormatOpt = None,
) -> None:
    """Create the database (at --db / IMMUDOC_DB) and its signing key, if there are none."""
    from kvcore.storage.postgres import is_url, redact

    path = settings(ctx).db
    existed = os.path.isdir(os.path.join(path, "ledger"))
    if settings(ctx).server is not None:
        open_db(ctx, write=True, create=True)  # a usage error
    import docstore

    with docstore.open(path, origin=origin) as db:
        state = db.state()
        keys = db.verifier_keys()
    if is_url(path):
        existed = state.tx_id > 0
    result = {
        "path": redact(path) if is_url(path) else os.path.abspath(path), "created": not existed, "state": state.to_dict(),
        "origin": keys[0].split("+")[0], "verifier_key": keys[0],
    }
    output.emit(
        result, _fmt(fmt),
        lambda r: f"{'created' if r['created'] else 'found existing'} immudoc database at {r['path']} "
        f"(transaction {r['state']['tx_id']})\nverifier key: {r['verifier_key']}\n"
        "(give the verifier key to whoever verifies; save a state after your first write with "
        "`immudoc state --save FILE`)",
    )


@collection_app.command("create")
def collection_create(
    ctx: typer.Context,
    name: CollArg,
    schema: Annotated[
        Optional[str],
        typer.Option(metavar="FILE", callback=_json_or_file, help="JSON Schema: a file, - for stdin, or inline JSON."),
    ] = None,
    index: Annotated[list[str], typer.Option("--index", metavar="FIELD", help="Index a (dotted) field; repeatable.")] = [],  # noqa: B006
    unique_index: Annotated[
        list[str], typer.Option("--unique-index", metavar="FIELD", help="Unique index on a field; repeatable.")
    ] = [],  # noqa: B006
    require_reason: Annotated[
        bool, typer.Option("--require-reason", help="Every change of an existing document must give --reason.")
    ] = False,
    schema_formats: Annotated[
        bool, typer.Option("--schema-formats", help="Assert the schema's format keywords (date, email, uuid, ...): refuse values that do not match.")
    ] = False,
    fmt: FormatOpt = None,
) -> None:
    """Create a collection, optionally with a JSON Schema and indexes.

    The schema sees each document without its _id, unless it names _id in its top-level
    properties or required (docs/documents.md, "Schemas").

    Examples:

      immudoc collection create visits --schema visit-schema.json --index patient

      immudoc collection create people --unique-index email --schema-formats --schema '{"properties": {"email": {"format": "email"}}}'
    """
    from docstore.cli.inputs import json_arg

    schema_doc = None if schema is None else json_arg(schema, "the schema")
    specs = [{"field": f, "unique": False} for f in index] + [{"field": f, "unique": True} for f in unique_index]
    with open_db(ctx, write=True) as db:
        coll = db.create_collection(name, schema_doc, specs, require_reason=require_reason, schema_formats=schema_formats)
        if db.verifying:  # the definition proven; a new collection holds no documents
            info = {"name": name, "schema": coll.schema, "indexes": coll.indexes(), "count": 0,
                    "require_reason": require_reason}
        else:
            info = coll.info()
    output.emit(info, _fmt(fmt), _info_table)


@collection_app.command("list")
def collection_list(ctx: typer.Context, fmt: FormatOpt = None) -> None:
    """List collections with their document counts and indexes."""
    with open_db(ctx) as db:
        infos = [db.collection(name).info() for name in db.collections()]
    output.emit(infos, _fmt(fmt), _collections_table)


@collection_app.command("show")
def collection_show(ctx: typer.Context, name: CollArg, at_tx: Annotated[
    Optional[int], typer.Option("--at-tx", metavar="N", min=1, help="The definition as of transaction N (its schema history).")
] = None, fmt: FormatOpt = None) -> None:
    """Show a collection: schema, indexes, document count; with --at-tx N, its definition
    (schema, indexes) as of transaction N, read through a proof.

    Examples:

      immudoc collection show visits

      immudoc collection show visits --at-tx 12 --format json
    """
    with open_db(ctx) as db:
        coll = db.collection(name)
        if at_tx is None:
            info = coll.info()
        else:
            import docstore

            proof = coll.prove_schema(at_tx=at_tx)
            info = dict(docstore.verify(proof, proof.state)) | {"at_tx": at_tx, "defined_in_tx": proof.tx_id}
            info.pop("v", None)
            if not db.verifying:
                info["count"] = coll.count(at_tx=at_tx)
    output.emit(info, _fmt(fmt), _info_table)


@app.command()
def insert(
    ctx: typer.Context,
    collection: CollArg,
    source: Annotated[
        Optional[str],
        typer.Argument(
            metavar="FILE|-", callback=_file_or_dash,
            help="A JSON document, a JSON array of them, or JSON lines (default: stdin).",
        ),
    ] = None,
    reason: ReasonOpt = None,
    as_: AsOpt = None,
    meta: MetaOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Insert documents in one atomic transaction; prints their ids."""
    from docstore.cli.errors import InputError
    from docstore.cli.inputs import read_documents

    tx_kw = _tx_kw(reason, as_, meta)
    docs = read_documents(source)
    if not docs:
        raise InputError("no documents in the input")
    with open_db(ctx, write=True) as db:
        ids = _insert(db, collection, docs, tx_kw)
    output.emit(ids, _fmt(fmt))


@app.command()
def get(ctx: typer.Context, collection: CollArg, doc_id: IdArg,
        at_tx: AtTxOpt = None, at_time: AtTimeOpt = None, fmt: FormatOpt = None) -> None:
    """Print one document (as of --at-tx N, or --at-time TIME)."""
    with open_db(ctx) as db:
        doc = db.collection(collection).get(doc_id, at_tx=at_tx, at_time=at_time)
    output.emit(doc, _fmt(fmt), output.render_document)


@app.command()
def find(
    ctx: typer.Context,
    collection: CollArg,
    filter_: Annotated[Optional[str], typer.Argument(metavar="FILTER", help='e.g. \'{"dosage.mg": {"$gte": 5}}\'')] = None,
    sort: Annotated[list[str], typer.Option("--sort", metavar="[-]FIELD", help="Sort by FIELD (-FIELD: descending); repeatable.")] = [],  # noqa: B006
    limit: Annotated[Optional[int], typer.Option(help="At most this many documents.")] = None,
    skip: Annotated[int, typer.Option(help="Skip this many documents first.")] = 0,
    projection: Annotated[Optional[str], typer.Option(metavar="JSON", help='e.g. \'{"name": 1}\'')] = None,
    at_tx: AtTxOpt = None,
    at_time: AtTimeOpt = None,
    prove_: Annotated[
        bool, typer.Option("--prove", help="Also prove the result complete as of now (a JSON bundle: -o FILE, else stdout).")
    ] = False,
    out: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE", help="With --prove: write the proof here.")] = None,
    with_header: WithHeaderOpt = False,
    max_time_ms: MaxTimeOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Print the documents matching a filter (Mongo-style JSON); with --prove, prove them the
    complete result (an index's ranges for a filter on an indexed field, else the whole
    collection) and print the documents the proof holds. On a terminal the table shows the
    first 20 and how many there are (--limit N, or -f json for all); a pipe gets them all."""
    from docstore.cli.inputs import parse_json

    flt = None if filter_ is None else parse_json(filter_, "the filter")
    proj = None if projection is None else parse_json(projection, "the projection")
    order = [(s[1:], -1) if s.startswith("-") else (s.removeprefix("+"), 1) for s in sort] or None
    if prove_ and (at_tx is not None or at_time is not None or proj is not None):
        raise typer.BadParameter("--prove proves the current, whole documents: --at-tx, --at-time and --projection do not apply")
    if out is not None and not prove_:
        raise typer.BadParameter("--output is where --prove writes its proof")
    if with_header and not prove_:
        raise typer.BadParameter("--with-header goes with --prove")
    with open_db(ctx) as db:
        if prove_:
            _prove_query(db.collection(collection).prove_find(flt, order, skip, limit, with_header=with_header), out, fmt)
            return
        docs = db.collection(collection).find(flt, proj, order, skip, limit, at_tx, max_time_ms=max_time_ms, at_time=at_time)
        output.emit_many(docs, _fmt(fmt), cap=output.terminal_cap(limit, _fmt(fmt)))


def _prove_query(proof: Any, out: Optional[str], fmt: Optional[Format]) -> None:
    """Write a find/count proof (to ``out``, else stdout) and print what it proves."""
    import docstore

    text = proof.to_json(indent=True) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    _write_file(out, text)
    value = docstore.verify(proof, proof.state)  # what it shows (relative to its own state)
    if isinstance(value, list) and proof.query.op == "find":
        output.emit_many(iter(value), _fmt(fmt))
    else:
        output.emit(value, _fmt(fmt))
    sys.stderr.write(f"wrote a proof of the complete result to {out}: {len(text.encode())} bytes, state {proof.state.tx_id}\n")


@app.command()
def count(
    ctx: typer.Context,
    collection: CollArg,
    filter_: Annotated[Optional[str], typer.Argument(metavar="FILTER")] = None,
    at_tx: AtTxOpt = None,
    prove_: Annotated[bool, typer.Option("--prove", help="Also prove the count (a JSON bundle: -o FILE, else stdout).")] = False,
    out: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE", help="With --prove: write the proof here.")] = None,
    with_header: WithHeaderOpt = False,
    max_time_ms: MaxTimeOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Print how many documents match a filter (with --prove, proven as of now)."""
    from docstore.cli.inputs import parse_json

    flt = None if filter_ is None else parse_json(filter_, "the filter")
    if prove_ and at_tx is not None:
        raise typer.BadParameter("--prove proves the current state: --at-tx does not apply")
    if out is not None and not prove_:
        raise typer.BadParameter("--output is where --prove writes its proof")
    if with_header and not prove_:
        raise typer.BadParameter("--with-header goes with --prove")
    with open_db(ctx) as db:
        if prove_:
            _prove_query(db.collection(collection).prove_count(flt, with_header=with_header), out, fmt)
            return
        n = db.collection(collection).count(flt, at_tx=at_tx, max_time_ms=max_time_ms)
    output.emit(n, _fmt(fmt))


@app.command()
def update(
    ctx: typer.Context,
    collection: CollArg,
    doc_id: IdArg,
    changes: Annotated[
        str, typer.Argument(metavar="CHANGES", callback=_json_or_file,
                            help='$set/$unset/$inc/$push, e.g. \'{"$set": {"dosage.mg": 25}}\'; or a file, or -')
    ],
    reason: ReasonOpt = None,
    as_: AsOpt = None,
    meta: MetaOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Change a document with $set, $unset, $inc, $push (new revision)."""
    from docstore.cli.inputs import json_arg

    tx_kw = _tx_kw(reason, as_, meta)
    spec = json_arg(changes, "the changes")
    with open_db(ctx, write=True) as db:
        doc = db.collection(collection).update(doc_id, spec, **tx_kw)
        if db.verifying:  # print only what is proven: read the document back through a proof
            doc = db.collection(collection).get(doc_id)
    output.emit(doc, _fmt(fmt), output.render_document)


@app.command()
def replace(
    ctx: typer.Context,
    collection: CollArg,
    doc_id: IdArg,
    source: Annotated[str, typer.Argument(metavar="FILE|-|JSON", callback=_json_or_file, help="The new document.")],
    reason: ReasonOpt = None,
    as_: AsOpt = None,
    meta: MetaOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Replace a whole document (a new revision); prints it."""
    from docstore.cli.inputs import json_arg

    tx_kw = _tx_kw(reason, as_, meta)
    doc = json_arg(source, "the document")
    with open_db(ctx, write=True) as db:
        new = db.collection(collection).replace(doc_id, doc, **tx_kw)
        if db.verifying:  # print only what is proven
            new = db.collection(collection).get(doc_id)
    output.emit(new, _fmt(fmt), output.render_document)


@app.command()
def delete(ctx: typer.Context, collection: CollArg, doc_id: IdArg,
           reason: ReasonOpt = None, as_: AsOpt = None, meta: MetaOpt = None, fmt: FormatOpt = None) -> None:
    """Delete a document (a tombstone revision: its history stays)."""
    tx_kw = _tx_kw(reason, as_, meta)
    with open_db(ctx, write=True) as db:
        db.collection(collection).delete(doc_id, **tx_kw)
    output.emit(
        {"collection": collection, "_id": doc_id, "deleted": True}, _fmt(fmt),
        lambda r: f"deleted {r['_id']} from {r['collection']} (its history stays)",
    )


@app.command()
def erase(
    ctx: typer.Context, collection: CollArg, doc_id: IdArg,
    pointer: Annotated[Optional[list[str]], typer.Option(
        "--pointer", metavar="POINTER", help="Erase this property (a JSON pointer, e.g. /name); repeat for more. "
        "Default: every property but _id.")] = None,
    reason: ReasonOpt = None, as_: AsOpt = None, meta: MetaOpt = None, fmt: FormatOpt = None,
) -> None:
    """Erase stored values of a document in every revision (e.g. a consent withdrawal).

    The values and their salts are destroyed on disk; their hashes stay, so every proof of
    everything else still verifies, and reads show each erased property as {"$erased": N}
    (N: the erasing transaction). Who and why are kept with the erasure (--as, --reason).

    Examples:

      immudoc erase participants p-017 --pointer /name --pointer /born --reason "consent withdrawn"
    """
    tx_kw = _tx_kw(reason, as_, meta)
    with open_db(ctx, write=True) as db:
        done = db.collection(collection).erase(doc_id, pointer or None, **tx_kw)
    output.emit(
        {"collection": collection, "_id": doc_id, **done.to_dict()}, _fmt(fmt),
        lambda r: (f"erased {r['erased']} stored values of {r['_id']} in {r['revisions']} revisions "
                   f"(transaction {r['tx']})") if r["tx"] is not None else f"nothing left to erase in {r['_id']}",
    )


@app.command()
def history(ctx: typer.Context, collection: CollArg, doc_id: IdArg,
            limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="At most this many revisions (the oldest first).")] = None,
            fmt: FormatOpt = None) -> None:
    """Print every revision of a document, oldest first, and its erasures (who, when, why).

    On a terminal the table shows the first 20 (--limit N, or -f json for all).

    Examples:

      immudoc history visits V-2

      immudoc history visits V-2 --format jsonl
    """
    with open_db(ctx) as db:
        coll = db.collection(collection)
        revs = [r.to_dict() for r in coll.history(doc_id, limit=limit)]
        last = revs[-1]["tx_id"] if limit is not None and len(revs) == limit else None
        erased = [{"erasure": True, **e} for e in coll.erasures(doc_id) if last is None or e["tx_id"] <= last]
    merged = sorted(revs + erased, key=lambda r: (r["tx_id"], "erasure" in r))
    output.emit_many(merged, _fmt(fmt), _history_table, cap=output.terminal_cap(limit, _fmt(fmt)), noun="revision")


@app.command()
def log(
    ctx: typer.Context,
    user: Annotated[Optional[str], typer.Option("--user", metavar="USER", help="Only this user's transactions.")] = None,
    since: Annotated[Optional[str], typer.Option("--since", metavar="TIME", help="Committed at or after TIME (ISO 8601 with its offset).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", metavar="TIME", help="Committed at or before TIME.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, max=10_000, help="At most this many transactions (default 20).")] = None,
    before_tx: Annotated[Optional[int], typer.Option("--before-tx", metavar="N", min=1, help="Only transactions before N (to page).")] = None,
    fmt: FormatOpt = None,
) -> None:
    """Print the ledger's transactions, newest first, with who, when and why (the audit trail).

    Examples:

      immudoc log --user dr.lee

      immudoc log --since 2026-12-01T00:00:00Z --limit 100 --format jsonl
    """
    cap = output.terminal_cap(limit, _fmt(fmt))
    with open_db(ctx) as db:  # on a terminal: one more than shown, to say whether there are more
        records = db.log(user=user, since=since, until=until, limit=(limit or 20) + (cap is not None), before_tx=before_tx)
    if cap is None:
        records = records[: limit or 20]
    output.emit_many(records, _fmt(fmt), _log_table, cap=cap, noun="transaction", count_rest=False,
                     hint="--limit N, or --before-tx N for older ones")


@index_app.command("create")
def index_create(
    ctx: typer.Context,
    collection: CollArg,
    field: Annotated[str, typer.Argument(help="A (dotted) field, or several joined by commas (a compound index).")],
    unique: Annotated[bool, typer.Option("--unique", help="Refuse two documents with the same value.")] = False,
    sparse: Annotated[bool, typer.Option("--sparse", help="Leave out documents without the field.")] = False,
    partial: Annotated[
        Optional[str], typer.Option("--partial", metavar="FILTER", help="Index only documents matching this JSON filter.")
    ] = None,
    fmt: FormatOpt = None,
) -> None:
    """Create a secondary index, backfilled from existing documents (docs/queries.md, "Indexes").

    Examples:

      immudoc index create visits site

      immudoc index create users email --unique --sparse

      immudoc index create visits site --partial '{"status": "open"}'

      immudoc index create visits site,age     (a compound index: fields joined by commas)
    """
    from docstore.cli.index_cmds import describe_indexes
    from docstore.cli.inputs import parse_json

    flt = None if partial is None else parse_json(partial, "--partial")
    with open_db(ctx, write=True) as db:
        coll = db.collection(collection)
        coll.create_index(field, unique=unique, sparse=sparse, partial_filter=flt)
        indexes = coll.indexes()
    output.emit(indexes, _fmt(fmt), lambda ix: describe_indexes(collection, ix))


@app.command()
def prove(
    ctx: typer.Context,
    collection: CollArg,
    doc_id: Annotated[Optional[str], typer.Argument(metavar="ID", help="Document id (_id).", show_default=False)] = None,
    pointer: Annotated[Optional[str], typer.Option(metavar="P", help="Prove one property (RFC 6901, e.g. /dosage/mg).")] = None,
    at_tx: Annotated[Optional[int], typer.Option("--at-tx", metavar="N", help="Prove the revision current at transaction N.")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Prove that it is the current revision (as of now).")] = False,
    absent: Annotated[
        Optional[str], typer.Option("--absent", metavar="ID", help="Prove that no live document has this id (as of now).")
    ] = None,
    known_state: Annotated[
        Optional[str],
        typer.Option(metavar="FILE", callback=_file_or_dash, help="Bundle a consistency proof from this saved state."),
    ] = None,
    out: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE", help="Write the proof here.")] = None,
    with_header: WithHeaderOpt = False,
    with_meta: Annotated[
        bool, typer.Option("--with-meta", help="Also prove who wrote the revision and why (its transaction's metadata).")
    ] = False,
    fmt: FormatOpt = None,
) -> None:
    """Prove a document or one property of it (a JSON bundle); with --latest that it is the
    current revision; with --absent ID that no such document exists now."""
    if with_meta and (latest or absent is not None):
        raise typer.BadParameter("--with-meta goes with a proof of a revision (not --latest or --absent)")
    if (doc_id is None) == (absent is None):
        raise typer.BadParameter("give a document ID, or --absent ID (not both)")
    if (latest or absent is not None) and at_tx is not None:
        raise typer.BadParameter("--latest and --absent prove the current state: --at-tx does not apply")
    if with_header and not (latest or absent is not None):
        raise typer.BadParameter("--with-header is for --latest and --absent (a proof of the current state)")
    if absent is not None and (latest or pointer is not None):
        raise typer.BadParameter("--absent proves that no document exists: --latest and --pointer do not apply")
    known = None
    if known_state is not None:
        from docstore.proofs.trust import read_state_file

        known = read_state_file(known_state)
    with open_db(ctx) as db:
        coll = db.collection(collection)
        if absent is not None:
            proof: Any = coll.prove_absent(absent, known_state=known, with_header=with_header)
        elif latest:
            proof = coll.prove_latest(doc_id, pointer, known_state=known, with_header=with_header)
        else:
            proof = coll.prove(doc_id, pointer, at_tx=at_tx, known_state=known, with_meta=with_meta)
    text = proof.to_json(indent=True) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    _write_file(out, text)
    summary = _proof_summary(proof) | {"output": out, "bytes": len(text.encode())}
    names = {"latest": "freshness proof", "absent": "absence proof"}
    output.emit(
        summary, _fmt(fmt),
        lambda s: f"wrote {'an' if s['kind'] == 'absent' else 'a'} {names.get(s['kind'], s['kind'] + ' proof')} of {_where(s)}"
        + (f" (revision {s['revision']}, transaction {s['tx_id']})" if s.get("revision") else "")
        + f" to {s['output']}: {s['bytes']} bytes, relative to state {s['state']['tx_id']}",
    )


def _proof_summary(proof: Any) -> dict[str, Any]:
    """What a proof bundle is about (for the CLI's summaries)."""
    from docstore.proofs.statebundle import StateProof

    if isinstance(proof, StateProof):
        d: dict[str, Any] = {"kind": proof.kind, "collection": proof.collection, "id": proof.id,
                             "pointer": proof.pointer, "state": proof.state.to_dict()}
        if proof.query is not None:
            d["query"] = proof.query.to_dict()
        return d
    return {
        "kind": proof.kind, "collection": proof.collection, "id": proof.id, "pointer": proof.pointer,
        "revision": proof.revision, "tx_id": proof.tx_id, "claim": proof.claim, "state": proof.state.to_dict(),
    }


@app.command()
def verify(
    ctx: typer.Context,
    proof_file: Annotated[str, typer.Argument(metavar="PROOF", callback=_file_or_dash, help="A proof file, or - for stdin.")],
    state: StateFileOpt,
    key: Annotated[
        list[str],
        typer.Option("--key", metavar="VKEY", help="A verifier key you pin (`immudoc key`); repeatable. Needed when "
                     "the proof is relative to a state newer than yours."),
    ] = [],  # noqa: B006
    fmt: FormatOpt = None,
) -> None:
    """Verify a proof offline against a saved state or checkpoint (no database)."""
    import docstore
    from docstore.cli.inputs import read_text
    from docstore.proofs.statebundle import load_any
    from docstore.proofs.trust import read_trust_file

    keys = [k for item in (*key, *settings(ctx).keys) for k in item.split()]
    record = read_trust_file(state)
    keys = keys or list(record.verifier_keys)
    proof = load_any(read_text(proof_file))
    # the saved checkpoint itself (its signature checked when keys are pinned): it also names
    # the state map's root, which a compact proof of that very state needs
    trusted = record.checkpoint if record.checkpoint else record.state
    meta: Any = None
    if getattr(proof, "tx_meta", None) is not None:  # a proof of who and why too (bundle version 4)
        value, meta = docstore.verify(proof, trusted, verifier_keys=keys or None, with_meta=True)
    else:
        value = docstore.verify(proof, trusted, verifier_keys=keys or None)
    result = _proof_summary(proof) | {
        "verified": True, "trusted_state": record.state.to_dict(), "value": value,
        "signed_state": proof.state.tx_id > record.state.tx_id,
    }
    if getattr(proof, "tx_meta", None) is not None:
        result["tx_meta"] = meta
    result.pop("claim", None)
    output.emit(result, _fmt(fmt), _verified_line)


def _verified_line(r: dict[str, Any]) -> str:
    trust = f"trusted state {r['trusted_state']['tx_id']}" + (
        f", signed state {r['state']['tx_id']}" if r["signed_state"] else ""
    )
    kind = r["kind"]
    if kind == "absent":
        return f"verified: no live document {r['id']!r} in {r['collection']} as of state {r['state']['tx_id']} ({trust})"
    if kind == "latest":
        return f"verified: {_where(r)} = {output.cell(r['value'], 200)} is the current revision as of state {r['state']['tx_id']} ({trust})"
    if kind == "find":
        q = r["query"]
        what = {"find": "documents", "count": "count", "distinct": "distinct values"}[q["op"]]
        shown = len(r["value"]) if isinstance(r["value"], list) else r["value"]
        return (f"verified complete: {what} of {r['collection']} matching {output.cell(q['filter'], 120)}: {shown} "
                f"as of state {r['state']['tx_id']} ({trust})")
    line = (f"verified: {_where(r)} = {output.cell(r['value'], 200)} (revision {r['revision']}, "
            f"transaction {r['tx_id']}; {trust})")
    if "tx_meta" in r:
        m = r["tx_meta"] or {}
        line += f"\n  written by {m.get('user') or '(no user)'}: {m.get('reason') or '(no reason)'}"
        if m.get("meta"):
            line += f" {output.cell(m['meta'], 120)}"
    return line


@app.command()
def state(
    ctx: typer.Context,
    save: Annotated[
        Optional[str], typer.Option(metavar="FILE", help="Also save it, as its signed checkpoint (to verify proofs later).")
    ] = None,
    fmt: FormatOpt = None,
) -> None:
    """Print (and save) the state: a transaction id and its root."""
    with open_db(ctx) as db:
        current = db.state()
        note = db.checkpoint(current) if save is not None else None
    if save is not None and note is not None:
        from docstore.proofs.trust import write_checkpoint_file

        write_checkpoint_file(save, note)
    output.emit(
        current.to_dict(), _fmt(fmt),
        lambda s: f"transaction {s['tx_id']}\nroot        {s['root']}" + (f"\nsaved to    {save}" if save else ""),
    )


@app.command()
def checkpoint(
    ctx: typer.Context,
    out: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE", help="Write it here.")] = None,
) -> None:
    """Print the signed checkpoint of the current state (C2SP tlog-checkpoint)."""
    with open_db(ctx) as db:
        note = db.checkpoint()
    if out is None:
        sys.stdout.write(note)
        return
    from docstore.proofs.trust import write_checkpoint_file

    write_checkpoint_file(out, note)


@key_app.callback()
def key_show(ctx: typer.Context, fmt: FormatOpt = None) -> None:
    """Print the verifier keys: the current one first, then earlier ones that still co-sign."""
    if ctx.invoked_subcommand is not None:
        return
    with open_db(ctx) as db:
        keys = db.verifier_keys()
        remote = not db.local
    note = "" if not remote else (
        "\n(as the server states them: pin a key only if you got it from a channel you trust, "
        "e.g. `immudoc key` run where the database is)"
    )
    if fmt is None:  # plain lines, in a pipe too: `--key "$(immudoc key)"` pins them
        sys.stdout.write("\n".join(keys) + "\n")
        if note:
            print(note.strip(), file=sys.stderr)
        return
    output.emit(keys, _fmt(fmt), lambda ks: "\n".join(ks) + note)


@key_app.command("rotate")
def key_rotate(
    ctx: typer.Context,
    drop_old: Annotated[bool, typer.Option("--drop-old", help="Stop signing with the old key at once.")] = False,
    fmt: FormatOpt = None,
) -> None:
    """Make a new signing key; the old one keeps co-signing until `immudoc key retire`."""
    with open_db(ctx, write=True) as db:
        if not db.local:
            raise typer.BadParameter("rotate the key where the database is (--db), not over --server")
        new = db.rotate_key(keep_old=not drop_old)
        keys = db.verifier_keys()
    output.emit(
        keys, _fmt(fmt),
        lambda ks: f"new verifier key: {new}\n" + (
            f"still co-signing with: {', '.join(ks[1:])}\n(publish the new key; run `immudoc key retire` once verifiers pin it)"
            if len(ks) > 1 else "(publish the new key: verifiers that pin the old one will refuse newer states)"
        ),
    )


@key_app.command("retire")
def key_retire(ctx: typer.Context, fmt: FormatOpt = None) -> None:
    """Stop co-signing with the keys kept by `immudoc key rotate`."""
    with open_db(ctx, write=True) as db:
        if not db.local:
            raise typer.BadParameter("retire keys where the database is (--db), not over --server")
        db.retire_old_keys()
        keys = db.verifier_keys()
    output.emit(keys, _fmt(fmt), lambda ks: f"signing with {ks[0]} only")


@app.command()
def consistency(
    ctx: typer.Context,
    old_state: Annotated[str, typer.Argument(metavar="OLD_STATE_FILE", callback=_file_or_dash)],
    fmt: FormatOpt = None,
) -> None:
    """Check that today's state extends a saved one (append-only)."""
    import docstore
    from docstore.proofs.trust import read_state_file

    old = read_state_file(old_state)
    with open_db(ctx) as db:
        new = db.state()
        proof = db.prove_consistency(old, new)
    docstore.verify_consistency(old, new, proof)
    result = {"consistent": True, "old": old.to_dict(), "new": new.to_dict(), "proof_hashes": len(proof.path)}
    output.emit(
        result, _fmt(fmt),
        lambda r: f"consistent: state {r['new']['tx_id']} extends the saved state {r['old']['tx_id']} "
        f"(verified with {r['proof_hashes']} hashes)",
    )


@app.command()
def audit(
    ctx: typer.Context,
    state: Annotated[
        Optional[str], typer.Option("--state", metavar="STATE_FILE", callback=_file_or_dash,
                                    help="Also check the ledger against this trusted state.")
    ] = None,
    fmt: FormatOpt = None,
) -> None:
    """Check every hash, document and index (exit 5 on failure)."""
    from docstore.cli.errors import AuditFailedError

    trusted = None
    if state is not None:
        from docstore.proofs.trust import read_state_file

        trusted = read_state_file(state)
    with open_db(ctx) as db:
        if db.local and sys.stderr.isatty():
            bars = StageBars("auditing ({})")  # each entry hashed, then rebuilt
            try:
                report = db.audit(trusted, lambda done, total: bars("entries", done, total))
            finally:
                bars.close()
        else:
            report = db.audit(trusted)
    result = {
        "ok": report.ok, "tx_count": report.tx_count, "entries": report.entries,
        "first_bad_tx": report.first_bad_tx, "problems": report.problems, "root": report.root.hex(),
    }
    fmt_ = output.resolve(_fmt(fmt))
    if report.ok or fmt_ != "table":
        output.emit(result, fmt_, lambda _r: str(report))
    if not report.ok:
        raise AuditFailedError(str(report))


@app.command()
def migrate(
    src: Annotated[str, typer.Argument(metavar="SRC", help="The database to copy: a directory or a postgresql:// URL.")],
    dst: Annotated[str, typer.Argument(metavar="DST", help="Where to: a new directory or a postgresql:// URL of an empty database.")],
    key_file: Annotated[
        Optional[str], typer.Option("--key-file", metavar="FILE", help="The source's signing key (default: its own).")
    ] = None,
    fmt: FormatOpt = None,
) -> None:
    """Copy a database to another backend (a directory and PostgreSQL, either way): the ledger
    byte for byte and its signing key; succeeds only if the copy's state and signed checkpoint
    equal the source's. A PostgreSQL side keeps its local state in IMMUDOC_STATE_DIR (default
    under ~/.cache/immudoc)."""
    from docstore.migrate import migrate as run
    from kvcore.storage.postgres import is_url, redact

    bars = StageBars("copying ({})")
    try:
        result = run(src, dst, key_file=key_file, progress=lambda done, total: bars("transactions", done, total))
    finally:
        bars.close()
    shown = {"from": redact(src) if is_url(src) else src, "to": redact(dst) if is_url(dst) else dst} | result
    output.emit(
        shown, _fmt(fmt),
        lambda r: f"migrated {r['transactions']} transactions from {r['from']} to {r['to']}: same state and signed checkpoint",
    )


@app.command("publish-state")
def publish_state(ctx: typer.Context, fmt: FormatOpt = None) -> None:
    """On a PostgreSQL database: publish this host's derived state into PostgreSQL, so that a
    server started without a state directory takes it and catches up from the log rather than
    rebuilding it from the whole log (`serve` does this every --publish-state-seconds)."""
    with open_db(ctx, write=True) as db:
        if not getattr(db, "on_postgres", False):
            from docstore.errors import StorageError

            raise StorageError("only a database on PostgreSQL publishes its derived state (give --db postgresql://...)")
        tx_id, size = db.publish_state()
    output.emit(
        {"tx": tx_id, "bytes": size}, _fmt(fmt),
        lambda r: f"published the derived state at transaction {r['tx']} ({r['bytes']:,} bytes)",
    )


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port, 0 to 65535 (0: pick a free one and print it).")] = 3323,
    tls_cert: Annotated[Optional[str], typer.Option("--tls-cert", metavar="PEM", help="Server certificate (TLS).")] = None,
    tls_key: Annotated[Optional[str], typer.Option("--tls-key", metavar="PEM", help="Server key (TLS).")] = None,
    client_ca: Annotated[
        Optional[str], typer.Option("--client-ca", metavar="PEM", help="Require client certificates signed by this CA.")
    ] = None,
    tokens_file: Annotated[
        Optional[str], typer.Option("--tokens-file", metavar="FILE", help="Bearer tokens: lines 'TOKEN read|write'.")
    ] = None,
    max_message_mb: Annotated[float, typer.Option(help="Largest message accepted or sent.")] = 64.0,
    grace: Annotated[float, typer.Option(help="Seconds calls in flight may finish on SIGTERM.")] = 10.0,
    workers: Annotated[int, typer.Option(min=1, help="Threads serving calls.")] = 32,
    max_call_seconds: Annotated[
        float,
        typer.Option("--max-call-seconds", min=0.001,
                     help="The longest any call's queries may run (a find stream included) when the client sets no shorter deadline."),
    ] = 600.0,
    processes: Annotated[
        int,
        typer.Option("--processes", min=1,
                     help="Server processes sharing the port, so that more than one core serves (a PostgreSQL database only)."),
    ] = 1,
    key_file: Annotated[
        Optional[str],
        typer.Option("--key-file", envvar="IMMUDOC_KEY_FILE", metavar="FILE",
                     help="The signing key (default: the database's signing.key; created if missing)."),
    ] = None,
    publish_state_seconds: Annotated[
        float,
        typer.Option("--publish-state-seconds", min=0.0,
                     help="PostgreSQL: publish the derived state this often, for servers started without one (0: never)."),
    ] = 300.0,
) -> None:
    """Serve the database (--db) over gRPC until SIGTERM or SIGINT."""
    s = settings(ctx)
    if s.server is not None:
        raise typer.BadParameter("serve serves an embedded database: give --db, not --server")
    if not _is_database(s.db):
        from docstore.cli.errors import DatabaseMissingError

        raise DatabaseMissingError(f"no immudoc database at {s.db!r} (create one with `immudoc init`)")
    if processes > 1:
        from docstore.server.processes import child_args, serve_processes

        rest = child_args(max_message_mb, grace, workers, max_call_seconds, tls_cert, tls_key, client_ca,
                          tokens_file, key_file, publish_state_seconds)
        raise typer.Exit(serve_processes(processes, s.db, host, port, rest))
    from docstore.server.cli_hook import serve as run  # grpc is imported only here

    raise typer.Exit(
        run(s.db, host, port, tls_cert, tls_key, client_ca, tokens_file, max_message_mb, grace, workers,
            key_file=key_file, max_call_seconds=max_call_seconds, publish_state_seconds=publish_state_seconds)
    )


@app.command()
def demo() -> None:
    """Run a clinical-trial story on a temporary database."""
    from docstore.cli.demo import run_demo

    run_demo(typer.echo)


from docstore.cli import aggregate_cmds  # noqa: E402, F401  (immudoc aggregate: registered on app)
from docstore.cli import bulk_cmds  # noqa: E402, F401  (update-many, delete-many: registered on app)
from docstore.cli import index_cmds  # noqa: E402, F401  (index drop: registered on index_app)
from docstore.cli import transfer_cmds  # noqa: E402, F401  (import, export: registered on app)
from docstore.cli import backup_cmds  # noqa: E402, F401  (backup, restore)
from docstore.cli import query_cmds  # noqa: E402, F401  (distinct, explain)
from docstore.cli import schema_cmds  # noqa: E402, F401  (collection set-schema)
from docstore.cli import transaction_cmds  # noqa: E402, F401  (transaction)

from docstore.cli import examples as _examples  # noqa: E402  (last: every command registered above)

_examples.apply(app)
