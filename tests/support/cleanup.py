"""Dropping a test's own database at teardown."""

from __future__ import annotations

from typing import Any

from pymongo.errors import AutoReconnect, NetworkTimeout

ATTEMPTS = 3


async def drop_database(client: Any, name: str) -> None:
    """Drop the test's database ``name``, retrying a drop that timed out.

    Under a whole suite's load SecantusDB has once taken longer than the client's socket
    timeout (15 s) for a ``dropDatabase`` after a test whose body had passed; the next attempt
    finds the drop done or finishes it. A drop that times out ``ATTEMPTS`` times fails the
    test as before."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            await client.drop_database(name)
            return
        except (NetworkTimeout, AutoReconnect):
            if attempt == ATTEMPTS:
                raise
