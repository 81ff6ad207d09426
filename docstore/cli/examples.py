"""The "Examples:" section of every command's ``--help``: one table, applied once all commands
are registered (the end of app.py).

A command whose help already has an ``Examples:`` section keeps its own; the table gives the
others theirs. Either way the section is laid out verbatim (click's ``\\b``), one command a
line, so that a long example is not rewrapped and can be copied as it is.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer

EXAMPLES: dict[str, list[str]] = {
    "init": ["immudoc --db ./trial init --origin example.com/trials",
             "IMMUDOC_DB=./trial immudoc init"],
    "insert": ["echo '{\"_id\": \"V-1\", \"patient\": \"P-1\"}' | immudoc insert visits",
               "immudoc insert visits visits.json --reason \"paper forms, batch 3\" --as coordinator@oslo"],
    "get": ["immudoc get visits V-1", "immudoc get visits V-1 --at-tx 12 --format json"],
    "find": ["immudoc find visits '{\"dosage.mg\": {\"$gte\": 50}}' --sort -dosage.mg --limit 10",
             "immudoc find visits '{\"site\": \"Oslo\"}' --projection '{\"patient\": 1}' --format jsonl",
             "immudoc find visits '{\"patient\": \"P-1\"}' --prove -o complete.json"],
    "count": ["immudoc count visits", "immudoc count visits '{\"site\": \"Oslo\"}' --prove -o count.json"],
    "update": ["immudoc update visits V-2 '{\"$set\": {\"dosage.mg\": 25}}' --reason \"transcription error\""],
    "replace": ["immudoc replace visits V-2 '{\"patient\": \"P-2\", \"dosage\": {\"mg\": 25}}'",
                "immudoc replace visits V-2 corrected.json --reason \"re-entered\""],
    "delete": ["immudoc delete visits V-9 --reason \"entered in error\""],
    "prove": ["immudoc prove visits V-2 --pointer /dosage/mg --known-state trusted.checkpoint -o proof.json",
              "immudoc prove visits V-2 --latest -o latest.json",
              "immudoc prove visits --absent V-9 -o absent.json"],
    "verify": ["immudoc verify proof.json --state trusted.checkpoint --key \"$(cat verifier.key)\""],
    "state": ["immudoc state", "immudoc state --save trusted.checkpoint"],
    "checkpoint": ["immudoc checkpoint -o today.checkpoint"],
    "consistency": ["immudoc consistency trusted.checkpoint"],
    "audit": ["immudoc audit", "immudoc audit --state trusted.checkpoint --format json"],
    "migrate": ["immudoc migrate ./trial postgresql://immudoc@db.example.com/trial",
                "immudoc migrate postgresql://immudoc@db.example.com/trial ./trial-copy --key-file signing.key"],
    "publish-state": ["immudoc --db postgresql://immudoc@db.example.com/trial publish-state"],
    "export": ["immudoc export visits > visits.jsonl", "immudoc export visits --at-tx 12 -o visits-tx12.jsonl"],
    "import": ["immudoc import visits visits.jsonl", "cat visits.jsonl | immudoc import visits - --reason \"migration\""],
    "serve": ["immudoc --db ./trial serve --port 3323",
              "immudoc --db ./trial serve --tls-cert server.pem --tls-key server.key --tokens-file tokens.txt"],
    "demo": ["immudoc demo"],
    "collection list": ["immudoc collection list", "immudoc collection list --format json"],
    "index create": ["immudoc index create visits patient", "immudoc index create participants email --unique"],
    "key": ["immudoc key", "immudoc --state-file reader.state --key \"$(immudoc key)\" get visits V-1"],
    "key rotate": ["immudoc key rotate", "immudoc key rotate --drop-old"],
    "key retire": ["immudoc key retire"],
}

HEADING = "Examples:"


def with_examples(help_text: str, examples: list[str] | None) -> str:
    """``help_text`` with its Examples section laid out verbatim (its own, else ``examples``)."""
    text = inspect.cleandoc(help_text or "")
    head, found, own = text.partition(HEADING)
    lines = [line.strip() for line in own.splitlines() if line.strip()] if found else list(examples or [])
    if not lines:
        return text
    body = "\n".join(f"  {line}" for line in lines)
    return f"{head.rstrip()}\n\n{HEADING}\n\n\b\n{body}"


def apply(app: typer.Typer, prefix: str = "") -> None:
    """Give every command of ``app`` (and of its sub-apps) its Examples section."""
    for info in app.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        info.help = with_examples(info.help or _doc(info.callback), EXAMPLES.get(prefix + name))
    for group in app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        name = group.name or ""
        callback = sub.registered_callback
        if callback is not None and sub.info.invoke_without_command:  # a group that is a command too (key)
            sub.info.help = with_examples(_help_of(sub.info.help) or _doc(callback.callback), EXAMPLES.get(prefix + name))
        apply(sub, prefix + name + " ")


def _help_of(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _doc(callback: Any) -> str:
    return (getattr(callback, "__doc__", None) or "") if callback is not None else ""
