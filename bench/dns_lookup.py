"""CPU a DNS question costs the MX's authentication threads: dnspython's blocking resolver
(what the MX used before the tenth session) next to c-ares (``CaresLookup``, what it uses).

    .venv/bin/python bench/dns_lookup.py [--questions 2000]

Both ask a local dnsmasq (tests/support/dnsmasq.py) for two TXT records, an SPF and a DMARC
record served with TTL 0 (so neither cache answers), alternately, one question at a time. CPU is
the process's (``getrusage``: c-ares' event thread counts), wall the elapsed time.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))

from app.adapters.dns_resolver import CaresLookup, sync_resolver  # noqa: E402
from tests.support.dnsmasq import DnsServer  # noqa: E402

NAMES = ("sender.test", "_dmarc.sender.test")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(ask: Callable[[str], object], questions: int) -> tuple[float, float]:
    """(µs of CPU, µs of wall) a question."""
    for name in NAMES:
        ask(name)
    cpu, wall = _cpu(), time.perf_counter()
    for i in range(questions):
        ask(NAMES[i % 2])
    return (_cpu() - cpu) / questions * 1e6, (time.perf_counter() - wall) / questions * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=2000)
    args = parser.parse_args()
    records = {NAMES[0]: ["v=spf1 ip4:127.0.0.1 -all"], NAMES[1]: ["v=DMARC1; p=none"]}
    with DnsServer(txt=records) as dns:
        resolver = sync_resolver([dns.address])
        lookup = CaresLookup([dns.address])
        for label, ask in (
            ("dnspython Resolver.resolve", lambda n: resolver.resolve(n, "TXT", search=False)),
            ("c-ares CaresLookup.txt", lookup.txt),
        ):
            cpu, wall = measure(ask, args.questions)
            print(f"{label:28} {cpu:7.1f} µs CPU  {wall:7.1f} µs wall  a question")


if __name__ == "__main__":
    main()
