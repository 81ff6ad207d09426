"""The one function the ``immudoc serve`` command calls (and ``python -m docstore.server``).

>>> from docstore.server.cli_hook import serve        # doctest: +SKIP
>>> raise SystemExit(serve("data", port=0))           # prints the port, runs until SIGTERM
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from docstore.server.app import (
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_MAX_MESSAGE_MB,
    DEFAULT_MAX_CALL_SECONDS,
    DEFAULT_PORT,
    DEFAULT_WORKERS,
)


def serve(
    db_path: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    client_ca: str | None = None,
    tokens_file: str | None = None,
    max_message_mb: float = DEFAULT_MAX_MESSAGE_MB,
    grace: float = DEFAULT_GRACE,
    workers: int = DEFAULT_WORKERS,
    *,
    key_file: str | None = None,
    max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS,
    reuse_port: bool = False,
    publish_state_seconds: float = 300.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> int:
    """Serve the database in directory ``db_path`` until SIGTERM or SIGINT (or ``stop`` is
    set); returns the process exit code.

    Prints ``immudoc server listening on HOST:PORT (...)`` to ``out`` once it accepts calls
    (with ``port=0`` the port is an ephemeral one: read it from that line). On SIGTERM/SIGINT
    it stops accepting calls, lets calls in flight finish for up to ``grace`` seconds, closes
    the database cleanly and returns 0. Configuration errors print one line to ``err`` and
    return 2. ``key_file``: the signing key (default: ``$IMMUDOC_KEY_FILE``, else the
    database's ``signing.key``; created if missing). ``publish_state_seconds``: on PostgreSQL,
    publish the derived state this often (0: never; docs/scale-out.md, "Stateless servers").
    A database that cannot be opened returns the CLI's exit code for its error (7 when
    it is locked by another process, read-only or unreadable, 5 when it is damaged).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    t0 = time.perf_counter()
    from docstore.server.app import Server, ServerConfig, ServerConfigError, describe

    config = ServerConfig(
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        client_ca=client_ca,
        tokens_file=tokens_file,
        max_message_mb=max_message_mb,
        grace=grace,
        workers=workers,
        max_call_seconds=max_call_seconds,
        reuse_port=reuse_port,
        publish_state_seconds=publish_state_seconds,
    )
    import docstore

    try:
        db = docstore.open(db_path, key_file=key_file)
    except Exception as e:  # noqa: BLE001 - reported, not raised: this is a process's main
        from docstore.cli.errors import exit_code_for

        print(f"immudoc serve: cannot open the database {db_path!r}: {type(e).__name__}: {e}", file=err, flush=True)
        return exit_code_for(e)  # the CLI's table: 7 locked, read-only, missing; 5 damaged
    try:
        server = Server(db, config, err)
        server.start()
    except ServerConfigError as e:
        db.close()
        print(f"immudoc serve: {e}", file=err, flush=True)
        return 2

    stop = stop or threading.Event()
    signalled: list[int] = []  # a signal handler must take no lock (it may interrupt one)
    previous = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, _frame: object) -> None:
            signalled.append(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        print(f"{describe(server)}; ready in {time.perf_counter() - t0:.3f} s", file=out, flush=True)
        if on_ready is not None:
            on_ready(server.port or 0)
        while not signalled and not stop.wait(0.1):
            pass
        print(f"immudoc server: stopping (calls in flight get up to {config.grace:g} s)", file=err, flush=True)
        server.stop()
    finally:
        server.stop(0)
        db.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("immudoc server: stopped, database closed", file=err, flush=True)
    return 0
