"""A private Postfix (Debian's package) on loopback acting as a relay (smarthost).

    with PostfixRelay(port, forward_to=("127.0.0.1", sink_port)):
        ...  # MAILHUB_RELAY_HOST=127.0.0.1, MAILHUB_RELAY_PORT=port

It offers STARTTLS (a throwaway self-signed certificate), relays for 127.0.0.1 only, and
forwards everything to ``forward_to``. Same private-instance recipe as shared/peers/setup.sh:
its own config, queue and log directories, no chroot, nothing of the system's instance touched.
Needs root and ``postfix``. (AUTH is tested against aiosmtpd: Debian's Postfix ignores
``cyrus_sasl_config_path`` for a private instance and reads only /etc/postfix/sasl.)
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

REALM = "relay.test"


def _certificate(folder: Path) -> tuple[Path, Path]:
    import datetime as dt

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, REALM)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


class PostfixRelay:
    def __init__(self, port: int, *, forward_to: tuple[str, int]) -> None:
        self.port = port
        self.forward_to = forward_to
        self.base = Path(tempfile.mkdtemp(prefix="postfix-relay-"))
        self.etc = self.base / "etc"

    @property
    def log(self) -> str:
        path = self.base / "log" / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> PostfixRelay:
        base, etc = self.base, self.etc
        base.chmod(0o755)  # mkdtemp's 0700 would keep Postfix's own users out
        for sub in ("etc", "spool", "data", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        shutil.copytree("/etc/postfix", etc, dirs_exist_ok=True)
        shutil.chown(base / "data", "postfix", "postfix")
        (base / "data").chmod(0o700)
        cert, key = _certificate(base / "etc")
        host, port = self.forward_to
        (etc / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {base}/spool
data_directory = {base}/data
maillog_file_prefixes = {base}/log
maillog_file = {base}/log/postfix.log
myhostname = {REALM}
mydomain = {REALM}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
alias_maps =
alias_database =
relayhost = [{host}]:{port}
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtp_tls_security_level = none
""")
        master = Path("/etc/postfix/master.cf").read_text()
        lines = []
        for line in master.splitlines():
            if re.match(r"^smtp\s+inet", line):
                line = f"127.0.0.1:{self.port} inet n - n - - smtpd"
            elif re.match(r"^[a-z]", line) and len(line.split()) >= 8 and line.split()[4] == "y":
                parts = line.split()
                parts[4] = "n"  # no chroot: the private directories live outside it
                line = "  ".join(parts)
            lines.append(line)
        (etc / "master.cf").write_text("\n".join(lines) + "\n")
        subprocess.run(["postfix", "-c", str(etc), "check"], check=True, capture_output=True)
        subprocess.run(["postfix", "-c", str(etc), "start"], check=True, capture_output=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"postfix did not listen on {self.port}:\n{self.log}")

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "abort"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostfixRelay:
        return self.start()

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()
