"""Prometheus metrics (seed §22 "what to monitor"): every definition in one place.

Prometheus is an outside system, so its client library stays in this adapter; services report
events through the small functions below and never touch metric objects. Each process exposes
what it observed: the API on ``/metrics`` of its HTTP port, ``mailhub worker`` and ``mailhub
mx`` on ``MAILHUB_METRICS_PORT`` (``serve``); ``mailhub dev`` runs all three in one process,
so its API ``/metrics`` shows everything. docs/operations.md lists the metrics, the dashboard
(deploy/grafana-dashboard.json) and the alerts (deploy/prometheus-alerts.yml).

Cardinality is bounded: destination domains get their own label value for the first
``DOMAIN_LABELS`` domains a process delivers to (in a real mail stream the big providers come
first and stay the bulk), every later one is counted as ``other``; bounce classes, verdicts
and results are closed sets.
"""

from __future__ import annotations

import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

DOMAIN_LABELS = 50  # distinct destination-domain label values per process; the rest "other"
OTHER = "other"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# --- the send queue (worker: the delivery sweep counts it every 15 s) ---------------------------
QUEUE_DEPTH = Gauge(
    "mailhub_send_queue_recipients",
    "Outbound recipients waiting, by status (queued, deferred, sending, scheduled)",
    ["status"],
)

# --- delivery outcomes (worker) -----------------------------------------------------------------
DELIVERIES = Counter(
    "mailhub_delivery_attempts_total",
    "Outbound delivery attempts by destination domain and result (sent, deferred, bounced, "
    "expired)",
    ["domain", "result"],
)
BOUNCES = Counter(
    "mailhub_bounces_total",
    "Bounces by class and where they were learnt: smtp (a 5xx during delivery) or report "
    "(a DSN or provider event afterwards)",
    ["bounce_class", "source"],
)
COMPLAINTS = Counter(
    "mailhub_complaints_total", "Spam complaints (ARF reports, provider events)", ["source"]
)
PROVIDER_ERRORS = Counter(
    "mailhub_delivery_provider_errors_total",
    "Outbound failures by kind: 4xx, 5xx (replies), connection (no MX host answered), dns",
    ["kind"],
)
OUTBOUND_SECONDS = Histogram(
    "mailhub_smtp_outbound_transaction_seconds",
    "One outbound SMTP transaction (MAIL FROM to the reply after DATA)",
    buckets=_LATENCY_BUCKETS,
)

# --- inbound (MX) -------------------------------------------------------------------------------
MX_MESSAGES = Counter("mailhub_mx_messages_total", "DATA transactions by outcome", ["outcome"])
MX_DATA_SECONDS = Histogram(
    "mailhub_mx_data_seconds",
    "Inbound SMTP latency: end of DATA to the reply",
    buckets=_LATENCY_BUCKETS,
)
# Where that latency goes, finer around the MX's usual 0.05-0.5 s (docs/operations.md).
_MX_STAGE_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.5,
    1,
    2.5,
    10,
)
MX_STAGES = ("analysis", "auth", "store")
MX_STAGE_SECONDS = Histogram(
    "mailhub_mx_stage_seconds",
    "Inbound messages: seconds in one stage between end of DATA and the reply (analysis: "
    "MIME parse and spam score, with the wait for a helper process; auth: SPF, DKIM and "
    "DMARC; store: queued for the group commit until durable)",
    ["stage"],
    buckets=_MX_STAGE_BUCKETS,
)
MX_COMMIT_SECONDS = Histogram(
    "mailhub_mx_commit_seconds",
    "Inbound group commits: seconds each (reads, transaction and conflict retries)",
    buckets=_MX_STAGE_BUCKETS,
)
MX_COMMIT_MESSAGES = Histogram(
    "mailhub_mx_commit_messages",
    "Inbound group commits: messages each",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
SPAM_VERDICTS = Counter(
    "mailhub_spam_verdicts_total", "Inbound messages by spam verdict (spam, ham)", ["verdict"]
)
SPAM_SCORES = Histogram(
    "mailhub_spam_score",
    "Spam model score of inbound messages (0 ham .. 1 spam)",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
ATTACHMENT_SCANS = Counter(
    "mailhub_attachment_scans_total",
    "Virus scans of attachments by result: clean, infected, error (clamd failed or unreachable)",
    ["result"],
)

# --- search (worker) ----------------------------------------------------------------------------
INDEX_LAG = Histogram(
    "mailhub_search_index_lag_seconds",
    "Time from a committed mailbox change to its document being searchable",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
INDEX_LAG_LAST = Gauge(
    "mailhub_search_index_lag_last_seconds",
    "Indexing lag of the most recent indexed change (the alert's input)",
)

_domains: set[str] = set()
_domains_lock = threading.Lock()


def domain_label(domain: str) -> str:
    """The label value for a destination domain: itself while there is room, else "other"."""
    domain = domain.lower()
    with _domains_lock:
        if domain in _domains:
            return domain
        if len(_domains) < DOMAIN_LABELS:
            _domains.add(domain)
            return domain
    return OTHER


# --- what services call -------------------------------------------------------------------------


def queue_depth(counts: dict[str, int]) -> None:
    for status, n in counts.items():
        QUEUE_DEPTH.labels(status).set(n)


def delivery_attempt(domain: str, result: str, bounce_class: str | None = None) -> None:
    DELIVERIES.labels(domain_label(domain), result).inc()
    if result == "bounced":
        BOUNCES.labels(bounce_class or "unknown", "smtp").inc()


def delivery_report(kind: str, bounce_class: str | None, source: str) -> None:
    """An asynchronous report about mail we sent: a bounce (DSN, provider) or a complaint."""
    if kind == "bounced":
        BOUNCES.labels(bounce_class or "unknown", "report").inc()
    elif kind == "complained":
        COMPLAINTS.labels(source).inc()


def outbound_reply(code: int | None, seconds: float | None = None) -> None:
    """One outbound transaction's reply (None: no reply, the connection failed)."""
    if seconds is not None:
        OUTBOUND_SECONDS.observe(seconds)
    if code is None:
        PROVIDER_ERRORS.labels("connection").inc()
    elif 400 <= code < 500:
        PROVIDER_ERRORS.labels("4xx").inc()
    elif code >= 500:
        PROVIDER_ERRORS.labels("5xx").inc()


def route_failure() -> None:
    """No usable route to a domain (NXDOMAIN, null MX, DNS trouble)."""
    PROVIDER_ERRORS.labels("dns").inc()


def inbound_data(outcome: str, seconds: float) -> None:
    MX_MESSAGES.labels(outcome).inc()
    MX_DATA_SECONDS.observe(seconds)


def mx_stage(stage: str, seconds: float) -> None:
    """A message spent ``seconds`` in ``stage`` (one of ``MX_STAGES``)."""
    MX_STAGE_SECONDS.labels(stage).observe(seconds)


def mx_commit(messages: int, seconds: float) -> None:
    """One inbound group commit of ``messages`` took ``seconds``."""
    MX_COMMIT_SECONDS.observe(seconds)
    MX_COMMIT_MESSAGES.observe(messages)


def spam_verdict(is_spam: bool, score: float) -> None:
    SPAM_VERDICTS.labels("spam" if is_spam else "ham").inc()
    SPAM_SCORES.observe(score)


def attachment_scan(result: str) -> None:
    ATTACHMENT_SCANS.labels(result).inc()


def index_lag(seconds: float) -> None:
    INDEX_LAG.observe(seconds)
    INDEX_LAG_LAST.set(seconds)


def serve(port: int, host: str) -> None:
    """Serve /metrics on ``host:port`` from a background thread (worker, MX)."""
    start_http_server(port, addr=host)


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


def preregister() -> None:
    """Give every labelled series its zero, so dashboards and rate() see them before the first
    event (a series that appears at its first increment loses that increment to rate())."""
    for result in ("sent", "deferred", "bounced", "expired"):
        DELIVERIES.labels(OTHER, result)
    for kind in ("4xx", "5xx", "connection", "dns"):
        PROVIDER_ERRORS.labels(kind)
    for outcome in ("accepted", "rejected", "tempfail"):
        MX_MESSAGES.labels(outcome)
    for stage in MX_STAGES:
        MX_STAGE_SECONDS.labels(stage)
    for verdict in ("spam", "ham"):
        SPAM_VERDICTS.labels(verdict)
    for result in ("clean", "infected", "error"):
        ATTACHMENT_SCANS.labels(result)
    for source in ("arf", "webhook"):
        COMPLAINTS.labels(source)
    for status in ("queued", "deferred", "sending", "scheduled"):
        QUEUE_DEPTH.labels(status)
    BOUNCES.labels("unknown", "smtp")
    BOUNCES.labels("unknown", "report")


preregister()
