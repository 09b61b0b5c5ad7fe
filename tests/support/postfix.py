"""A private Postfix instance on loopback that relays one domain to our MX (a real upstream MTA).

Built like ``shared/peers/setup.sh``: a config directory of its own (``postfix -c DIR``), queue and
data under a temporary directory, smtpd on a free loopback port, no chroot, and
``transport_maps`` sending the relayed domain to ``[127.0.0.1]:<mx port>``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostfixRelay:
    def __init__(self, domain: str, mx_port: int) -> None:
        self.domain = domain
        self.mx_port = mx_port
        self.port = _free_port()
        self.base = Path(tempfile.mkdtemp(prefix="postfix-relay-", dir="/tmp"))
        self.base.chmod(0o755)  # postfix's unprivileged daemons must reach their queue
        self.etc = self.base / "etc"

    def start(self) -> PostfixRelay:
        for sub in ("etc", "spool", "data", "log"):
            (self.base / sub).mkdir()
        shutil.copy("/etc/postfix/master.cf", self.etc / "master.cf.orig")
        for extra in ("dynamicmaps.cf", "postfix-files"):
            if Path("/etc/postfix", extra).exists():
                shutil.copy(Path("/etc/postfix", extra), self.etc / extra)
        if Path("/etc/postfix/postfix-files.d").is_dir():
            shutil.copytree("/etc/postfix/postfix-files.d", self.etc / "postfix-files.d")
        subprocess.run(["chown", "postfix:postfix", str(self.base / "data")], check=True)
        (self.etc / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {self.base / "spool"}
data_directory = {self.base / "data"}
maillog_file_prefixes = {self.base / "log"}
maillog_file = {self.base / "log" / "postfix.log"}
myhostname = relay.postfix.test
mydomain = postfix.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {self.domain}
transport_maps = hash:{self.etc / "transport"}
alias_maps =
alias_database =
smtp_dns_support_level = disabled
smtp_tls_security_level = none
biff = no
""")
        (self.etc / "transport").write_text(f"{self.domain} smtp:[127.0.0.1]:{self.mx_port}\n")
        lines = []
        for line in (self.etc / "master.cf.orig").read_text().splitlines():
            fields = line.split()
            if re.match(r"^smtp\s+inet\s", line):
                line = f"127.0.0.1:{self.port} inet n - n - - smtpd"
            elif line[:1].isalpha() and len(fields) >= 8 and fields[4] == "y":
                fields[4] = "n"
                line = " ".join(fields)
            lines.append(line)
        (self.etc / "master.cf").write_text("\n".join(lines) + "\n")
        subprocess.run(["postmap", "-c", str(self.etc), str(self.etc / "transport")], check=True)
        subprocess.run(["postfix", "-c", str(self.etc), "check"], check=False, capture_output=True)
        subprocess.run(["postfix", "-c", str(self.etc), "start"], check=True, capture_output=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"postfix did not listen: {self.log()[-2000:]}")

    def log(self) -> str:
        path = self.base / "log" / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def flush(self) -> None:
        subprocess.run(["postqueue", "-c", str(self.etc), "-f"], check=False, capture_output=True)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False, capture_output=True)
        if os.environ.get("MAILHUB_KEEP_POSTFIX"):
            return
        shutil.rmtree(self.base, ignore_errors=True)
