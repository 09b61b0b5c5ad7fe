"""A real DNS server for tests: dnsmasq on a loopback port, serving only the records given.

    with DnsServer(mx={"d1.test": [(10, "mx1.d1.test")]}, a={"mx1.d1.test": "127.0.0.1"},
                   txt={"d1.test": ["v=spf1 ip4:127.0.0.1 -all"]}) as dns:
        settings.dns_servers = [dns.address]      # "127.0.0.1:PORT"

Names not listed answer NXDOMAIN (``--no-resolv``: nothing leaves the machine). A null MX
(RFC 7505) is ``mx={"d.test": [(0, ".")]}``. TXT values longer than 255 bytes are split
into 255-byte strings, as DKIM keys need.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import dns.message
import dns.query


def _free_udp_tcp_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def _txt_value(value: str) -> str:
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return ",".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


class DnsServer:
    def __init__(
        self,
        *,
        mx: dict[str, list[tuple[int, str]]] | None = None,
        a: dict[str, str | list[str]] | None = None,
        txt: dict[str, list[str]] | None = None,
        ttl: int = 0,
    ) -> None:
        self.mx, self.a, self.txt = mx or {}, a or {}, txt or {}
        self.ttl = ttl  # of the records given (dnsmasq's local-ttl; 0, its default: not cached)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="dnsmasq-"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [
            "no-resolv",
            "no-hosts",
            "no-poll",
            "bind-interfaces",
            "listen-address=127.0.0.1",
            f"port={self.port}",
            "log-facility=-",
            "cache-size=0",
            "no-negcache",
            # answer NXDOMAIN for everything not configured instead of forwarding
            "address=/#/",
            f"local-ttl={self.ttl}",
        ]
        # "address=/#/" with no IP makes every other name NXDOMAIN; names below need explicit records
        for name, records in self.mx.items():
            for pref, host in records:
                lines.append(f"mx-host={name},{host.rstrip('.') if host != '.' else ''},{pref}")
        for name, ips in self.a.items():
            for ip in [ips] if isinstance(ips, str) else ips:
                lines.append(f"host-record={name},{ip}")
        for name, values in self.txt.items():
            for value in values:
                lines.append(f"txt-record={name},{_txt_value(value)}")
        return "\n".join(lines) + "\n"

    def start(self) -> DnsServer:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        self.port = _free_udp_tcp_port()
        conf = self.dir / "dnsmasq.conf"
        conf.write_text(self._config())
        self.process = subprocess.Popen(
            [
                binary,
                "--keep-in-foreground",
                f"--conf-file={conf}",
                f"--pid-file={self.dir / 'pid'}",
                "--user=root",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dnsmasq exited: {self.process.stderr.read().decode() if self.process.stderr else ''}"
                )
            try:
                dns.query.udp(
                    dns.message.make_query("probe.invalid", "A"),
                    "127.0.0.1",
                    timeout=0.3,
                    port=self.port,
                )
                return self
            except Exception:
                time.sleep(0.05)
        raise RuntimeError("dnsmasq did not answer")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        self.stop()
