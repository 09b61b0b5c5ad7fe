"""Collecting content no view references: an attachment shared by two messages outlives the
first and goes, blob and all, with the second; the release reads what is left without a
``findAndModify`` (SecantusDB scans the whole collection for one, even by ``_id``)."""

from datetime import UTC, datetime

from bson import ObjectId

from app.adapters.blobs import BlobStore
from app.adapters.mongo import Mongo
from app.services.mailbox.content import ContentService
from tests.support.commands import CommandLog


async def test_a_shared_attachment_goes_with_the_last_message_that_used_it(mongo, settings):
    commands = CommandLog()
    watched = Mongo.open(
        settings.mongodb_uri, settings.mongodb_database, event_listeners=[commands]
    )
    try:
        blobs = BlobStore(watched.db)
        content = ContentService(watched, blobs)
        blob_id = await blobs.put(b"%PDF shared", filename="shared.pdf")
        first, second, attachment = ObjectId(), ObjectId(), ObjectId()
        await mongo.db.attachments.insert_one(
            {"_id": attachment, "blob_id": blob_id, "message_ids": [first, second]}
        )
        ref = [{"id": attachment, "blob_id": blob_id, "filename": "shared.pdf"}]
        now = datetime.now(UTC)
        await mongo.db.messages.insert_many(
            [
                {"_id": first, "attachments": ref, "created_at": now},
                {"_id": second, "attachments": ref, "created_at": now},
            ]
        )

        commands.clear()
        assert await content.collect([first]) == 1
        kept = await mongo.db.attachments.find_one({"_id": attachment})
        assert kept is not None and kept["message_ids"] == [second]
        assert await blobs.get(blob_id) == b"%PDF shared"

        assert await content.collect([second]) == 1
        assert await mongo.db.attachments.count_documents({"_id": attachment}) == 0
        assert await mongo.db["blobs.files"].count_documents({"_id": blob_id}) == 0
        assert await mongo.db.messages.count_documents({}) == 0
        assert "findAndModify" not in commands.names
        assert commands.names.count("update") == 2  # one pull per release
    finally:
        await watched.close()
