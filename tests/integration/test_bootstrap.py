"""build_system wires every service once, through constructors; search is the one optional one."""

from __future__ import annotations

import typing

from app.bootstrap import System, build_system


async def test_every_field_of_the_system_holds_its_declared_type(settings) -> None:
    system = await build_system(settings)
    try:
        hints = typing.get_type_hints(System)
        for name, hint in hints.items():
            value = getattr(system, name)
            assert isinstance(
                value, hint if typing.get_origin(hint) is None else typing.get_args(hint)
            ), name
        assert system.search is not None  # Typesense is configured in the test settings
    finally:
        await system.close()


async def test_without_a_typesense_url_there_is_no_search_and_everything_else_is_built(
    settings,
) -> None:
    system = await build_system(settings.model_copy(update={"typesense_url": None}))
    try:
        assert system.search is None
        assert system.sending.reputation is system.reputation
        assert system.drafts.sending is system.sending
        assert system.inbound.feedback is system.spam_feedback
    finally:
        await system.close()
