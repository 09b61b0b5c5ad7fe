"""``MAILHUB_DNS_SERVERS`` entries: an IP address with an optional port.

Both resolvers (dnspython for delivery, c-ares for the MX's checks) take addresses, not names.
The settings check every entry when they load, and the DNS adapter reads them with the same
function, so the two cannot disagree about what an entry means.
"""

from __future__ import annotations

import ipaddress

DNS_PORT = 53


def parse_nameserver(server: str) -> tuple[str, int]:
    """``(address, port)`` of ``1.2.3.4``, ``1.2.3.4:5353``, ``::1`` or ``[::1]:5353``;
    ValueError for a name, a malformed entry or a port outside 1–65535."""
    host, port = server, ""
    if server.startswith("["):  # [v6] or [v6]:port
        host, _, port = server[1:].partition("]")
        port = port.removeprefix(":")
    elif server.count(":") == 1:  # v4:port (a bare v6 address has several colons)
        host, _, port = server.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{server!r} is not an IP address or address:port") from None
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{server!r}: the port must be 1 to 65535")
    return str(address), int(port) if port else DNS_PORT
