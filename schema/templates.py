"""Templates in GraphQL (CONTRACT.md "Templates"): versions, publishing, previews."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from app.services.templates.store import TemplateDraft
from schema import types as T


@strawberry.type
class TemplateVersion:
    version: int
    subject: str
    text: str | None
    html: str | None
    variables: JSON = strawberry.field(description="The JSON Schema of the variables.")
    published: bool
    created_at: datetime

    @staticmethod
    def of(d: dict[str, Any], published: int | None) -> TemplateVersion:
        return TemplateVersion(
            version=d["version"],
            subject=d["subject"],
            text=d.get("text"),
            html=d.get("html"),
            variables=d.get("variables") or {},  # type: ignore[arg-type]
            published=d["version"] == published,
            created_at=d["created_at"],
        )


@strawberry.type
class Template:
    id: strawberry.ID
    key: str
    name: str
    versions: list[TemplateVersion] = strawberry.field(description="Oldest first.")

    @strawberry.field
    def latest(self) -> TemplateVersion:
        return self.versions[-1]

    @strawberry.field
    def published(self) -> TemplateVersion | None:
        return next((v for v in self.versions if v.published), None)

    @staticmethod
    def of(doc: dict[str, Any], versions: list[dict[str, Any]]) -> Template:
        published = doc.get("published_version")
        return Template(
            id=strawberry.ID(str(doc["_id"])),
            key=doc["key"],
            name=doc.get("name") or doc["key"],
            versions=[TemplateVersion.of(v, published) for v in versions],
        )


@strawberry.input
class TemplateInput:
    key: str
    subject: str
    name: str | None = None
    text: str | None = None
    html: str | None = None
    variables: JSON | None = None


@strawberry.input
class TemplateRef:
    key: str
    variables: JSON
    version: int | None = None


@strawberry.type
class TemplateSuccess:
    template: Template


@strawberry.type
class RenderedEmail:
    subject: str
    text: str | None
    html: str | None


TemplateResult = Annotated[
    TemplateSuccess | T.ValidationErrorType | T.NotFoundType, strawberry.union("TemplateResult")
]
RenderResult = Annotated[
    RenderedEmail | T.ValidationErrorType | T.NotFoundType, strawberry.union("RenderResult")
]


async def _template(info: Info, doc: dict[str, Any]) -> Template:
    versions = await info.context.system.templates.versions([doc["_id"]])
    return Template.of(doc, versions[doc["_id"]])


@strawberry.type
class TemplatesQuery:
    @strawberry.field(description="The viewer's templates, by key.")
    async def templates(self, info: Info) -> list[Template]:
        store = info.context.system.templates
        docs = await store.of_user(await info.context.viewer())
        versions = await store.versions([d["_id"] for d in docs])
        return [Template.of(d, versions[d["_id"]]) for d in docs]

    @strawberry.field
    async def template(self, info: Info, key: str) -> Template | None:
        doc = await info.context.system.templates.get(await info.context.viewer(), key)
        return await _template(info, doc) if doc else None

    @strawberry.field(description="Render a version (default: the published one); sends nothing.")
    async def render_template(
        self, info: Info, key: str, variables: JSON, version: int | None = None
    ) -> RenderResult:
        _, _, rendered = await info.context.system.renderer.render(
            await info.context.viewer(), key, version, variables
        )
        return RenderedEmail(
            subject=rendered.subject, text=rendered.text_part(), html=rendered.html
        )


@strawberry.type
class TemplatesMutation:
    @strawberry.mutation(description="Every save is a new immutable version.")
    async def save_template(self, info: Info, input: TemplateInput) -> TemplateResult:
        doc = await info.context.system.templates.save(
            await info.context.viewer(),
            TemplateDraft(
                key=input.key,
                subject=input.subject,
                name=input.name,
                text=input.text,
                html=input.html,
                variables=input.variables,
            ),
        )
        return TemplateSuccess(template=await _template(info, doc))

    @strawberry.mutation(description="The version sends use when they name none.")
    async def publish_template(self, info: Info, key: str, version: int) -> TemplateResult:
        doc = await info.context.system.templates.publish(await info.context.viewer(), key, version)
        return TemplateSuccess(template=await _template(info, doc))

    @strawberry.mutation
    async def delete_template(self, info: Info, key: str) -> T.DeleteResult:
        deleted = await info.context.system.templates.delete(await info.context.viewer(), key)
        return T.DeleteSuccess(ids=[strawberry.ID(deleted)])
