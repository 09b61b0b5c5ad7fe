"""Rendering a stored version with variables: validate, then render in the sandbox.

Versions are immutable, so each is compiled (and its JSON Schema validator built) once per
process and kept in a small LRU keyed by the version's id. The render itself runs on a worker
thread with a deadline: the sandbox stops itself at the time limit (app/domain/templates.py),
and the caller never waits much longer than that even if it did not.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from app.domain.errors import ValidationError
from app.domain.templates import (
    CompiledTemplate,
    Rendered,
    RenderLimits,
    check_variables,
    compile_parts,
    render,
    variables_validator,
)
from app.domain.viewer import Viewer
from app.services.templates.store import TemplateStore

MAX_VARIABLES_BYTES = 256 * 1024
CACHE_SIZE = 512
RENDER_CHUNK = 64  # renders a hand-off to a render thread: ~16 ms of a 5 KB receipt


@dataclass(frozen=True)
class Variables:
    """A send's template variables, known to be JSON of an allowed size, with their JSON (what
    the send intake stores: encoded once)."""

    value: Any
    json: str


def encode_variables(value: Any) -> Variables:
    """The variables as ``Variables``, or a ValidationError on ``variables`` (not JSON, or
    larger than MAX_VARIABLES_BYTES)."""
    if value is None:
        value = {}
    try:
        encoded = json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError):
        raise ValidationError.on("variables", "variables must be JSON") from None
    if len(encoded) > MAX_VARIABLES_BYTES:
        raise ValidationError.on("variables", f"larger than {MAX_VARIABLES_BYTES} bytes")
    return Variables(value, encoded)


class TemplateRenderer:
    def __init__(self, store: TemplateStore, limits: RenderLimits, threads: int = 4) -> None:
        self.store = store
        self.limits = limits
        self._compiled: OrderedDict[ObjectId, tuple[CompiledTemplate, Any]] = OrderedDict()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="render")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _prepared(self, version: dict[str, Any]) -> tuple[CompiledTemplate, Any]:
        found = self._compiled.get(version["_id"])
        if found is None:
            found = (
                compile_parts(version["subject"], version.get("text"), version.get("html")),
                variables_validator(version.get("variables") or {"type": "object"}),
            )
            self._compiled[version["_id"]] = found
            while len(self._compiled) > CACHE_SIZE:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(version["_id"])
        return found

    async def render_version(self, version: dict[str, Any], variables: Any) -> Rendered:
        """Check the variables against the version's schema, then render it."""
        [result] = await self.render_versions([(version, variables)])
        if isinstance(result, ValidationError):
            raise result
        return result

    async def render_versions(
        self, jobs: list[tuple[dict[str, Any], Any]]
    ) -> list[Rendered | ValidationError]:
        """Check and render many (version, variables): one answer each, in order — what it
        rendered, or why not. The variables are as a caller gave them, or ``Variables``
        already encoded. The renders go to the render threads in chunks, one hand-off per
        chunk: a thread switch per message cost as much as the render itself (~0.25 ms for a
        5 KB receipt), and a batch of sends or a campaign batch renders hundreds at once."""
        results, todo = self._checked_all(jobs)
        loop = asyncio.get_running_loop()
        for start in range(0, len(todo), RENDER_CHUNK):
            chunk = todo[start : start + RENDER_CHUNK]
            job = loop.run_in_executor(
                self._executor, _render_each, [(c, v) for _, c, v in chunk], self.limits
            )
            try:
                # each render stops itself at its own deadline; this only bounds the wait
                answers = await asyncio.wait_for(job, self.limits.max_seconds * len(chunk) + 1.0)
            except TimeoutError:
                answers = [_too_slow(self.limits) for _ in chunk]
            for (n, _, _), answer in zip(chunk, answers, strict=True):
                results[n] = answer
        return [r for r in results if r is not None]

    def render_here(
        self, jobs: list[tuple[dict[str, Any], Any]]
    ) -> list[Rendered | ValidationError]:
        """``render_versions`` on this thread, for a process whose work is rendering (the
        campaign render helpers: services/campaigns/messages.py)."""
        results, todo = self._checked_all(jobs)
        answers = _render_each([(c, v) for _, c, v in todo], self.limits)
        for (n, _, _), answer in zip(todo, answers, strict=True):
            results[n] = answer
        return [r for r in results if r is not None]

    def _checked_all(
        self, jobs: list[tuple[dict[str, Any], Any]]
    ) -> tuple[list[Rendered | ValidationError | None], list[tuple[int, CompiledTemplate, Any]]]:
        """Each job checked: the answers so far (the refusals, None where a render is still
        to come) and what is to render, with its place."""
        results: list[Rendered | ValidationError | None] = [None] * len(jobs)
        todo: list[tuple[int, CompiledTemplate, Any]] = []
        for n, (version, variables) in enumerate(jobs):
            try:
                compiled, value = self._checked(version, variables)
            except ValidationError as e:
                results[n] = e
                continue
            todo.append((n, compiled, value))
        return results, todo

    def _checked(self, version: dict[str, Any], variables: Any) -> tuple[CompiledTemplate, Any]:
        """The compiled version and the variables, once they are JSON of an allowed size that
        its schema accepts (else the ValidationError naming each variable)."""
        if not isinstance(variables, Variables):
            variables = encode_variables(variables)
        compiled, validator = self._prepared(version)
        check_variables(validator, variables.value)
        return compiled, variables.value

    async def render(
        self, viewer: Viewer, key: str, version: int | None, variables: Any
    ) -> tuple[dict[str, Any], dict[str, Any], Rendered]:
        """(template, version, rendered) for ``key`` at ``version`` (default: the published)."""
        template, doc = await self.store.version(viewer, key, version)
        return template, doc, await self.render_version(doc, variables)


def _render_each(
    jobs: list[tuple[CompiledTemplate, Any]], limits: RenderLimits
) -> list[Rendered | ValidationError]:
    """On a render thread: each render's own answer (a failing one does not stop the rest)."""
    answers: list[Rendered | ValidationError] = []
    for compiled, variables in jobs:
        try:
            answers.append(render(compiled, variables, limits))
        except ValidationError as e:
            answers.append(e)
    return answers


def _too_slow(limits: RenderLimits) -> ValidationError:
    return ValidationError.on("variables", f"rendering took longer than {limits.max_seconds:g} s")
