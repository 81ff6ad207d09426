"""``python -m docstore.server --db PATH [--host H] [--port P] ...``: run the immudoc server."""

from __future__ import annotations

import argparse

from docstore.server.app import (
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_MAX_CALL_SECONDS,
    DEFAULT_MAX_MESSAGE_MB,
    DEFAULT_PORT,
    DEFAULT_WORKERS,
)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 0 to 65535 (0: any free port), got {port}")
    return port


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m docstore.server", description="Serve an immudoc database over gRPC.")
    p.add_argument("--db", required=True, help="database directory (created if missing)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port, 0 to 65535 (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--tls-cert", help="PEM certificate (chain) of the server: enables TLS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--client-ca", help="PEM CA certificate: clients must present a certificate it signed (mutual TLS)")
    p.add_argument("--tokens-file", help="bearer tokens and roles (JSON, or lines '<token> read|write')")
    p.add_argument("--max-message-mb", type=float, default=DEFAULT_MAX_MESSAGE_MB, help="largest message, in MiB")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE, help="seconds calls in flight get at shutdown")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="threads serving calls")
    p.add_argument("--max-call-seconds", type=float, default=DEFAULT_MAX_CALL_SECONDS,
                   help="the longest any call's queries may run when the client sets no shorter deadline")
    p.add_argument("--publish-state-seconds", type=float, default=300.0,
                   help="PostgreSQL: publish the derived state this often, for servers started without one (0: never)")
    p.add_argument("--key-file", help="the signing key (default: $IMMUDOC_KEY_FILE, else the database's)")
    p.add_argument("--processes", type=int, default=1,
                   help="server processes sharing the port (a PostgreSQL database only; docs/scale-out.md)")
    p.add_argument("--reuse-port", action="store_true", help="share the port (set by --processes for its children)")
    a = p.parse_args(argv)
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: every thread's stack
    if a.processes < 1:
        p.error("--processes must be at least 1")
    if not a.publish_state_seconds >= 0:
        p.error("--publish-state-seconds must be 0 (never) or positive")
    if a.processes > 1:
        from docstore.server.processes import child_args, serve_processes

        rest = child_args(a.max_message_mb, a.grace, a.workers, a.max_call_seconds, a.tls_cert, a.tls_key,
                          a.client_ca, a.tokens_file, a.key_file, a.publish_state_seconds)
        return serve_processes(a.processes, a.db, a.host, a.port, rest)
    from docstore.server.cli_hook import serve

    return serve(
        a.db,
        a.host,
        a.port,
        a.tls_cert,
        a.tls_key,
        a.client_ca,
        a.tokens_file,
        a.max_message_mb,
        a.grace,
        a.workers,
        max_call_seconds=a.max_call_seconds,
        key_file=a.key_file,
        reuse_port=a.reuse_port,
        publish_state_seconds=a.publish_state_seconds,
    )


if __name__ == "__main__":
    raise SystemExit(main())
