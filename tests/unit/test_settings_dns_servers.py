"""``MAILHUB_DNS_SERVERS``: IP addresses with an optional port, checked when the settings load,
so a name (which neither resolver takes) is a clear configuration error at startup."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_settings
from app.domain.nameservers import parse_nameserver


def test_addresses_with_and_without_ports_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILHUB_DNS_SERVERS", "127.0.0.1:5353,::1,[::1]:53,10.0.0.2")
    settings = load_settings(_env_file=None)
    assert settings.dns_servers == ["127.0.0.1:5353", "::1", "[::1]:53", "10.0.0.2"]


@pytest.mark.parametrize(
    "bad", ["dns.example.test", "dns.example.test:53", "127.0.0.1:0", "127.0.0.1:x", "[::1]:99999"]
)
def test_a_name_or_a_bad_port_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("MAILHUB_DNS_SERVERS", bad)
    with pytest.raises(ConfigError, match="MAILHUB_DNS_SERVERS"):
        load_settings(_env_file=None)


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("10.0.0.2", ("10.0.0.2", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
    ],
)
def test_an_entry_reads_as_its_address_and_port(entry: str, parsed: tuple[str, int]) -> None:
    """What the DNS adapter asks (``app.domain.nameservers``, shared with the check above)."""
    assert parse_nameserver(entry) == parsed
