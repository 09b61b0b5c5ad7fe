"""Which of the queries mailhub sends does SecantusDB answer with a scan of a whole collection?

    .venv/bin/python bench/query_shapes.py [--fill 3000] [--min-ms 10] [PYTEST ARGS...]
    e.g. .venv/bin/python bench/query_shapes.py -- tests/integration -x -q

Runs the given tests (default: ``tests/integration``) in this process with a PyMongo command
listener that keeps, for every filter the suite sends (a find's, an update's or a delete's
``q``, a count's or findAndModify's query, an aggregation's first ``$match``), one example per
*shape* (the collection, the command and the filter with its values left out) and how often it
was sent. Then it starts a fresh SecantusDB, makes every index of ``app.adapters.indexes``,
fills each collection with ``--fill`` documents that match nothing (a unique value in each
indexed field) and runs each shape's example as a ``find`` three times, printing the shapes
that cost the server ``--min-ms`` or more of CPU a query: with the filler, a scan costs tens
of milliseconds and an index read about none.

Why: SecantusDB scans for a field beside an index's ``$in`` or range, an ``$or``, a ``$and``
wrapper or a hint, and its ``explain`` does not always say so (docs/architecture.md, the
paragraph after "Data model"). A scan in a query that runs per message, send or batch makes
that path as slow as the collection is large (docs/benchmarks.md, "Twenty-ninth session").
Many shapes it lists are fine: sweeps that read a small collection whole on purpose, tests'
own reads. CPU is sampled in clock ticks (10 ms / 3: 3.3 ms steps).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.adapters.indexes import INDEXES, ensure_indexes  # noqa: E402

TTL_FIELDS = {"expires_at", "at", "created_at"}  # left out of the filler: a TTL index deletes


def shape(value: Any) -> str:
    """``value``'s field names and operators, without its values."""
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(
                f"{k}:{shape(v)}" if k.startswith("$") or isinstance(v, dict | list) else k
                for k, v in sorted(value.items())
            )
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(sorted({shape(v) for v in value if isinstance(v, dict | list)})) + "]"
    return "v"


class ShapeRecorder(monitoring.CommandListener):
    """(collection, command, shape) -> [times sent, an example filter, the test that sent it]."""

    def __init__(self) -> None:
        self.shapes: dict[tuple[str, str, str], list[Any]] = {}
        self.active = True  # PyMongo cannot unregister a listener: it goes quiet instead
        self._lock = threading.Lock()

    def started(self, event: Any) -> None:
        if not self.active:
            return
        command, name = event.command, event.command_name
        collection = command.get(name)
        if not isinstance(collection, str):
            return
        if name == "find":
            filters = [command.get("filter") or {}]
        elif name in ("count", "distinct", "findAndModify"):
            filters = [command.get("query") or {}]
        elif name in ("update", "delete"):
            filters = [s.get("q") or {} for s in command.get(f"{name}s", [])]
        elif name == "aggregate":
            pipeline = command.get("pipeline") or []
            filters = [pipeline[0]["$match"]] if pipeline and "$match" in pipeline[0] else []
        else:
            return
        for query in filters:
            if not query:
                continue
            key = (collection, name, shape(query))
            with self._lock:
                if key in self.shapes:
                    self.shapes[key][0] += 1
                else:
                    test = os.environ.get("PYTEST_CURRENT_TEST", "")
                    self.shapes[key] = [1, dict(query), test.split(" ")[0]]

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for name in parents:
        doc = doc.setdefault(name, {})
    doc[last] = value


async def time_shapes(
    shapes: dict[tuple[str, str, str], list[Any]], url: str, server: psutil.Process, fill: int
) -> list[tuple[float, int, str, str, str, str]]:
    def cpu() -> float:
        t = server.cpu_times()
        return float(t.user + t.system)

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    db = client.query_shapes
    await ensure_indexes(db)
    fields: dict[str, set[str]] = {}
    for index in INDEXES:
        fields.setdefault(index.collection, set()).update(
            k for k, _ in index.keys if k != "_id" and k not in TTL_FIELDS
        )
    for collection in sorted({key[0] for key in shapes}):
        docs = []
        for _ in range(fill):
            doc: dict[str, Any] = {"_id": ObjectId()}
            for name in fields.get(collection, ()):
                _set(doc, name, uuid.uuid4().hex)
            docs.append(doc)
        await db[collection].insert_many(docs, ordered=False)
    rows = []
    for (collection, command, form), (count, example, test) in shapes.items():
        started = cpu()
        for _ in range(3):
            await db[collection].find(example).to_list()
        rows.append(((cpu() - started) / 3 * 1000, count, collection, command, form, test))
    await client.close()
    return sorted(rows, key=lambda row: -row[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fill", type=int, default=3000)
    ap.add_argument("--min-ms", type=float, default=10.0)
    ap.add_argument("pytest_args", nargs="*", default=["tests/integration", "-q"])
    args = ap.parse_args()
    recorder = ShapeRecorder()
    monitoring.register(recorder)  # before the suite makes its clients

    import pytest

    code = pytest.main(args.pytest_args)
    recorder.active = False  # not the timing's own queries
    print(f"== pytest exit {int(code)}; {len(recorder.shapes)} query shapes", flush=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as storage:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "secantusd-py"), "--host", "127.0.0.1"]
            + ["--port", str(port), "--storage-path", storage],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(3)
            rows = asyncio.run(
                time_shapes(
                    recorder.shapes,
                    f"mongodb://127.0.0.1:{port}/?directConnection=true",
                    psutil.Process(server.pid),
                    args.fill,
                )
            )
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"== server CPU a query with {args.fill} other documents in the collection, "
        f">= {args.min_ms} ms (ms, times the suite sent it, collection, command, shape, test)"
    )
    for ms, count, collection, command, form, test in rows:
        if ms >= args.min_ms:
            print(f"{ms:7.1f} {count:6d}  {collection:22s} {command:14s} {form[:100]}  [{test}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
