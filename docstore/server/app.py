"""A running immudoc server: the gRPC server, its thread pool, TLS and tokens, and shutdown."""

from __future__ import annotations

import ipaddress
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TextIO

import grpc

from docstore.database import Database
from docstore.rpc import codec
from docstore.rpc import immudoc_pb2_grpc as pb_grpc
from docstore.server.auth import Authorizer, load_grants
from docstore.server.health import health_handler
from docstore.server.service import DEFAULT_MAX_CALL_SECONDS, DocstoreService

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3323
DEFAULT_MAX_MESSAGE_MB = 64.0
DEFAULT_GRACE = 10.0
DEFAULT_WORKERS = 32


class ServerConfigError(ValueError):
    """A server option is invalid (missing certificate, bad tokens file, ...)."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: an ephemeral port (printed when ready)
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None  # mutual TLS: clients must present a certificate it signed
    tokens_file: str | None = None
    max_message_mb: float = DEFAULT_MAX_MESSAGE_MB
    grace: float = DEFAULT_GRACE
    workers: int = DEFAULT_WORKERS
    max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS  # the longest any call's queries may run
    reuse_port: bool = False  # share the port with the other processes of `serve --processes N`
    publish_state_seconds: float = 300.0  # PostgreSQL: publish the derived state this often (0: never)

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_mb * 1024 * 1024)

    @property
    def tls(self) -> str:
        return "mutual" if self.client_ca else "on" if self.tls_cert else "off"


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ServerConfigError(f"cannot read the {what} {path!r}: {e.strerror}") from None


def is_loopback(host: str) -> bool:
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class Server:
    """Serves ``db`` as configured; :meth:`start` binds, :meth:`stop` drains and stops.

    The database stays the caller's to close (after :meth:`stop`).
    """

    def __init__(self, db: Database, config: ServerConfig, err: TextIO | None = None) -> None:
        self.db = db
        self.config = config
        self.err = err or sys.stderr
        if (config.tls_cert is None) != (config.tls_key is None):
            raise ServerConfigError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        if config.client_ca and not config.tls_cert:
            raise ServerConfigError("mutual TLS (--client-ca) needs TLS (--tls-cert and --tls-key)")
        if not config.max_message_mb > 0:
            raise ServerConfigError("the maximum message size must be positive")
        if type(config.port) is not int or not 0 <= config.port <= 65535:
            raise ServerConfigError(f"the port must be from 0 to 65535 (0: any free port), got {config.port!r}")
        if not config.max_call_seconds > 0:
            raise ServerConfigError("the longest call (--max-call-seconds) must be positive")
        if not config.publish_state_seconds >= 0:
            raise ServerConfigError("--publish-state-seconds must be 0 (never) or positive")
        if config.workers < 1:
            raise ServerConfigError("the server needs at least one worker thread")
        self._credentials = None
        if config.tls_cert and config.tls_key:
            self._credentials = grpc.ssl_server_credentials(
                [(_read(config.tls_key, "TLS key"), _read(config.tls_cert, "TLS certificate"))],
                root_certificates=_read(config.client_ca, "client CA certificate") if config.client_ca else None,
                require_client_auth=bool(config.client_ca),
            )
        tokens = None
        if config.tokens_file:
            try:
                tokens = load_grants(config.tokens_file)
            except ValueError as e:
                raise ServerConfigError(str(e)) from None
        self.tokens = 0 if tokens is None else len(tokens)
        self._serving = False
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="immudoc-rpc")
        n = config.max_message_bytes
        self._server = grpc.server(
            self._executor,
            options=[
                ("grpc.max_receive_message_length", n),
                ("grpc.max_send_message_length", max(n, codec.REPLY_FLOOR_BYTES)),
                # never share a port with another process, except the others of `serve --processes N`
                ("grpc.so_reuseport", 1 if config.reuse_port else 0),
            ],
        )
        pb_grpc.add_DocstoreServicer_to_server(DocstoreService(db, Authorizer(tokens, config.tokens_file), n, config.max_call_seconds), self._server)
        self._server.add_generic_rpc_handlers((health_handler(lambda: self._serving),))
        self.port: int | None = None
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return _address(self.config.host, self.port if self.port is not None else self.config.port)

    def start(self) -> int:
        """Bind and start serving; returns the port (the chosen one if the config says 0)."""
        cfg = self.config
        where = _address(cfg.host, cfg.port)
        try:
            if self._credentials is not None:
                port = self._server.add_secure_port(where, self._credentials)
            else:
                port = self._server.add_insecure_port(where)
        except RuntimeError as e:
            raise ServerConfigError(f"cannot listen on {where}: {e}") from None
        if not port:
            raise ServerConfigError(f"cannot listen on {where} (in use, or not an address of this machine)")
        self.port = port
        if self._credentials is None and not is_loopback(cfg.host):
            print(
                f"WARNING: listening on {self.address} without TLS: documents, proofs and tokens "
                "cross the network in clear text (use --tls-cert and --tls-key)",
                file=self.err,
                flush=True,
            )
        self._server.start()
        self._serving = True
        if cfg.publish_state_seconds > 0 and self.db.on_postgres and not self.db.readonly:
            threading.Thread(target=self._publish_loop, name="immudoc-publish", daemon=True).start()
        return port

    def _publish_loop(self) -> None:
        """Every publish_state_seconds, publish the derived state into PostgreSQL if the ledger
        moved since (docs/scale-out.md, "Stateless servers"); a failure is reported and retried
        at the next turn."""
        last = -1
        while not self._stopped.wait(self.config.publish_state_seconds):
            try:
                if self.db.tx_id != last:
                    last, size = self.db.publish_state()
                    print(f"published the derived state at transaction {last} ({size:,} bytes)", file=self.err, flush=True)
            except Exception as e:  # noqa: BLE001 - the server serves on; the next turn tries again
                if self._stopped.is_set():
                    return
                print(f"could not publish the derived state: {e}", file=self.err, flush=True)

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let calls in flight finish (up to ``grace`` seconds, then cancel
        them), and wait until every handler has returned."""
        if self._stopped.is_set():
            return
        self._serving = False
        done = self._server.stop(self.config.grace if grace is None else grace)
        done.wait()
        self._executor.shutdown(wait=True)
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def describe(server: Server) -> str:
    cfg = server.config
    auth = f"{server.tokens} tokens" if server.tokens else "off"
    return f"immudoc server listening on {server.address} (api immudoc.v1, pid {os.getpid()}, tls {cfg.tls}, auth {auth})"
