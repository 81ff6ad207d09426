"""A write whose reply is lost (the connection dropped after the server committed it) is sent
again with its idempotency key and committed once; a write the client could not deliver at all
says which key to send it again with. Real server process, real sockets, a TCP relay in
between that can swallow the server's reply and cut the connection."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import docstore
from docstore.remote import UnavailableError
from remote_testlib import ServerProcess


class Relay:
    """127.0.0.1:port -> the server. ``swallow()``: from now on the server's bytes are dropped
    and, ``after`` seconds later, every connection is cut (as when a server dies mid-reply)."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.swallowing = threading.Event()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.conns += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_server and self.swallowing.is_set():
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def swallow(self, after: float) -> None:
        self.swallowing.set()

        def cut() -> None:
            time.sleep(after)
            with self.lock:
                conns, self.conns = self.conns, []
            for s in conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.swallowing.clear()

        threading.Thread(target=cut, daemon=True).start()

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.mark.parametrize("write", ["insert", "update", "commit"])
def test_a_write_whose_reply_was_lost_is_committed_once(tmp_path, write):
    with ServerProcess(tmp_path / "db") as s:
        relay = Relay(s.port)
        try:
            db = docstore.connect(f"127.0.0.1:{relay.port}", verify=False, timeout=30)
            c = db.create_collection("orders")
            c.insert({"_id": "o1", "paid": 0})
            before = db.state().tx_id
            if write == "commit":  # the transaction's reads first, through the relay as it is
                tx = db.transaction()
                tx["orders"].insert({"_id": "o2"})
                tx["orders"].update("o1", {"$inc": {"paid": 5}})
            relay.swallow(after=1.0)  # the server commits; its reply never arrives; the line drops
            if write == "insert":
                doc_id = c.insert({"order": 7})  # no key given: the client made one, and resent it
                assert c.count({"order": 7}) == 1 and c.get(doc_id)["order"] == 7
            elif write == "update":
                doc = c.update("o1", {"$inc": {"paid": 100}})
                assert doc["paid"] == 100 and c.get("o1")["paid"] == 100  # not 200
            else:
                assert tx.commit() == before + 1 and c.get("o1")["paid"] == 5
            assert db.state().tx_id == before + 1  # committed once, though sent twice
            assert db.audit().ok
            db.close()
        finally:
            relay.close()


def test_an_undeliverable_write_names_its_key(tmp_path):
    with ServerProcess(tmp_path / "db") as s:
        db = docstore.connect(s.target, verify=False, timeout=30)
        c = db.create_collection("c")
        port = s.port
        s.kill()
        started = time.monotonic()
        with pytest.raises(UnavailableError) as e:
            c.insert({"n": 1}, idempotency_key="order-9")
        assert time.monotonic() - started >= 3  # it was sent again, with pauses, before giving up
        assert e.value.idempotency_key == "order-9" and "idempotency_key='order-9'" in str(e.value)
        db.close()
    with ServerProcess(tmp_path / "db", "--port", str(port)) as again:  # back: send it with the key
        db = docstore.connect(again.target, verify=False)
        doc_id = db["c"].insert({"n": 1}, idempotency_key="order-9")
        assert db["c"].insert({"n": 1}, idempotency_key="order-9") == doc_id and db["c"].count() == 1
        db.close()
