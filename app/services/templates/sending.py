"""Template sends: render a version with the variables, then the ordinary send use case.

Everything a send does (idempotency keys, attachments, ``transactional``, ``sendAt``,
suppression, rate limits, every delivery rule) is the send use case's, unchanged: this only
fills subject/text/html. Variables that fail the version's schema stop it before anything is
stored or queued.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from app.domain.errors import ValidationError
from app.domain.viewer import Viewer
from app.services.sending.compose import Composition
from app.services.sending.send import SendingService
from app.services.templates.render import TemplateRenderer


@dataclass(frozen=True)
class TemplateRef:
    key: str
    variables: Any
    version: int | None = None  # None: the published version


class TemplateSender:
    def __init__(self, renderer: TemplateRenderer, sending: SendingService) -> None:
        self.renderer = renderer
        self.sending = sending

    async def send_email(
        self, viewer: Viewer, composition: Composition, ref: TemplateRef
    ) -> dict[str, Any]:
        """Send ``ref`` rendered; an explicit ``composition.subject`` overrides the template's."""
        for name, value in (("text", composition.text), ("html", composition.html)):
            if value is not None:
                raise ValidationError.on(name, f"give {name} or a template, not both")
        _, _, rendered = await self.renderer.render(viewer, ref.key, ref.version, ref.variables)
        filled = dataclasses.replace(
            composition,
            subject=composition.subject or rendered.subject,
            text=rendered.text_part(),
            html=rendered.html,
        )
        return await self.sending.send_email(viewer, filled)
