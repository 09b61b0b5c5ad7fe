"""What `make test` does on a machine that has only Python: the Debian peers the tests talk to
are checked first, and a missing one stops the run with one message (never a traceback
halfway through the suite). The bench scripts find the shared peers only relative to the
checkout or through MAILHUB_PEERS_DIR."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PREFLIGHT = ROOT / "scripts" / "install-debian-peers"
PROGRAMS = [
    "dnsmasq",
    "swaks",
    "postfix",
    "clamd",
    "npm",
    "mbsync",
    "imap",
    "pop3",
    "chromium",
    "promtool",
    "openssl",
]


def _fake_bin(tmp_path: Path, programs: list[str]) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in programs:
        stub = folder / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return folder


def _run(args: list[str], lookup: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=ROOT,
        env={**os.environ, "MAILHUB_PEERS_PATH": str(lookup), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_peers_stop_with_one_message_naming_them_and_the_install_command(
    tmp_path: Path,
) -> None:
    lookup = _fake_bin(tmp_path, [p for p in PROGRAMS if p not in ("dnsmasq", "mbsync")])
    done = _run(["bash", str(PREFLIGHT), "--check"], lookup)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "missing: dnsmasq-base isync" in done.stderr
    assert "apt-get install -y --no-install-recommends dnsmasq-base isync" in done.stderr
    assert "Traceback" not in done.stderr
    assert "swaks" not in done.stderr


def test_nothing_missing_passes_quietly(tmp_path: Path) -> None:
    done = _run(["bash", str(PREFLIGHT), "--check"], _fake_bin(tmp_path, PROGRAMS))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_make_test_stops_before_pytest_when_a_peer_is_missing(tmp_path: Path) -> None:
    lookup = _fake_bin(tmp_path, [p for p in PROGRAMS if p != "dnsmasq"])
    # MAKEFLAGS cleared: under `make test -j` the venv prerequisite could start alongside
    done = _run(
        ["make", "--no-print-directory", "test"],
        lookup,
        MAILHUB_PEERS_INSTALL="no",
        MAKEFLAGS="",
        MAKELEVEL="",
    )
    assert done.returncode != 0
    assert "missing: dnsmasq-base" in done.stderr
    assert "pytest" not in done.stdout + done.stderr
    assert "FileNotFoundError" not in done.stderr


def _bench_inbound():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_inbound", ROOT / "bench" / "inbound.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # registered first: its dataclasses resolve their string annotations through sys.modules
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_finds_the_peers_only_beside_the_checkout_or_by_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench = _bench_inbound()
    monkeypatch.delenv("MAILHUB_PEERS_DIR", raising=False)
    monkeypatch.setattr(bench, "ROOT", tmp_path / "checkout")
    with pytest.raises(SystemExit):
        bench.peers_dir()  # nothing beside this checkout: no absolute fallback elsewhere

    beside = tmp_path / "shared" / "peers"
    beside.mkdir(parents=True)
    (beside / "smtpload.py").write_text("")
    assert bench.peers_dir() == beside

    chosen = tmp_path / "elsewhere"
    chosen.mkdir()
    (chosen / "smtpload.py").write_text("")
    monkeypatch.setenv("MAILHUB_PEERS_DIR", str(chosen))
    assert bench.peers_dir() == chosen


def test_no_test_or_bench_file_names_a_path_outside_the_checkout() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if path != Path(__file__) and f"{ROOT.parent}/" in path.read_text(errors="replace")
    ]
    assert offenders == []
