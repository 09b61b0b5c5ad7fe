"""A real clamd for tests, with a one-signature database of our own (no freshclam, no network).

The signature matches the EICAR test string anywhere in a scanned stream (ClamAV .ndb body
signature, target 0 = any file), so it works on any attachment that contains it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE_NAME = "Mailhub-Test-EICAR"


class ClamdServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="clamd-"))
        self.socket = self.dir / "clamd.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ClamdServer:
        binary = shutil.which("clamd") or "/usr/sbin/clamd"
        database = self.dir / "db"
        database.mkdir()
        (database / "mailhub-test.ndb").write_text(f"{SIGNATURE_NAME}:0:*:{EICAR.hex()}\n")
        config = self.dir / "clamd.conf"
        config.write_text(
            "\n".join(
                [
                    f"LocalSocket {self.socket}",
                    f"DatabaseDirectory {database}",
                    "Foreground yes",
                    f"LogFile {self.dir / 'clamd.log'}",
                    f"PidFile {self.dir / 'clamd.pid'}",
                    f"TemporaryDirectory {self.dir}",
                    "MaxThreads 4",
                    "StreamMaxLength 60M",
                ]
            )
            + "\n"
        )
        self.process = subprocess.Popen(
            [binary, f"--config-file={config}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (
                    (self.dir / "clamd.log").read_text(errors="replace")
                    if (self.dir / "clamd.log").exists()
                    else ""
                )
                raise RuntimeError(f"clamd exited: {log[-2000:]}")
            if self._ping():
                return self
            time.sleep(0.1)
        raise RuntimeError("clamd did not answer")

    def _ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(str(self.socket))
                s.sendall(b"zPING\0")
                return s.recv(16).startswith(b"PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
