"""Virus scanning through clamd's INSTREAM command (clamd(8), "zINSTREAM").

``MAILHUB_CLAMD`` is a unix socket path or ``host:port``. Each scan opens its own connection:
clamd handles one command per connection unless IDSESSION is used, and a fresh connection keeps
one stuck scan from blocking others. A scanner that cannot be reached raises
``ServiceUnavailable`` so the MX answers 451 and the sender retries — mail is never let through
unscanned when scanning is configured.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from app.domain.errors import ServiceUnavailable

CHUNK = 64 * 1024


@dataclass(frozen=True)
class ScanResult:
    clean: bool
    signature: str | None = None  # the malware name clamd reported


class ClamdScanner:
    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address.startswith("/") or ":" not in self.address:
            return await asyncio.open_unix_connection(self.address)
        host, _, port = self.address.rpartition(":")
        return await asyncio.open_connection(host.strip("[]"), int(port))

    async def scan(self, data: bytes) -> ScanResult:
        """Scan one blob; raises ServiceUnavailable when clamd fails or cannot be reached."""
        try:
            return await asyncio.wait_for(self._scan(data), self.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
            raise ServiceUnavailable("virus scanner unavailable", retry_after_seconds=30) from e

    async def _scan(self, data: bytes) -> ScanResult:
        reader, writer = await self._connect()
        try:
            writer.write(b"zINSTREAM\0")
            for start in range(0, len(data), CHUNK):
                chunk = data[start : start + CHUNK]
                writer.write(struct.pack("!L", len(chunk)) + chunk)
                await writer.drain()
            writer.write(struct.pack("!L", 0))
            await writer.drain()
            reply = (await reader.readuntil(b"\0")).rstrip(b"\0").decode("utf-8", "replace")
        finally:
            writer.close()
        return parse_reply(reply)

    async def ping(self) -> bool:
        try:
            reader, writer = await self._connect()
            writer.write(b"zPING\0")
            await writer.drain()
            reply = await asyncio.wait_for(reader.readuntil(b"\0"), 5)
            writer.close()
            return reply.rstrip(b"\0") == b"PONG"
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            return False


def parse_reply(reply: str) -> ScanResult:
    """``stream: OK`` / ``stream: <name> FOUND`` / ``... ERROR`` (errors are not "clean")."""
    body = reply.partition(": ")[2] if ": " in reply else reply
    if body == "OK":
        return ScanResult(True)
    if body.endswith(" FOUND"):
        return ScanResult(False, body[: -len(" FOUND")])
    raise ServiceUnavailable(f"virus scanner error: {reply[:200]}", retry_after_seconds=30)
