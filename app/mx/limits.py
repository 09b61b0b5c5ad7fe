"""Per-client limits of the MX: concurrent connections, message rate, error budget.

Kept in process memory: they protect this process's sockets and CPU, need no round trip per
command, and a restart forgiving a client is harmless. Clients in ``smtp_limit_exempt``
(loopback by default, like Postfix's $mynetworks exemption) are not counted.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class ClientLimits:
    connections_per_ip: int
    messages_per_minute: int
    exempt: list[str] = field(default_factory=list)
    _open: dict[str, int] = field(default_factory=dict)
    _messages: dict[str, deque[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.exempt]

    def is_exempt(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def open_connection(self, ip: str) -> bool:
        """Count a new connection; False when the client already has too many open."""
        if self.is_exempt(ip):
            return True
        if self._open.get(ip, 0) >= self.connections_per_ip:
            return False
        self._open[ip] = self._open.get(ip, 0) + 1
        return True

    def close_connection(self, ip: str) -> None:
        if self.is_exempt(ip) or ip not in self._open:
            return
        self._open[ip] -= 1
        if self._open[ip] <= 0:
            del self._open[ip]

    def allow_message(self, ip: str, now: float | None = None) -> bool:
        """Count one MAIL transaction in a sliding 60 s window; False past the rate."""
        if self.is_exempt(ip):
            return True
        now = time.monotonic() if now is None else now
        window = self._messages.setdefault(ip, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.messages_per_minute:
            return False
        window.append(now)
        if len(self._messages) > 10_000:  # bound memory under a spray of client addresses
            for key in [k for k, v in self._messages.items() if not v or v[-1] <= now - 60]:
                del self._messages[key]
        return True


@dataclass
class ErrorBudget:
    """4xx/5xx replies a session may provoke before we hang up (cf. smtpd_hard_error_limit)."""

    limit: int
    errors: int = 0

    def record(self, reply: str) -> bool:
        """Count ``reply``; True once the budget is spent."""
        if reply[:1] in ("4", "5") and not reply.startswith("421"):
            self.errors += 1
        return self.errors >= self.limit
