"""MongoDB command accounting for a benchmarked process (no import of ``app``: it also runs
inside another checkout's `mailhub mx`, see ``bench/inbound.py --variant NAME:ROOT=...``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def count_commands(directory: str) -> None:
    """Count, in this process and every process forked from it, the MongoDB commands and the
    documents each write command carries; a thread writes ``<directory>/<pid>.json`` every half
    second (`mailhub mx` children leave with ``os._exit``: no atexit)."""
    import threading
    from collections import Counter

    from pymongo import monitoring

    state: dict[str, Any] = {"pid": None}

    def writer(pid: int, commands: Counter[str], documents: Counter[str]) -> None:
        path = Path(directory) / f"{pid}.json"
        while True:
            time.sleep(0.5)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"commands": commands, "documents": documents}))
            tmp.replace(path)

    class Listener(monitoring.CommandListener):
        def started(self, event: Any) -> None:
            if state["pid"] != os.getpid():  # first command of this process (after a fork)
                state.update(pid=os.getpid(), commands=Counter(), documents=Counter())
                threading.Thread(
                    target=writer,
                    args=(os.getpid(), state["commands"], state["documents"]),
                    daemon=True,
                ).start()
            cmd = event.command
            name = event.command_name
            coll = cmd.get(name) if isinstance(cmd.get(name), str) else ""
            key = f"{name} {coll}"
            state["commands"][key] += 1
            for part in ("documents", "updates", "deletes"):
                if part in cmd:
                    state["documents"][key] += len(cmd[part])

        def succeeded(self, event: Any) -> None:
            pass

        def failed(self, event: Any) -> None:
            pass

    monitoring.register(Listener())
