"""A SecantusDB server of a test's own, to kill and start again (outage tests), and the
settings of a system that uses it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from app.config import Settings
from app.embedded import _mongo_ready, secantus_argv


def start_mongo(port: int, path: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        secantus_argv(port, path, "ERROR"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not _mongo_ready(f"mongodb://127.0.0.1:{port}/?directConnection=true"):
        assert time.monotonic() < deadline and proc.poll() is None, "mongo did not start"
        time.sleep(0.1)
    return proc


def own_mongo_settings(port: int, services: Any, name: str, **more: Any) -> Settings:
    """A system on the server at ``port`` and the suite's Redis, fast to notice an outage."""
    options: dict[str, Any] = {"mongo_timeout_ms": 2000, **more}
    return Settings(
        mongodb_uri=f"mongodb://127.0.0.1:{port}/?directConnection=true",
        mongodb_database=name,
        redis_url=services.redis,
        redis_prefix=name,
        secret_key="k" * 32,
        _env_file=None,
        **options,
    )
