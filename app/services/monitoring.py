"""Metrics for the entry points (MX, worker, API), which never import adapters themselves.

Services report their events straight to ``app.adapters.metrics``; the MX's SMTP latency is
measured where the reply is made (the handler), and each process serves what it observed.
"""

from __future__ import annotations

from app.adapters import metrics


def inbound_data(outcome: str, seconds: float) -> None:
    """One DATA transaction answered: accepted, rejected or tempfail, after ``seconds``."""
    metrics.inbound_data(outcome, seconds)


def serve(port: int, host: str) -> None:
    """``/metrics`` on ``host:port`` from a background thread (`mailhub worker`, `mailhub mx`)."""
    metrics.serve(port, host)


def exposition() -> tuple[bytes, str]:
    """This process's metrics in the Prometheus text format, and its content type."""
    return metrics.exposition()
