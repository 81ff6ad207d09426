"""Signed notes and checkpoints (C2SP signed-note, tlog-checkpoint), against the reference
implementations' own vectors: Go's golang.org/x/mod/sumdb/note test key and note, real signed
tree heads of Go's checksum database (sum.golang.org), and this project's vector in
docs/proofs.md."""

from __future__ import annotations

import base64
import hashlib
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import docstore
import kvcore
from docstore import StorageError, VerificationError
from docstore.proofs import checkpoint as ckpt
from docstore.proofs import keyfile
from docstore.proofs.note import (
    MAX_NOTE_BYTES,
    NoteError,
    Signer,
    Verifier,
    key_id,
    open_note,
    sign_note,
    split_note,
)

DASH = "\u2014"

# golang.org/x/mod/sumdb/note, note_test.go and example_test.go
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIG = f"{DASH} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"

# Go's checksum database: its published verifier key and signed tree heads it served
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_ORIGIN = "go.sum database tree"
SUMDB_NOTES = [
    (63096908, "8lHrQPRYe4KT4WQ9/Qk8/taKnD6IRHbFgfN7vQE2Y54=",
     "Az3gri/oVBN1jAhNZ/iS+W31psFAWRT20/GyrhpU6taFwulQGetBkH5S7wpGXdS935jiIGiUUAXBVHzT/P6fYhqAmAk="),
    (63512409, "F7eHRPqN/cqPtqti14NKdGGaI1Giw8coWP3KxihFZbg=",
     "Az3gri1OBHKT87Xj8UXU8zjoHGy/X+7Nl94f8TZkELVaasolmGApUsWqwVG9vE6hgqYb/ph/w2vdkLIVRH7bMB/FPQ4="),
    (15368405, "/g9am3I6YWNKaZX/jkne1fqd9zEyjss+JXyPXG0WfkY=",
     "Az3grqJGUaSGukG9p8nI2vKgiFn7qGHxn0W+mrwyI6Gz3F0t1J3LzmWk/p96Ybf295EjwdSwlzgijq5WA9d1Ded7owM="),
]

# this project's vector (docs/proofs.md): seed 00 01 .. 1f, name example.com/immudoc-test
OUR_SKEY = "PRIVATE+KEY+example.com/immudoc-test+5977135f+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
OUR_VKEY = "example.com/immudoc-test+5977135f+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
OUR_STATE = kvcore.State(42, hashlib.sha256(b"immudoc checkpoint test vector").digest())
OUR_NOTE = (
    "example.com/immudoc-test\n42\nMgX+o5ptrou3JmN/rQs13Jv0CYy5hqrhSSPFrpIlDx8=\n\n"
    f"{DASH} example.com/immudoc-test WXcTX5KW6tpu+bMnAuXwOzvJfh77dwtfJz8FxPyTajQSxc2RTxJwZAdMtJVNpDcaMThE4tmSBqjaElXAfxdIgrjHXQ8=\n"
)


def _sumdb_note(size: int, root: str, sig: str) -> str:
    return f"{SUMDB_ORIGIN}\n{size}\n{root}\n\n{DASH} sum.golang.org {sig}\n"


# ----------------------------------------------------------------------------- signed notes
def test_the_go_reference_key_signs_exactly_the_go_reference_note():
    signer = Signer.parse(GO_SKEY)
    assert str(signer.verifier) == GO_VKEY and signer.private_string() == GO_SKEY
    assert sign_note(GO_TEXT, [signer]) == GO_TEXT + "\n" + GO_SIG  # Ed25519 is deterministic
    text, good = open_note(GO_TEXT + "\n" + GO_SIG, [Verifier.parse(GO_VKEY)])
    assert text == GO_TEXT and good == [Verifier.parse(GO_VKEY)]
    v = Verifier.parse(GO_VKEY)
    assert key_id(v.name, v.public_key) == 0xC74F20A3 == v.id


def test_signatures_of_unknown_keys_are_ignored_and_a_known_bad_one_refuses_the_note():
    note = GO_TEXT + "\n" + GO_SIG
    other = Signer.generate("PeterNeumann")  # same name, another key (another id)
    stranger = Signer.generate("someone.example")
    cosigned = sign_note(GO_TEXT, [other, stranger]) + GO_SIG
    assert open_note(cosigned, [Verifier.parse(GO_VKEY)])[0] == GO_TEXT
    with pytest.raises(NoteError, match="not signed by a pinned key"):
        open_note(note, [other.verifier, stranger.verifier])
    # a signature by a pinned key that fails refuses the whole note, even if another verifies
    blob = bytearray(base64.b64decode(GO_SIG.split(" ")[2]))
    blob[10] ^= 1
    bad = f"{DASH} PeterNeumann {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(NoteError, match="does not verify"):
        open_note(sign_note(GO_TEXT, [stranger]) + bad, [Verifier.parse(GO_VKEY), stranger.verifier])
    with pytest.raises(NoteError, match="no verifier key is pinned"):
        open_note(note, [])


@pytest.mark.parametrize(
    "note, why",
    [
        (GO_TEXT + GO_SIG, "no blank line"),
        (GO_TEXT + "\n", "no signature"),
        (GO_TEXT[:-1] + "\n\n" + GO_SIG[:-1], "ends with a newline"),
        (GO_TEXT + "\n" + GO_SIG.replace(DASH, "-"), "em dash"),
        (GO_TEXT + "\n" + GO_SIG.replace("PeterNeumann", "Peter Neumann"), "signature line"),
        (GO_TEXT + "\n" + GO_SIG.replace("PeterNeumann", "Peter+Neumann"), "may not hold"),
        (GO_TEXT + "\n" + f"{DASH} PeterNeumann AAAA\n", "4-byte key id"),
        (GO_TEXT + "\n" + f"{DASH} PeterNeumann not*base64\n", "base64"),
        ("If you\tthink\n\n" + GO_SIG, "control characters"),
        (GO_TEXT + "\n" + GO_SIG * 65, "at most 64 signatures"),
        ("x" * (MAX_NOTE_BYTES + 1), "at most"),
        (b"\xff\xfe\n\n" + GO_SIG.encode(), "UTF-8"),
    ],
)
def test_malformed_notes_are_refused(note, why):
    with pytest.raises(NoteError, match=why):
        open_note(note, [Verifier.parse(GO_VKEY)])


@pytest.mark.parametrize(
    "vkey, why",
    [
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "lowercase hex"),
        ("PeterNeumann+c74f20a3+AhpjZ2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T", "not an Ed25519 key"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy1", "base64"),
        ("PeterNeumann+c74f20a3", "reads"),
        ("Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "may not hold"),
        (5, "is a string"),
    ],
)
def test_malformed_verifier_keys_are_refused(vkey, why):
    with pytest.raises(NoteError, match=why):
        Verifier.parse(vkey)


def test_signer_keys_round_trip_and_reject_a_wrong_id():
    s = Signer.generate("example.com/log")
    assert Signer.parse(s.private_string()).verifier == s.verifier
    assert s.private_string() not in repr(s)  # never printed
    parts = s.private_string().split("+")
    parts[3] = "00000000" if parts[3] != "00000000" else "00000001"
    with pytest.raises(NoteError, match="does not match"):
        Signer.parse("+".join(parts)).verifier  # checked on first use


# ------------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("size, root, sig", SUMDB_NOTES)
def test_real_signed_tree_heads_of_gos_checksum_database_verify(size, root, sig):
    note = _sumdb_note(size, root, sig)
    c = ckpt.open_checkpoint(note, [Verifier.parse(SUMDB_VKEY)], origin=SUMDB_ORIGIN)
    assert c.origin == SUMDB_ORIGIN and c.state == kvcore.State(size, base64.b64decode(root))
    # its origin is not its key's name: opened without saying so, it is refused
    with pytest.raises(NoteError, match="origin"):
        ckpt.open_checkpoint(note, [Verifier.parse(SUMDB_VKEY)])
    for edited in (
        note.replace(f"\n{size}\n", f"\n{size + 1}\n"),
        note.replace(root, base64.b64encode(bytes(32)).decode()),
        note.replace(SUMDB_ORIGIN, "go.sum database tree2"),
    ):
        with pytest.raises(NoteError, match="does not verify"):
            ckpt.open_checkpoint(edited, [Verifier.parse(SUMDB_VKEY)], origin=SUMDB_ORIGIN)


def test_this_projects_vector():
    signer = Signer.parse(OUR_SKEY)
    assert str(signer.verifier) == OUR_VKEY
    assert ckpt.sign(signer.name, OUR_STATE, [signer]) == OUR_NOTE
    c = ckpt.open_checkpoint(OUR_NOTE, [Verifier.parse(OUR_VKEY)])
    assert c == ckpt.Checkpoint("example.com/immudoc-test", OUR_STATE, OUR_NOTE)
    assert OUR_STATE.root.hex() == "3205fea39a6dae8bb726637fad0b35dc9bf4098cb986aae14923c5ae92250f1f"


@pytest.mark.parametrize(
    "body, why",
    [
        ("o\n042\n" + base64.b64encode(bytes(32)).decode() + "\n", "leading zeros"),
        ("o\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n", "decimal"),
        ("o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n", "32 bytes"),
        ("o\n1\nnot base64\n", "base64"),
        ("o\n1\n", "three non-empty lines"),
        ("\n1\n" + base64.b64encode(bytes(32)).decode() + "\n", "three non-empty lines"),
        ("o\n" + "9" * 21 + "\n" + base64.b64encode(bytes(32)).decode() + "\n", "decimal"),
    ],
)
def test_malformed_checkpoint_bodies_are_refused(body, why):
    with pytest.raises(NoteError, match=why):
        ckpt.parse_body(body)


def test_extension_lines_are_kept_out_of_the_state_and_the_empty_tree_has_size_0():
    s = Signer.generate("example.com/log")
    body = ckpt.body("example.com/log", kvcore.State(0, hashlib.sha256(b"").digest()))
    assert body.split("\n")[1] == "0"
    note = sign_note(body + "extension line\n", [s])
    assert ckpt.open_checkpoint(note, [s.verifier]).state.tx_id == 0


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF, blacklist_characters="+\x7f"), min_size=1, max_size=40)
    .filter(lambda n: not any(c.isspace() for c in n)),
    tx_id=st.integers(0, 2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
)
def test_checkpoints_round_trip(name, tx_id, root):
    s = Signer.generate(name)
    state = kvcore.State(tx_id, root)
    note = ckpt.sign(name, state, [s])
    assert ckpt.open_checkpoint(note, [s.verifier]) == ckpt.Checkpoint(name, state, note)
    assert ckpt.read_unverified(note).state == state
    text, sigs = split_note(note)
    assert text == ckpt.body(name, state) and [(g.name, g.id) for g in sigs] == [(name, s.id)]


# ---------------------------------------------------------------------- the database's keys
def test_a_new_database_has_a_secret_key_and_signs_its_checkpoints(tmp_path):
    with docstore.open(tmp_path / "db", origin="example.com/trials") as db:
        db.create_collection("c").insert({"_id": "a"})
        key_path = tmp_path / "db" / keyfile.KEY_FILE
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
        assert db.origin == "example.com/trials" and db.verifier_key().startswith("example.com/trials+")
        note = db.checkpoint()
        c = ckpt.open_checkpoint(note, [Verifier.parse(db.verifier_key())])
        assert c.state == db.state() and c.origin == "example.com/trials"
        older = db.ledger.state(1)
        assert ckpt.open_checkpoint(db.checkpoint(older), [Verifier.parse(db.verifier_key())]).state == older
        with pytest.raises(VerificationError):
            db.checkpoint(kvcore.State(1, bytes(32)))  # never signs a state that is not its own
        key = db.verifier_key()
    with docstore.open(tmp_path / "db", readonly=True) as db:  # the same key on reopening
        assert db.verifier_key() == key
    with pytest.raises(StorageError, match="named"):
        docstore.open(tmp_path / "db", origin="example.com/other")  # a ledger keeps its name
    with pytest.raises(docstore.QueryError, match="origin"):
        docstore.open(tmp_path / "db2", origin="has space")


def test_the_key_can_live_elsewhere_and_a_missing_key_is_a_clear_error(tmp_path, monkeypatch):
    elsewhere = tmp_path / "secrets" / "trial.key"
    elsewhere.parent.mkdir()
    with docstore.open(tmp_path / "db", key_file=elsewhere) as db:
        db.create_collection("c")
        key = db.verifier_key()
    assert elsewhere.exists() and not (tmp_path / "db" / keyfile.KEY_FILE).exists()
    monkeypatch.setenv(keyfile.KEY_FILE_ENV, str(elsewhere))
    with docstore.open(tmp_path / "db", readonly=True) as db:
        assert db.verifier_key() == key
    monkeypatch.delenv(keyfile.KEY_FILE_ENV)
    with docstore.open(tmp_path / "db", readonly=True) as db:  # no key where it looks: reads work
        assert db.collections() == ["c"]
        with pytest.raises(StorageError, match="no signing key"):
            db.checkpoint()
    elsewhere.write_text("PRIVATE+KEY+garbage\n")
    with pytest.raises(StorageError, match="line 1"):
        docstore.open(tmp_path / "db", key_file=elsewhere)


def test_rotation_cosigns_until_the_old_key_is_retired(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        c = db.create_collection("c")
        old = Verifier.parse(db.verifier_key())
        new_key = db.rotate_key()
        new = Verifier.parse(new_key)
        assert new.name == old.name and new != old and db.verifier_keys() == [new_key, str(old)]
        c.insert({"_id": "a"})
        note = db.checkpoint()
        # a verifier that still pins the old key keeps verifying; one that pinned the new one too
        assert ckpt.open_checkpoint(note, [old]).state == db.state()
        assert ckpt.open_checkpoint(note, [new]).state == db.state()
        db.retire_old_keys()
        c.insert({"_id": "b"})
        note = db.checkpoint()
        assert ckpt.open_checkpoint(note, [new]).state == db.state()
        with pytest.raises(NoteError, match="not signed by a pinned key"):
            ckpt.open_checkpoint(note, [old])
        dropped = db.rotate_key(keep_old=False)
        assert db.verifier_keys() == [dropped]
    with docstore.open(tmp_path / "db", readonly=True) as db:  # rotation survives a reopen
        assert db.verifier_keys() == [dropped]
        with pytest.raises(kvcore.ReadOnlyError):
            db.rotate_key()


def test_an_existing_database_without_a_key_gets_one_on_its_first_writable_open(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        db.create_collection("c")
    (tmp_path / "db" / keyfile.KEY_FILE).unlink()  # as a database made before keys existed
    with docstore.open(tmp_path / "db", readonly=True) as db:
        with pytest.raises(StorageError):
            db.verifier_key()
    with docstore.open(tmp_path / "db") as db:
        assert ckpt.open_checkpoint(db.checkpoint(), [Verifier.parse(db.verifier_key())]).state == db.state()
