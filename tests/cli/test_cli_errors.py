"""Every error class maps to its exit code through the one table and the one handler."""

from __future__ import annotations

import importlib

import pytest

import docstore
import kvcore
from docstore.cli import errors
from docstore.collections.collection import Collection

CASES = [
    (docstore.NotFoundError("x"), 3),
    (docstore.CollectionNotFoundError("x"), 3),
    (docstore.DocumentNotFoundError("x"), 3),
    (kvcore.KeyNotFoundError("x"), 3),
    (kvcore.TxNotFoundError("x"), 3),
    (docstore.InvalidDocumentError("x"), 4),
    (docstore.SchemaError("x"), 4),
    (docstore.QueryError("x"), 4),
    (docstore.DuplicateIdError("x"), 4),
    (docstore.DuplicateKeyError("x"), 4),
    (docstore.InvalidPointerError("x"), 4),
    (docstore.CollectionExistsError("x"), 4),
    (kvcore.InvalidInputError("x"), 4),
    (kvcore.LimitError("x"), 4),
    (errors.InputError("x"), 4),
    (docstore.VerificationError("x"), 5),
    (docstore.CorruptDataError("x"), 5),
    (kvcore.VerificationError("x"), 5),
    (kvcore.CorruptionError("x"), 5),
    (errors.AuditFailedError("x"), 5),
    (docstore.ConflictError("x"), 6),
    (kvcore.ConflictError("x"), 6),
    (kvcore.LockedError("x"), 7),
    (kvcore.FormatError("x"), 7),
    (kvcore.ReadOnlyError("x"), 7),
    (kvcore.StorageError("x"), 7),
    (kvcore.ClosedError("x"), 7),
    (errors.DatabaseMissingError("x"), 7),
    (PermissionError(13, "Permission denied", "/somewhere"), 7),
    (RuntimeError("x"), 1),
    (docstore.DocstoreError("x"), 1),
]


def test_every_name_in_the_table_is_an_exception_class():
    for _code, _meaning, names in errors.EXIT_CODES:
        for name in names:
            module, _, cls = name.rpartition(".")
            assert issubclass(getattr(importlib.import_module(module), cls), BaseException), name


@pytest.mark.parametrize("exc, code", CASES, ids=[f"{type(e).__module__}.{type(e).__name__}" for e, _ in CASES])
def test_exit_code_table(exc, code):
    assert errors.exit_code_for(exc) == code


@pytest.mark.parametrize("exc, code", CASES, ids=[f"{type(e).__module__}.{type(e).__name__}" for e, _ in CASES])
def test_the_handler_reports_one_line_and_the_code(trial, monkeypatch, check_error, exc, code):
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(Collection, "get", fail)
    r = trial("get", "patients", "p1")
    check_error(r, code)
    if code == 1:
        assert "unexpected error" in r.err and "IMMUDOC_DEBUG" in r.err


def test_debug_shows_the_traceback(trial, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Collection, "get", fail)
    r = trial("get", "patients", "p1", env={"IMMUDOC_DEBUG": "1"})
    assert r.code == 1 and "Traceback" in r.err and "immudoc: error: unexpected error: RuntimeError: boom" in r.err


def test_a_locked_database(trial, db_path, check_error):
    with docstore.open(db_path):  # this process holds the writer lock
        check_error(trial("insert", "patients", input='{"name": "x", "site": "Oslo", "screening": "S-7"}'), 7)
        assert trial("get", "patients", "p1").code == 0  # readers open read-only, without the lock
    assert trial("insert", "patients", input='{"name": "x", "site": "Oslo", "screening": "S-7"}').code == 0


def test_not_a_ledger(cli, db_path, check_error):
    cli("init")
    with open(f"{db_path}/ledger/FORMAT", "w") as f:
        f.write("garbage")
    check_error(cli("collection", "list"), 7)
    check_error(cli("init"), 7)


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["get", "patients"],
        ["get", "patients", "p1", "--bogus"],
        ["find", "patients", "--format", "xml"],
        ["get", "patients", "p1", "--at-tx", "three"],
        ["find", "patients", "--limit", "many"],
        ["verify", "proof.json"],
    ],
)
def test_usage_errors_exit_2(trial, args):
    r = trial(*args)
    assert r.code == 2, (r.out, r.err)
    assert "Traceback" not in r.err and ("Usage:" in r.err or "Error" in r.err)


def test_library_warnings_are_one_line(trial, monkeypatch):
    import warnings

    real_get = Collection.get

    def warn_then_get(self, *args, **kwargs):
        warnings.warn("the index snapshot was damaged; rebuilt the index", kvcore.RecoveryWarning, stacklevel=2)
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(Collection, "get", warn_then_get)
    r = trial("get", "patients", "p1")
    assert r.code == 0 and r.json()["_id"] == "p1"
    assert r.err == "immudoc: warning: the index snapshot was damaged; rebuilt the index\n"
