"""The MongoDB commands a client sends, written down for tests that count round trips or
check which queries a service sends (a PyMongo command listener given to one client)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo import monitoring


@dataclass(frozen=True)
class Command:
    name: str  # "find", "update", "findAndModify", ...
    collection: str | None  # what the command names, when it names one
    filter: dict[str, Any]  # a find's filter, else empty
    statements: tuple[dict[str, Any], ...] = ()  # an update's or a delete's filters (``q``)


class CommandLog(monitoring.CommandListener):
    """Every command started on the clients it listens to, in order. Open the client with
    ``Mongo.open(..., event_listeners=[log])``; or, to hear the clients a service opens itself,
    ``monitoring.register(log)`` before they are made, and set ``active`` to False after the
    test (PyMongo cannot unregister a listener: it goes quiet instead)."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.active = True

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.commands]

    def finds(self, collection: str) -> list[dict[str, Any]]:
        """The filters of the ``find`` commands sent to ``collection``."""
        return [c.filter for c in self.commands if c.name == "find" and c.collection == collection]

    def write_filters(self, collection: str) -> list[dict[str, Any]]:
        """The filter of every update and delete statement sent to ``collection``."""
        return [
            q
            for c in self.commands
            if c.name in ("update", "delete") and c.collection == collection
            for q in c.statements
        ]

    def clear(self) -> None:
        self.commands.clear()

    def started(self, event: Any) -> None:
        if not self.active:
            return
        target = event.command.get(event.command_name)
        self.commands.append(
            Command(
                event.command_name,
                target if isinstance(target, str) else None,
                dict(event.command.get("filter") or {}),
                tuple(
                    dict(statement.get("q") or {})
                    for statement in event.command.get("updates", event.command.get("deletes", []))
                ),
            )
        )

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass
