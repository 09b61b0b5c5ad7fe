"""The `mailhub` command as an operator uses it: real processes, real servers."""

import imaplib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import psutil

from app.embedded import free_port

MAILHUB = str(Path(sys.executable).parent / "mailhub")


def run(args, env):
    return subprocess.run([MAILHUB, *args], env=env, capture_output=True, text=True, timeout=120)


def test_domains_add_and_users_create_against_configured_servers(services, unique_name):
    env = {
        **os.environ,
        "MAILHUB_MONGODB_URI": services.mongodb,
        "MAILHUB_REDIS_URL": services.redis,
        "MAILHUB_MONGODB_DATABASE": unique_name,
        "MAILHUB_HOSTNAME": "mx.example.test",
    }
    r = run(["domains", "add", "Example.TEST"], env)
    assert r.returncode == 0, r.stderr
    assert "example.test. IN MX 10 mx.example.test." in r.stdout
    assert '._domainkey.example.test. IN TXT "v=DKIM1; k=rsa; p=' in r.stdout
    assert "_dmarc.example.test. IN TXT" in r.stdout and "v=spf1" in r.stdout

    r = run(
        ["users", "create", "ann@example.test", "--password", "a long password", "--name", "Ann"],
        env,
    )
    assert r.returncode == 0, r.stderr
    r = run(["users", "create", "ann@example.test", "--password", "a long password"], env)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = run(["users", "create", "x@not-hosted.test", "--password", "a long password"], env)
    assert r.returncode == 1 and "not hosted" in r.stderr


def test_bad_configuration_names_the_variable(services):
    env = {**os.environ, "MAILHUB_MONGODB_URI": "http://wrong", "MAILHUB_REDIS_URL": services.redis}
    r = run(["domains", "add", "example.test"], env)
    assert r.returncode == 2
    assert "MAILHUB_MONGODB_URI" in r.stderr and "mongodb://" in r.stderr
    r = run(["api"], {k: v for k, v in os.environ.items() if not k.startswith("MAILHUB_")})
    assert r.returncode == 2 and "MAILHUB_MONGODB_URI" in r.stderr


def test_dev_starts_everything_seeds_demo_users_and_stops_cleanly(tmp_path):
    http_port, smtp_port = free_port(), free_port()
    imap_port, pop3_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILHUB_")}
    proc = subprocess.Popen(
        [
            MAILHUB,
            "dev",
            "--data-dir",
            str(tmp_path / "var"),
            "--http-port",
            str(http_port),
            "--smtp-port",
            str(smtp_port),
            "--imap-port",
            str(imap_port),
            "--pop3-port",
            str(pop3_port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            output.append(line)
            if "Ctrl-C stops everything" in line or proc.poll() is not None:
                break
        text = "".join(output)
        assert f"http://127.0.0.1:{http_port}/graphql" in text, text
        assert "alice@demo.mailhub.test" in text and "password:" in text
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3, children  # mongodb, redis, typesense

        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=5) as r:
            assert r.status == 200
        q = (
            'mutation { login(email: "alice@demo.mailhub.test", password: "alice-demo-pass") '
            "{ __typename ... on LoginSuccess { token } } }"
        )
        body = httpx.post(
            f"http://127.0.0.1:{http_port}/graphql", json={"query": q}, timeout=10
        ).json()
        assert body["data"]["login"]["__typename"] == "LoginSuccess"
        assert f"imap://127.0.0.1:{imap_port}" in text and f"pop://127.0.0.1:{pop3_port}" in text
        imap = imaplib.IMAP4("127.0.0.1", imap_port, timeout=10)
        imap.login("alice@demo.mailhub.test", "alice-demo-pass")
        assert imap.select("INBOX")[0] == "OK"
        imap.logout()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    time.sleep(0.5)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], alive
