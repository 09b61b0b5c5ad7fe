"""Templates and their immutable versions (seed §15), per user.

Every save is a new version (``latest_version`` is incremented in the same transaction as the
version is inserted, so numbers are dense and never reused); one version may be published.
A version is never changed after it is written, which is why rendered output can be cached
per version id (render.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from app.adapters.mongo import Mongo, in_transaction, is_duplicate_key, update_and_read
from app.domain.errors import NotFound, ValidationError
from app.domain.templates import check_key, check_schema, compile_parts
from app.domain.viewer import Viewer

MAX_NAME = 200
MAX_TEMPLATES_PER_USER = 1000


@dataclass(frozen=True)
class TemplateDraft:
    """What ``saveTemplate`` receives."""

    key: str
    subject: str
    name: str | None = None
    text: str | None = None
    html: str | None = None
    variables: Any = None  # a JSON Schema of the variables; None = any object


class TemplateStore:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.db = mongo.db

    async def save(self, viewer: Viewer, draft: TemplateDraft) -> dict[str, Any]:
        """A new version of the template ``draft.key`` (the template is created by its first)."""
        key = check_key(draft.key)
        if draft.name is not None and not 1 <= len(draft.name.strip()) <= MAX_NAME:
            raise ValidationError.on("name", f"1 to {MAX_NAME} characters")
        if not (draft.subject or "").strip():
            raise ValidationError.on("subject", "give a subject")
        if draft.text is None and draft.html is None:
            raise ValidationError.on("text", "give text, html or both")
        compile_parts(draft.subject, draft.text, draft.html)  # refuses what cannot render
        schema = check_schema(draft.variables)
        now = datetime.now(UTC)
        set_fields: dict[str, Any] = {"updated_at": now}
        if draft.name is not None:
            set_fields["name"] = draft.name.strip()
        on_insert: dict[str, Any] = {"created_at": now, "published_version": None}
        if draft.name is None:
            on_insert["name"] = key

        if not await self.db.templates.count_documents({"user_id": viewer.user_id, "key": key}):
            count = await self.db.templates.count_documents({"user_id": viewer.user_id})
            if count >= MAX_TEMPLATES_PER_USER:
                raise ValidationError.on("key", f"at most {MAX_TEMPLATES_PER_USER} templates")

        async def work(session: Any) -> dict[str, Any]:
            template = await update_and_read(  # (user_id, key) is unique
                self.db.templates,
                {"user_id": viewer.user_id, "key": key},
                {"$inc": {"latest_version": 1}, "$set": set_fields, "$setOnInsert": on_insert},
                session,
                upsert=True,
            )
            assert template is not None  # upserted when missing
            await self.db.template_versions.insert_one(
                {
                    "_id": ObjectId(),
                    "template_id": template["_id"],
                    "user_id": viewer.user_id,
                    "version": template["latest_version"],
                    "subject": draft.subject,
                    "text": draft.text,
                    "html": draft.html,
                    "variables": schema,
                    "created_at": now,
                },
                session=session,
            )
            return template

        try:
            return await in_transaction(self.mongo, work)  # type: ignore[no-any-return]
        except Exception as e:
            if not is_duplicate_key(e):  # two first saves of one key raced: the loser retries
                raise
            return await in_transaction(self.mongo, work)  # type: ignore[no-any-return]

    async def publish(self, viewer: Viewer, key: str, version: int) -> dict[str, Any]:
        template = await self.require(viewer, key)
        exists = await self.db.template_versions.count_documents(
            {"template_id": template["_id"], "version": version}, limit=1
        )
        if not exists:
            raise NotFound(f"template {key} has no version {version}")
        updated = await in_transaction(  # not a findAndModify: SecantusDB scans for one
            self.mongo,
            lambda session: update_and_read(
                self.db.templates,
                {"_id": template["_id"], "user_id": viewer.user_id},
                {"$set": {"published_version": version, "updated_at": datetime.now(UTC)}},
                session,
            ),
        )
        if updated is None:
            raise NotFound(f"no template {key}")
        return updated  # type: ignore[no-any-return]

    async def delete(self, viewer: Viewer, key: str) -> str:
        template = await self.require(viewer, key)

        async def work(session: Any) -> None:
            await self.db.templates.delete_one({"_id": template["_id"]}, session=session)
            await self.db.template_versions.delete_many(
                {"template_id": template["_id"]}, session=session
            )

        await in_transaction(self.mongo, work)
        return str(template["_id"])

    async def get(self, viewer: Viewer, key: str) -> dict[str, Any] | None:
        if not isinstance(key, str):
            return None
        return await self.db.templates.find_one({"user_id": viewer.user_id, "key": key})

    async def require(self, viewer: Viewer, key: str) -> dict[str, Any]:
        template = await self.get(viewer, key)
        if template is None:
            raise NotFound(f"no template {key}")
        return template

    async def of_user(self, viewer: Viewer) -> list[dict[str, Any]]:
        return await self.db.templates.find({"user_id": viewer.user_id}).sort("key", 1).to_list()

    async def versions(self, template_ids: list[ObjectId]) -> dict[ObjectId, list[dict[str, Any]]]:
        """Every version of these templates, oldest first (one query for a whole list)."""
        out: dict[ObjectId, list[dict[str, Any]]] = {t: [] for t in template_ids}
        docs = (
            await self.db.template_versions.find({"template_id": {"$in": template_ids}})
            .sort([("template_id", 1), ("version", 1)])
            .to_list()
        )
        for d in docs:
            out[d["template_id"]].append(d)
        return out

    async def version(
        self, viewer: Viewer, key: str, version: int | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(template, version doc): the given version, or the published one."""
        template = await self.require(viewer, key)
        number = version if version is not None else template.get("published_version")
        if number is None:
            raise NotFound(f"template {key} has no published version; publish one or give version")
        doc = await self.db.template_versions.find_one(
            {"template_id": template["_id"], "version": number}
        )
        if doc is None:
            raise NotFound(f"template {key} has no version {number}")
        return template, doc
