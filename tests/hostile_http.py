"""Raw-socket clients for the hostile-input tests of mixrl's HTTP services (issue 18): requests urllib will not
send (negative Content-Length, headers without their body, a trickle), connection floods, memory probes, and
a self-signed certificate for the TLS tests."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def rss_mb() -> float:
    """Resident memory of this process (the servers under test run in it, in a thread)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def connect(port: int, timeout_s: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    s.settimeout(timeout_s)
    return s


def read_response(s: socket.socket) -> tuple[int | None, bytes]:
    """(status, whole bytes read) until the peer closes or the headers + Content-Length body are in."""
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                break
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, data


def request(port: int, raw: bytes, *, timeout_s: float = 5.0) -> tuple[int | None, bytes, float]:
    """Send ``raw`` as is; (status, response bytes, seconds until the answer)."""
    start = time.monotonic()
    with connect(port, timeout_s) as s:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, data = read_response(s)
    return status, data, time.monotonic() - start


def post(path: str, body: bytes, headers: dict | None = None) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return head.encode() + b"\r\n" + body


def seconds_until_closed(s: socket.socket, trickle: bytes = b"", every_s: float = 0.2, limit_s: float = 15.0) -> float:
    """Keep the connection alive by sending ``trickle`` every ``every_s`` (nothing if empty); seconds until the
    server closes it (``limit_s`` if it never does)."""
    start = time.monotonic()
    s.settimeout(every_s)
    while time.monotonic() - start < limit_s:
        try:
            if trickle:
                s.sendall(trickle)
            chunk = s.recv(4096)
            if not chunk:
                return time.monotonic() - start
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - start
    return limit_s


def flood(port: int, n: int, raw: bytes) -> list[int | None]:
    """Open ``n`` connections at once (all connects first, then the requests): the status each one got."""
    socks = []

    def open_one(_):
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=64) as pool:
        socks = list(pool.map(open_one, range(n)))

    def ask(s):
        if s is None:
            return None
        try:
            with s:
                s.settimeout(20)
                s.sendall(raw)
                return read_response(s)[0]
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=64) as pool:
        return list(pool.map(ask, socks))


def self_signed_cert(folder: Path) -> tuple[str, str]:
    """A certificate for ``localhost`` / 127.0.0.1 and its key, as PEM files: (certfile, keyfile); made with
    ``cryptography`` when installed, else the ``openssl`` command."""
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    try:
        from cryptography import x509
    except ImportError:
        import subprocess

        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(keyfile), "-out", str(certfile), "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        return str(certfile), str(keyfile)
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return str(certfile), str(keyfile)


def listen_backlog(port: int) -> int | None:
    """The listen backlog of the socket listening on ``port`` (``ss``'s Send-Q), or None without ``ss``."""
    import shutil
    import subprocess

    if not shutil.which("ss"):
        return None
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
    return int(out[2]) if len(out) > 2 else None
