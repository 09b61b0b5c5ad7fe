"""MongoDB command accounting for a benchmarked process (no import of ``app``: it also runs
inside another checkout's `mailhub mx`, see ``bench/inbound.py --variant NAME:ROOT=...``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

PARTS = ("commands", "documents", "read", "read_rows")


def count_commands(directory: str) -> None:
    """Count, in this process and every process forked from it, the MongoDB commands, the
    documents each write command carries (``documents``) and the documents each read answers
    (``read``; ``read_rows``: a parcel counted as the rows it carries); a thread writes
    ``<directory>/<pid>.json`` every half second (`mailhub mx` children leave with
    ``os._exit``: no atexit)."""
    import threading
    from collections import Counter

    from pymongo import monitoring

    state: dict[str, Any] = {"pid": None}

    def writer(pid: int, counts: dict[str, Counter[str]]) -> None:
        path = Path(directory) / f"{pid}.json"
        while True:
            time.sleep(0.5)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(counts))
            tmp.replace(path)

    class Listener(monitoring.CommandListener):
        def started(self, event: Any) -> None:
            if state["pid"] != os.getpid():  # first command of this process (after a fork)
                counts = {part: Counter[str]() for part in PARTS}
                state.update(pid=os.getpid(), counts=counts, keys={}, **counts)
                threading.Thread(target=writer, args=(os.getpid(), counts), daemon=True).start()
            cmd = event.command
            name = event.command_name
            coll = cmd.get(name) if isinstance(cmd.get(name), str) else ""
            if name == "getMore":
                coll = cmd.get("collection", "")
            key = f"{name} {coll}"
            # a read that projects is counted apart (its documents are not whole)
            state["keys"][event.request_id] = key + (" projected" if cmd.get("projection") else "")
            state["commands"][key] += 1
            for part in ("documents", "updates", "deletes"):
                if part in cmd:
                    state["documents"][key] += len(cmd[part])

        def succeeded(self, event: Any) -> None:
            key = state.get("keys", {}).pop(event.request_id, None)
            cursor = event.reply.get("cursor") if key else None
            if not isinstance(cursor, dict):
                return
            batch = cursor.get("firstBatch") or cursor.get("nextBatch") or []
            state["read"][key] += len(batch)
            state["read_rows"][key] += sum(len(d.get("parcel") or ()) or 1 for d in batch)

        def failed(self, event: Any) -> None:
            state.get("keys", {}).pop(event.request_id, None)

    monitoring.register(Listener())
