"""The seed's metrics (§22), scraped from the three production processes started for real.

`mailhub api`, `mailhub worker` and `mailhub mx` run as their own processes on the test's
servers (dnsmasq MX records and SMTP sinks from tests/support/outbound.py, a real clamd).
Each metric must exist in the process that knows it, and move when its event happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.embedded import free_port
from app.web.webhooks import signature_for
from tests.support.clamd import EICAR, ClamdServer
from tests.support.outbound import SENDER_DOMAIN, Outbound, outbound_world

ROOT = Path(__file__).resolve().parents[2]
MAILHUB = str(Path(sys.executable).parent / "mailhub")
WEBHOOK_SECRET = "metrics-webhook-secret"

WORKER_METRICS = [
    "mailhub_send_queue_recipients",
    "mailhub_delivery_attempts_total",
    "mailhub_bounces_total",
    "mailhub_delivery_provider_errors_total",
    "mailhub_smtp_outbound_transaction_seconds",
    "mailhub_search_index_lag_seconds",
    "mailhub_search_index_lag_last_seconds",
]
MX_METRICS = [
    "mailhub_mx_messages_total",
    "mailhub_mx_data_seconds",
    "mailhub_mx_stage_seconds",
    "mailhub_mx_commit_seconds",
    "mailhub_mx_commit_messages",
    "mailhub_spam_verdicts_total",
    "mailhub_spam_score",
    "mailhub_attachment_scans_total",
    "mailhub_bounces_total",
    "mailhub_complaints_total",
]
API_METRICS = ["mailhub_complaints_total", "mailhub_bounces_total"]


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[set[str], Samples]:
    """(metric family names, {(sample name, labels): value}) of one /metrics page."""
    text = httpx.get(url, timeout=10).text
    families, samples = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name if family.type != "counter" else family.name + "_total")
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; without labels, the sum over every labelled series of the name."""
    if labels:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)
    return sum(v for (n, _), v in samples.items() if n == name)


def wait_for(url: str, check: Any, within: float = 60.0) -> Samples:
    """Scrape until ``check(samples)`` holds; the last scrape's samples."""
    deadline = time.monotonic() + within
    while True:
        try:
            _, samples = scrape(url)
            if check(samples):
                return samples
        except httpx.HTTPError:
            samples = {}
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}: condition not met; samples: {samples}")
        time.sleep(0.25)


def _env(w: Outbound, **extra: str) -> dict[str, str]:
    s = w.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILHUB_")}
    env.update(
        {
            "MAILHUB_MONGODB_URI": s.mongodb_uri,
            "MAILHUB_MONGODB_DATABASE": s.mongodb_database,
            "MAILHUB_REDIS_URL": s.redis_url,
            "MAILHUB_REDIS_PREFIX": s.redis_prefix,
            "MAILHUB_TYPESENSE_URL": s.typesense_url,
            "MAILHUB_TYPESENSE_API_KEY": s.typesense_api_key.get_secret_value(),
            "MAILHUB_TYPESENSE_COLLECTION": s.typesense_collection,
            "MAILHUB_DNS_SERVERS": ",".join(s.dns_servers),
            "MAILHUB_DELIVERY_PORT": str(s.delivery_port),
            "MAILHUB_DELIVERY_TIMEOUT_SECONDS": "2",
            "MAILHUB_SECRET_KEY": s.secret_key.get_secret_value(),
            "MAILHUB_HOSTNAME": s.hostname,
            "MAILHUB_ENVIRONMENT": "test",
            "MAILHUB_LOG_LEVEL": "WARNING",
            "MAILHUB_HTTP_HOST": "127.0.0.1",
            "MAILHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
            **extra,
        }
    )
    return env


class Processes:
    def __init__(self, folder: Path) -> None:
        self.running: list[subprocess.Popen[bytes]] = []
        self.folder = folder

    def start(self, command: str, env: dict[str, str]) -> None:
        with open(self.output(command), "wb") as out:
            self.running.append(
                subprocess.Popen([MAILHUB, command], env=env, stdout=out, stderr=subprocess.DEVNULL)
            )

    def output(self, command: str) -> Path:
        """What the process printed on its standard output (its start-up line)."""
        return self.folder / f"{command}.out"

    def stop(self) -> None:
        for p in self.running:
            p.terminate()
        for p in self.running:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def clamd() -> Iterator[ClamdServer]:
    server = ClamdServer().start()
    yield server
    server.stop()


def _mail(subject: str, attachment: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = "dave@elsewhere.test"
    msg["To"] = f"alice@{SENDER_DOMAIN}"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@elsewhere.test>"
    msg.set_content("Here is the report you asked for.")
    msg.add_attachment(attachment, maintype="application", subtype="octet-stream", filename="a.bin")
    return msg.as_bytes()


def _smtp(port: int, raw: bytes) -> int:
    """One transaction; the reply code to DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.elsewhere.test")
        try:
            client.sendmail("dave@elsewhere.test", [f"alice@{SENDER_DOMAIN}"], raw)
        except smtplib.SMTPDataError as e:
            return e.smtp_code
        return 250


def _webhook(api: str, event: dict[str, Any]) -> httpx.Response:
    body = json.dumps(event).encode()
    stamp = str(int(time.time()))
    return httpx.post(
        f"{api}/webhooks/events",
        content=body,
        headers={
            "content-type": "application/json",
            "x-mailhub-timestamp": stamp,
            "x-mailhub-signature": signature_for(WEBHOOK_SECRET.encode(), stamp, body),
        },
        timeout=30,
    )


async def test_each_process_exposes_its_metrics_and_they_move_with_their_events(
    settings, clamd, tmp_path
):
    options = {
        "ok": {
            "rcpt": {
                "gone@ok.test": "550 5.1.1 <gone@ok.test>: user unknown",
                "later@ok.test": "451 4.3.0 please try again later",
            }
        }
    }
    async with outbound_world(settings, worker=False, sink_options=options) as w:
        api_port, worker_port, mx_port, smtp_port = (free_port() for _ in range(4))
        procs = Processes(tmp_path)
        try:
            procs.start("worker", _env(w, MAILHUB_METRICS_PORT=str(worker_port)))
            procs.start(
                "mx",
                _env(
                    w,
                    MAILHUB_METRICS_PORT=str(mx_port),
                    MAILHUB_SMTP_HOST="127.0.0.1",
                    MAILHUB_SMTP_PORT=str(smtp_port),
                    MAILHUB_CLAMD=str(clamd.socket),
                ),
            )
            procs.start("api", _env(w, MAILHUB_HTTP_PORT=str(api_port)))
            api = f"http://127.0.0.1:{api_port}"
            urls = {
                "worker": f"http://127.0.0.1:{worker_port}/metrics",
                "mx": f"http://127.0.0.1:{mx_port}/metrics",
                "api": f"{api}/metrics",
            }
            await asyncio.to_thread(_exercise, w, urls, api, smtp_port, clamd)
            # the servers run on their default event loop (app/loops.py)
            for command in ("mx", "worker"):
                assert "event loop uvloop)" in procs.output(command).read_text()
        finally:
            await asyncio.to_thread(procs.stop)


def _wait_port(port: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _exercise(w: Outbound, urls: dict[str, str], api: str, smtp_port: int, clamd: Any) -> None:
    _wait_port(smtp_port)
    for name, wanted in (("worker", WORKER_METRICS), ("mx", MX_METRICS), ("api", API_METRICS)):
        wait_for(urls[name], lambda s: True)  # it answers
        families, _ = scrape(urls[name])
        missing = [m for m in wanted if m not in families]
        assert not missing, f"{name} lacks {missing}"
    before = {name: scrape(url)[1] for name, url in urls.items()}

    # --- inbound through the MX: a clean attachment, a virus, clamd down ------------------------
    assert _smtp(smtp_port, _mail("clean report", b"quarterly numbers\n")) == 250
    assert _smtp(smtp_port, _mail("infected report", b"x" + EICAR + b"x")) == 554
    mx = scrape(urls["mx"])[1]
    mx0 = before["mx"]
    assert value(mx, "mailhub_mx_messages_total", outcome="accepted") == 1 + value(
        mx0, "mailhub_mx_messages_total", outcome="accepted"
    )
    assert value(mx, "mailhub_mx_messages_total", outcome="rejected") == 1 + value(
        mx0, "mailhub_mx_messages_total", outcome="rejected"
    )
    assert value(mx, "mailhub_mx_data_seconds_count") == 2 + value(
        mx0, "mailhub_mx_data_seconds_count"
    )
    # where the reply's time went: both messages were parsed, scored and authenticated, the
    # clean one was stored, alone in its group commit
    for stage, n in (("analysis", 2), ("auth", 2), ("store", 1)):
        assert value(mx, "mailhub_mx_stage_seconds_count", stage=stage) == n + value(
            mx0, "mailhub_mx_stage_seconds_count", stage=stage
        ), stage
    assert value(mx, "mailhub_mx_stage_seconds_sum", stage="store") > value(
        mx0, "mailhub_mx_stage_seconds_sum", stage="store"
    )
    assert value(mx, "mailhub_mx_commit_seconds_count") == 1 + value(
        mx0, "mailhub_mx_commit_seconds_count"
    )
    assert value(mx, "mailhub_mx_commit_messages_sum") == 1 + value(
        mx0, "mailhub_mx_commit_messages_sum"
    )
    assert value(mx, "mailhub_spam_verdicts_total") == 1 + value(mx0, "mailhub_spam_verdicts_total")
    assert value(mx, "mailhub_spam_score_count") == 1 + value(mx0, "mailhub_spam_score_count")
    for result in ("clean", "infected"):
        assert value(mx, "mailhub_attachment_scans_total", result=result) == 1 + value(
            mx0, "mailhub_attachment_scans_total", result=result
        )
    clamd.stop()
    assert _smtp(smtp_port, _mail("while clamd is down", b"more numbers\n")) == 451
    mx = scrape(urls["mx"])[1]
    assert value(mx, "mailhub_attachment_scans_total", result="error") == 1 + value(
        mx0, "mailhub_attachment_scans_total", result="error"
    )
    assert value(mx, "mailhub_mx_messages_total", outcome="tempfail") == 1 + value(
        mx0, "mailhub_mx_messages_total", outcome="tempfail"
    )

    # --- the worker indexed the stored message: its lag was observed ----------------------------
    wait_for(
        urls["worker"],
        lambda s: (
            value(s, "mailhub_search_index_lag_seconds_count")
            > value(before["worker"], "mailhub_search_index_lag_seconds_count")
        ),
    )

    # --- outbound: sent, hard bounce (5xx), deferral (4xx), a domain that does not exist --------
    token = _login(api, w)
    sent = _send(api, token, ["bob@ok.test", "gone@ok.test", "later@ok.test", "x@nowhere.test"])
    w0 = before["worker"]

    def delivered(s: Samples) -> bool:
        def moved(name: str, **labels: str) -> bool:
            return value(s, name, **labels) > value(w0, name, **labels)

        return (
            moved("mailhub_delivery_attempts_total", domain="ok.test", result="sent")
            and moved("mailhub_delivery_attempts_total", domain="ok.test", result="bounced")
            and moved("mailhub_delivery_attempts_total", domain="ok.test", result="deferred")
            and moved("mailhub_delivery_attempts_total", domain="nowhere.test", result="bounced")
            and moved("mailhub_bounces_total", bounce_class="invalid_mailbox", source="smtp")
            and moved("mailhub_delivery_provider_errors_total", kind="4xx")
            and moved("mailhub_delivery_provider_errors_total", kind="5xx")
            and moved("mailhub_delivery_provider_errors_total", kind="dns")
            and value(s, "mailhub_smtp_outbound_transaction_seconds_count")
            >= 3 + value(w0, "mailhub_smtp_outbound_transaction_seconds_count")
        )

    wait_for(urls["worker"], delivered)
    # The sweep (every 15 s) counts the queue: the deferred recipient waits there.
    wait_for(
        urls["worker"],
        lambda s: value(s, "mailhub_send_queue_recipients", status="deferred") == 1,
        within=40,
    )

    # --- provider events through the API: a complaint and a bounce ------------------------------
    a0 = before["api"]
    r = _webhook(
        api,
        {
            "id": "evt-complaint",
            "type": "complained",
            "message_id": sent,
            "recipient": "bob@ok.test",
        },
    )
    assert r.status_code == 200, r.text
    r = _webhook(
        api,
        {
            "id": "evt-bounce",
            "type": "bounced",
            "message_id": sent,
            "recipient": "later@ok.test",
            "smtp": {"code": 550, "enhanced": "5.1.1", "text": "user unknown"},
        },
    )
    assert r.status_code == 200, r.text
    a = scrape(urls["api"])[1]
    assert value(a, "mailhub_complaints_total", source="webhook") == 1 + value(
        a0, "mailhub_complaints_total", source="webhook"
    )
    assert value(a, "mailhub_bounces_total", bounce_class="invalid_mailbox", source="report") == (
        1 + value(a0, "mailhub_bounces_total", bounce_class="invalid_mailbox", source="report")
    )


def _login(api: str, w: Outbound) -> str:
    r = httpx.post(
        f"{api}/graphql",
        json={
            "query": "mutation($e: String!, $p: String!) { login(email: $e, password: $p) "
            "{ ... on LoginSuccess { token } } }",
            "variables": {"e": w.sender.email, "p": "correct horse battery"},
        },
        timeout=30,
    )
    return str(r.json()["data"]["login"]["token"])


def _send(api: str, token: str, to: list[str]) -> str:
    r = httpx.post(
        f"{api}/graphql",
        json={
            "query": "mutation($input: SendEmailInput!) { sendEmail(input: $input) "
            "{ __typename ... on SendEmailSuccess { item { messageId } } } }",
            "variables": {"input": {"to": to, "subject": "Metrics", "text": "Hello.\n"}},
        },
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )
    body = r.json()
    assert "errors" not in body, body
    return str(body["data"]["sendEmail"]["item"]["messageId"])


def test_alert_rules_are_valid_and_cover_the_seed_alerts() -> None:
    path = ROOT / "deploy" / "prometheus-alerts.yml"
    rules = yaml.safe_load(path.read_text())
    groups = {g["name"]: g for g in rules["groups"]}
    assert set(groups) == {"mailhub-delivery", "mailhub-search", "mailhub-inbound"}
    alerts = {r["alert"] for g in groups.values() for r in g["rules"]}
    assert {
        "MailhubSendQueueGrowing",
        "MailhubBounceRateOverReputationThreshold",
        "MailhubSearchIndexingLagOver60s",
        "MailhubClamdFailing",
    } <= alerts
    for g in groups.values():
        for r in g["rules"]:
            assert r["expr"].strip() and r["labels"]["severity"] in ("warning", "critical")
            assert r["annotations"]["summary"]
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian package prometheus) is needed to check the rules"
    check = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_dashboard_shows_every_seed_metric() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in {*WORKER_METRICS, *MX_METRICS} - {"mailhub_search_index_lag_last_seconds"}:
        assert metric in exprs, f"no panel shows {metric}"
