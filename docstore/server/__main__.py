"""``python -m docstore.server --db PATH [--host H] [--port P] ...``: run the immudoc server."""

from __future__ import annotations

import argparse

from docstore.server.app import DEFAULT_GRACE, DEFAULT_HOST, DEFAULT_MAX_MESSAGE_MB, DEFAULT_PORT, DEFAULT_WORKERS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m docstore.server", description="Serve an immudoc database over gRPC.")
    p.add_argument("--db", required=True, help="database directory (created if missing)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    p.add_argument("--tls-cert", help="PEM certificate (chain) of the server: enables TLS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--client-ca", help="PEM CA certificate: clients must present a certificate it signed (mutual TLS)")
    p.add_argument("--tokens-file", help="bearer tokens and roles (JSON, or lines '<token> read|write')")
    p.add_argument("--max-message-mb", type=float, default=DEFAULT_MAX_MESSAGE_MB, help="largest message, in MiB")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE, help="seconds calls in flight get at shutdown")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="threads serving calls")
    a = p.parse_args(argv)
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: every thread's stack
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
    )


if __name__ == "__main__":
    raise SystemExit(main())
