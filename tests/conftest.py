"""Shared pytest configuration for the whole test tree."""

import contextlib

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow variant: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


# ------------------------------------------------------------------ the one `db` fixture
IMPLEMENTATIONS = ("embedded", "remote", "postgres")


def pytest_configure(config):
    config.addinivalue_line("markers", "embedded: the test needs the embedded database (its files, its ledger)")


def pytest_generate_tests(metafunc):
    """Every test that takes ``db`` runs once per implementation of the contract (docstore.api):
    the embedded database, a remote one over a real socket, and the embedded database with its
    ledger in PostgreSQL, as TinyDB runs its table tests on each storage and py-lmdb its suite
    on each backend. ``@pytest.mark.embedded`` keeps a test to the embedded one (it reads files
    or the ledger)."""
    if "db" in metafunc.fixturenames:
        kinds = getattr(metafunc.module, "DB_KINDS", IMPLEMENTATIONS)  # a module may ask for others
        if metafunc.definition.get_closest_marker("embedded"):
            kinds = ("embedded",)
        metafunc.parametrize("db", kinds, indirect=True)


@contextlib.contextmanager
def open_database(kind: str, path):
    """A new, empty database of ``kind``: ``embedded`` (``docstore.open``), or ``remote``: an
    immudoc server in this process on an ephemeral port and a client connected to it over a real
    socket (not verifying, as the embedded one), or ``remote-verifying``: the same with a
    verifying client (its first state and the server's key pinned on first use)."""
    import docstore

    if kind == "embedded":
        with docstore.open(path) as d:
            yield d
        return
    import io

    from docstore.server.app import Server, ServerConfig

    served = docstore.open(path)
    server = Server(served, ServerConfig(port=0), err=io.StringIO())
    port = server.start()
    try:
        if kind == "remote-verifying":
            client = docstore.connect(
                f"127.0.0.1:{port}", state_file=path.parent / "trusted.json", trust_on_first_use=True, timeout=60
            )
        else:
            client = docstore.connect(f"127.0.0.1:{port}", verify=False, timeout=60)
        with client as d:
            yield d
    finally:
        server.stop(0)
        served.close()


@pytest.fixture
def db(request, tmp_path):
    if request.param == "postgres":  # the embedded database with its ledger in PostgreSQL (issue 17)
        import docstore

        with docstore.open(request.getfixturevalue("pg_url"), state_dir=tmp_path / "state") as d:
            yield d
        return
    with open_database(request.param, tmp_path / "db") as d:
        yield d


# ------------------------------------------------------------------ PostgreSQL (issue 17)
@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster for the session (tests/pgcluster.py). Without the binaries
    the tests that need it are skipped, unless IMMUDOC_REQUIRE_POSTGRES=1 (CI) makes that an error."""
    import os

    import pgcluster

    try:
        gen = pgcluster.cluster()
        c = next(gen)
    except pgcluster.Unavailable as e:
        if os.environ.get("IMMUDOC_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL: {e}")
    yield c
    with contextlib.suppress(StopIteration):
        next(gen)


@pytest.fixture
def pg_url(pg_cluster):
    """The URL of a new, empty PostgreSQL database (dropped after the test)."""
    url = pg_cluster.new_database()
    yield url
    drop = getattr(pg_cluster, "drop", None)
    if drop is not None:
        with contextlib.suppress(Exception):  # a test that left the server stopped: dropped at the end
            drop(url)


# ------------------------------------------------------------------ a database on either backend
BACKENDS = ("files", "postgres")


class Place:
    """Where a test's database lives: a directory (``files``) or a new PostgreSQL database and a
    state directory (``postgres``). ``open(**kw)`` opens it as ``docstore.open`` would."""

    def __init__(self, backend: str, target, state_dir) -> None:
        self.backend = backend
        self.target = target
        self.state_dir = state_dir

    def open(self, **kw):
        import docstore

        if self.backend == "postgres":
            kw.setdefault("state_dir", self.state_dir)
        return docstore.open(self.target, **kw)

    def rewrite_value(self, stored: bytes, new_value: bytes) -> None:
        """Overwrite the value after the 16-byte salt of ``stored`` where the log keeps it, and
        fix the record's checksum, as a careful attacker with write access would: in the file
        ``ledger/txlog``, or in the ``kv_tx`` row (PostgreSQL: an operator's UPDATE)."""
        self._rewrite(stored, 16, new_value)

    def rewrite_bytes(self, old: bytes, new: bytes) -> None:
        """Replace ``old`` (once in the whole log) by ``new`` of the same length, likewise."""
        assert len(old) == len(new)
        self._rewrite(old, 0, new)

    def _rewrite(self, find: bytes, skip: int, new: bytes) -> None:
        import zlib

        if self.backend == "files":
            from docstore.cli.demo import rewrite_in_log

            txlog = self.target / "ledger" / "txlog"
            assert txlog.read_bytes().count(find) == 1, "the bytes are once in the log"
            rewrite_in_log(str(txlog), find, skip, new)
            return
        import psycopg

        with psycopg.connect(self.target, autocommit=True) as conn:
            rows = conn.execute("SELECT tx_id, payload, extra FROM kv_tx WHERE position(%s IN payload) > 0", (find,)).fetchall()
            assert len(rows) == 1, "the bytes are in one transaction's row"
            tx_id, payload, extra = rows[0][0], bytearray(rows[0][1]), bytes(rows[0][2])
            at = bytes(payload).index(find) + skip
            payload[at : at + len(new)] = new
            conn.execute(
                "UPDATE kv_tx SET payload = %s, crc = %s WHERE tx_id = %s",
                (bytes(payload), zlib.crc32(extra, zlib.crc32(bytes(payload))), tx_id),
            )

    def server_env(self) -> dict[str, str]:
        """The environment a server process on this database needs (its state directory)."""
        return {"IMMUDOC_STATE_DIR": str(self.state_dir)} if self.backend == "postgres" else {}

    def __repr__(self) -> str:
        return f"Place({self.backend}: {self.target})"


@contextlib.contextmanager
def _place(request, backend: str, directory):
    if backend == "files":
        yield Place("files", directory / "db", None)
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database()
    try:
        yield Place("postgres", url, directory / "state")
    finally:
        with contextlib.suppress(Exception):
            cluster.drop(url)


@pytest.fixture(scope="module", params=BACKENDS)
def module_place(request, tmp_path_factory):
    """A module's database on each backend: the shared proof and reliability suites run on files
    and on PostgreSQL (issue 17), as the ``db`` suites run on each implementation."""
    with _place(request, request.param, tmp_path_factory.mktemp(f"place-{request.param}")) as p:
        yield p


@pytest.fixture(params=BACKENDS)
def place(request, tmp_path):
    """A test's database on each backend (see ``module_place``)."""
    with _place(request, request.param, tmp_path) as p:
        yield p
