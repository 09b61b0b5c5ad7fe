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
        if variables is None:
            variables = {}
        try:
            size = len(json.dumps(variables))
        except (TypeError, ValueError):
            raise ValidationError.on("variables", "variables must be JSON") from None
        if size > MAX_VARIABLES_BYTES:
            raise ValidationError.on("variables", f"larger than {MAX_VARIABLES_BYTES} bytes")
        compiled, validator = self._prepared(version)
        check_variables(validator, variables)
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._executor, render, compiled, variables, self.limits)
        try:
            return await asyncio.wait_for(job, self.limits.max_seconds + 1.0)
        except TimeoutError:
            raise ValidationError.on(
                "variables", f"rendering took longer than {self.limits.max_seconds:g} s"
            ) from None

    async def render(
        self, viewer: Viewer, key: str, version: int | None, variables: Any
    ) -> tuple[dict[str, Any], dict[str, Any], Rendered]:
        """(template, version, rendered) for ``key`` at ``version`` (default: the published)."""
        template, doc = await self.store.version(viewer, key, version)
        return template, doc, await self.render_version(doc, variables)
