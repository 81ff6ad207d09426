"""Exit codes: ONE table mapping library exceptions to exit codes, and the one handler using it.

The table names classes as ``"module.Class"`` strings, resolved only when an error is being
reported (never at import: ``immudoc --help`` must not load the library). The first row whose
classes match the exception wins, so subclasses are listed before their bases.
"""

from __future__ import annotations

import importlib
import os
import re
import sys


class CliError(Exception):
    """An error found by the command line itself; subclasses pick the exit code via the table."""


class InputError(CliError):
    """Input the command cannot read: malformed JSON, an unreadable file."""


class DatabaseMissingError(CliError):
    """No database at the path given by --db / IMMUDOC_DB (and the command does not create one)."""


class AuditFailedError(CliError):
    """``immudoc audit`` found a problem."""


OK = 0
UNEXPECTED = 1
USAGE = 2  # typer's own usage errors (a missing argument, an unknown option)

# (exit code, meaning, exception classes). Order matters: first match wins.
EXIT_CODES: list[tuple[int, str, tuple[str, ...]]] = [
    (
        5,
        "verification failed or tampering detected",
        (
            "docstore.errors.VerificationError",
            "docstore.errors.CorruptDataError",
            "kvcore.errors.VerificationError",
            "kvcore.errors.CorruptionError",
            "docstore.cli.errors.AuditFailedError",
        ),
    ),
    (6, "conflict with a concurrent write", ("docstore.errors.ConflictError", "kvcore.errors.ConflictError")),
    (8, "a query ran past its time budget (max_time_ms, a $regex's budget)", ("docstore.errors.QueryTimeoutError",)),
    (
        3,
        "not found (collection, document, property, transaction)",
        ("docstore.errors.NotFoundError", "kvcore.errors.KeyNotFoundError", "kvcore.errors.TxNotFoundError"),
    ),
    (
        4,
        "invalid input or schema violation",
        (
            "docstore.errors.InvalidDocumentError",
            "docstore.errors.SchemaError",
            "docstore.errors.QueryError",
            "docstore.errors.DuplicateIdError",
            "docstore.errors.DuplicateKeyError",
            "docstore.errors.InvalidPointerError",
            "docstore.errors.CollectionExistsError",
            "docstore.errors.ReasonRequiredError",
            "docstore.errors.ErasureRefusedError",
            "docstore.errors.TransactionTooLargeError",
            "docstore.remote.errors.MessageTooLargeError",
            "kvcore.errors.InvalidInputError",
            "docstore.cli.errors.InputError",
        ),
    ),
    (
        7,
        "database unavailable (missing, locked, read-only, unreadable, storage failure)",
        (
            "kvcore.errors.LockedError",
            "kvcore.errors.FormatError",
            "kvcore.errors.ReadOnlyError",
            "kvcore.errors.StorageError",
            "docstore.errors.StorageError",
            "kvcore.errors.ClosedError",
            "docstore.cli.errors.DatabaseMissingError",
            "builtins.OSError",
        ),
    ),
]


def epilog() -> str:
    """The exit-code table as ``immudoc --help`` prints it (no imports needed)."""
    rows = [(OK, "ok"), (UNEXPECTED, "unexpected error"), (USAGE, "usage error (bad option or argument)")]
    rows += [(code, meaning) for code, meaning, _ in EXIT_CODES]
    lines = ["\b", "Exit codes:"] + [f"  {code}  {meaning}" for code, meaning in sorted(rows)]
    return "\n".join(lines)


def _classes(names: tuple[str, ...]) -> tuple[type, ...]:
    out = []
    for name in names:
        module, _, cls = name.rpartition(".")
        mod = sys.modules.get(module)
        if mod is None:
            if module not in ("builtins", "docstore.cli.errors"):
                continue  # never loaded, so nothing raised can be of its classes
            mod = importlib.import_module(module)
        out.append(getattr(mod, cls))
    return tuple(out)


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an exception (1 if no row of the table matches)."""
    for code, _meaning, names in EXIT_CODES:
        if isinstance(exc, _classes(names)):
            return code
    return UNEXPECTED


_PYTHON_FORMS = [  # the library's messages name its keyword and the CLI's flag: a CLI user needs the flag
    (re.compile(r"\b[a-z_]+=\.\.\. \((--[a-z-]+)\)"), r"\1"),  # give reason=... (--reason) -> give --reason
    (re.compile(r"\(([a-z_]+)=(?:\[\.\.\.\]|\.\.\.), "), "("),  # (verifier_keys=[...], immudoc verify ...) -> (immudoc verify ...)
]


def for_the_command_line(text: str) -> str:
    """A library message as a command-line user reads it: where it names a Python keyword
    beside the option that does the same, the option alone."""
    for pattern, repl in _PYTHON_FORMS:
        text = pattern.sub(repl, text)
    return text


def message_for(exc: BaseException) -> str:
    """One line: what went wrong, without a traceback."""
    text = for_the_command_line(" ".join(str(exc).split()) or type(exc).__name__)
    code = exit_code_for(exc)
    if code == UNEXPECTED:
        return f"unexpected error: {type(exc).__name__}: {text} (set IMMUDOC_DEBUG=1 for the traceback)"
    if code == 5 and type(exc).__name__ == "ProofUnavailableError":
        return f"not verified: {text}"
    if code == 5 and not isinstance(exc, AuditFailedError):
        return f"verification failed: {text}"
    if code == 7 and isinstance(exc, OSError) and exc.filename and text == type(exc).__name__:
        return f"{exc.strerror}: {exc.filename}"
    return text


def handle(exc: Exception) -> int:
    """Report an exception on stderr in one line and return its exit code."""
    if os.environ.get("IMMUDOC_DEBUG"):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print(f"immudoc: error: {message_for(exc)}", file=sys.stderr)
    return exit_code_for(exc)
