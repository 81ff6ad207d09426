"""A throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary directory and
``pg_ctl start`` on a Unix socket there (no TCP port), stopped and deleted at the end.

PostgreSQL refuses to run as root: run as root (as CI is), the cluster runs as the ``postgres``
user (``runuser``), in a directory it owns. The binaries are found on PATH or under
/usr/lib/postgresql/*/bin (Debian's layout). ``IMMUDOC_TEST_POSTGRES`` (a ``postgresql://``
URL of a server the tests may create databases on) skips all of this.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator


class Unavailable(Exception):
    """No PostgreSQL binaries on this machine."""


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for path in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return path
    raise Unavailable(f"{name} is not installed (apt-get install postgresql)")


class Cluster:
    """A running cluster; ``url(dbname)`` connects to one of its databases."""

    def __init__(self, primary: Cluster | None = None) -> None:
        """A new cluster (``initdb``), or with ``primary`` a hot standby of it (``pg_basebackup
        -R``: streaming replication, read-only queries), each on its own socket directory."""
        self.base = tempfile.mkdtemp(prefix="immudoc-pg-")
        self.data = os.path.join(self.base, "data")
        self.log = os.path.join(self.base, "log")
        self.as_user: list[str] = []
        self.user = pwd.getpwuid(os.getuid()).pw_name
        if os.getuid() == 0:  # PostgreSQL refuses root: run it as postgres
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
            self.user = "postgres"
        if primary is None:
            self._run([_bin("initdb"), "-D", self.data, "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-sync"])
        else:
            self._run([_bin("pg_basebackup"), "-D", self.data, "-h", primary.base, "-U", self.user, "-R", "-X", "stream", "-c", "fast"])
        self.start()
        self.started = time.monotonic()
        self._n = 0

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(self.as_user + cmd, capture_output=True, text=True, cwd=self.base, timeout=120)
        if r.returncode != 0:
            log = open(self.log).read()[-2000:] if os.path.exists(self.log) else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}{log}")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{dbname}?host={urllib.parse.quote(self.base, safe='')}"

    def new_database(self) -> str:
        """A new, empty database's URL."""
        import psycopg

        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a database made by new_database (its connections ended): the cluster stays
        small, so a standby's base backup copies little."""
        import psycopg

        name = urllib.parse.urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self, mode: str = "fast") -> None:
        self._run([_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"])

    def start(self) -> None:
        opts = f"-k {self.base} -c listen_addresses='' -c max_connections=200 -c shared_buffers=64MB"
        self._run([_bin("pg_ctl"), "-D", self.data, "-o", opts, "-l", self.log, "-w", "-t", "60", "start"])

    def standby(self) -> Cluster:
        """A hot standby of this cluster, streaming from it (destroy it when done)."""
        return Cluster(primary=self)

    def url_of(self, primary_url: str) -> str:
        """``primary_url``'s database, on this cluster (a standby has the primary's databases)."""
        name = urllib.parse.urlsplit(primary_url).path.lstrip("/")
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except Exception:  # noqa: BLE001 - already stopped
            pass
        shutil.rmtree(self.base, ignore_errors=True)


class External:
    """A server given by IMMUDOC_TEST_POSTGRES: databases are created (and dropped) on it."""

    def __init__(self, url: str) -> None:
        self.base_url = url
        self._n = 0
        self.made: list[str] = []

    def new_database(self) -> str:
        import psycopg

        self._n += 1
        name = f"immudoc_t{os.getpid()}_{self._n}"
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.made.append(name)
        parts = urllib.parse.urlsplit(self.base_url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + name))

    def destroy(self) -> None:
        import psycopg

        with psycopg.connect(self.base_url, autocommit=True) as conn:
            for name in self.made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cluster() -> Iterator[Cluster | External]:
    external = os.environ.get("IMMUDOC_TEST_POSTGRES")
    c: Cluster | External = External(external) if external else Cluster()
    try:
        yield c
    finally:
        c.destroy()
