"""Helpers of the remote tests: real server processes on ephemeral loopback ports,
certificates, and ledger tampering."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_READY = re.compile(r"listening on (\S+):(\d+) .*ready in ([0-9.]+) s")


class ServerProcess:
    """``python -m docstore.server --db DB --port 0 ...`` in a subprocess.

    Waits for the "listening on HOST:PORT" line and reads the port from it; keeps reading
    stderr in the background (see :attr:`stderr`).
    """

    def __init__(
        self, db: str | os.PathLike[str], *args: str, host: str = "127.0.0.1", wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("GRPC_VERBOSITY", None)
        cmd = [sys.executable, "-m", "docstore.server", "--db", str(db), "--host", host, "--port", "0", *args]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self._err: list[str] = []
        self._err_thread = threading.Thread(target=self._drain, daemon=True)
        self._err_thread.start()
        self.port = 0
        self.startup = 0.0  # seconds from spawning the process to its "listening" line
        self.ready_line = ""
        if wait:
            self.wait_ready()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError(f"the server did not start within {timeout} s; stderr:\n{self.stderr}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    self.proc.wait(5)
                    time.sleep(0.1)
                    raise AssertionError(
                        f"the server exited ({self.proc.returncode}) before listening; stderr:\n{self.stderr}"
                    )
                m = _READY.search(line)
                if m:
                    self.startup = time.perf_counter() - self.started
                    self.port = int(m.group(2))
                    self.ready_line = line.strip()
                    return

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # the server dumps its threads' stacks to stderr
            time.sleep(1)
            self.kill()
            self._err_thread.join(5)
            raise AssertionError(
                f"the server did not exit within {timeout} s after {sig}; stderr:\n{self.stderr[-20000:]}"
            ) from None
        self._err_thread.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            try:
                self.stop()
            except AssertionError:
                pass
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


# ------------------------------------------------------------------ certificates
@dataclass
class Certs:
    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca: str  # a CA that signed nothing of this server's
    other_client_cert: str
    other_client_key: str


def make_certs(directory: Path) -> Certs:
    """A CA, a server certificate for localhost/127.0.0.1, and client certificates (one signed
    by the CA, one by an unrelated CA), as PEM files in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        k = key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(k, hashes.SHA256())
        )
        return cert, k

    def leaf(cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], server: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        k = key()
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(issuer[0].subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return b.sign(issuer[1], hashes.SHA256()), k

    def write(stem: str, cert: x509.Certificate, k: ec.EllipticCurvePrivateKey | None = None) -> tuple[str, str]:
        cpath = directory / f"{stem}.crt"
        cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        kpath = directory / f"{stem}.key"
        if k is not None:
            kpath.write_bytes(
                k.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        return str(cpath), str(kpath)

    directory.mkdir(parents=True, exist_ok=True)
    root = ca("immudoc test CA")
    other = ca("someone else's CA")
    srv = leaf("localhost", root, True)
    cli = leaf("client", root, False)
    stranger = leaf("stranger", other, False)
    ca_path, _ = write("ca", root[0])
    other_path, _ = write("other-ca", other[0])
    s_cert, s_key = write("server", *srv)
    c_cert, c_key = write("client", *cli)
    o_cert, o_key = write("stranger", *stranger)
    return Certs(ca_path, s_cert, s_key, c_cert, c_key, other_path, o_cert, o_key)


# ---------------------------------------------------------------------- tampering
def flip_in_txlog(db_dir: str | os.PathLike[str], needle: bytes, replacement: bytes) -> None:
    """Replace ``needle`` by ``replacement`` (same length) in the ledger's txlog and fix the
    record's CRC, as an attacker with disk access would, so storage checks still pass."""
    assert len(needle) == len(replacement)
    path = Path(db_dir) / "ledger" / "txlog"
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0, "value not found in the txlog"
    off = 0
    frame = struct.Struct(">III")
    while off < len(data):
        plen, elen, _crc = frame.unpack_from(data, off)
        body = off + frame.size
        end = body + plen + elen
        if body <= at < end:
            data[at : at + len(needle)] = replacement
            frame.pack_into(data, off, plen, elen, zlib.crc32(bytes(data[body:end])))
            path.write_bytes(bytes(data))
            return
        off = end
    raise AssertionError("no record holds the value")

