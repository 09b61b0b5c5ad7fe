"""Spam feedback (seed §17): markSpam / markNotSpam move mail and teach the user's filter.

Two loops, as issue 5 asks:
- **per user, at once**: each label adds the message's feature tokens to that user's token
  counts (``spam_tokens``); the next message is scored with ``ml.score_for_user``, which shifts
  the global model's verdict by those counts — so a message like one the user marked spam goes
  to Spam next time, for that user only.
- **per user, the flag**: the same clicks move the user's own "probably spam" threshold
  (``spam_thresholds``, an offset from the model's): a spam they had to find themselves lowers
  it, a flag they disagree with raises it (``ml.personal.moved_probable_offset``).
- **globally, periodically**: labels (``spam_labels``, with the raw message) and the last
  ``RETRAIN_INBOUND_DAYS`` of inbound mail (unlabeled, for EM adaptation: ``ml.adaptation``)
  feed a retraining job that promotes a new global model only if it is not worse on the
  held-out evaluation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from bson import ObjectId

from app.adapters.blobs import BlobStore
from app.adapters.mongo import Mongo, UpdateOne
from app.adapters.spam_scorer import bounded_for_scoring
from app.domain.errors import ValidationError
from app.domain.folders import Folder
from app.domain.viewer import Viewer
from app.services.mailbox.changes import MailboxChanges, StateChange, parse_ids

log = structlog.get_logger(__name__)

MAX_TOKENS_PER_MESSAGE = 400  # bounds what one label can write (and what a user map can hold)
RETRAIN_MAX_LABELS = 5000
# The deployment's own recent mail that EM adapts the model to: a few weeks say what this
# organisation's mail looks like now; a cap keeps the weekly job's memory and time bounded.
RETRAIN_INBOUND_DAYS = 28
RETRAIN_MAX_INBOUND = 5000


@dataclass(frozen=True)
class RetrainOutcome:
    promoted: bool
    version: str | None
    labels: int
    reason: str
    inbound: int = 0  # unlabeled inbound messages the candidate was adapted to


class SpamFeedbackService:
    def __init__(self, mongo: Mongo, blobs: BlobStore, mailbox: MailboxChanges) -> None:
        self.db = mongo.db
        self.blobs = blobs
        self.mailbox = mailbox

    async def mark(self, viewer: Viewer, ids: list[str], is_spam: bool) -> list[dict[str, Any]]:
        """Move received mail to SPAM (or back to INBOX) and record the user's label."""
        oids = parse_ids(ids)
        docs = await self.db.mailbox_items.find(
            {"_id": {"$in": oids}, "user_id": viewer.user_id},
            {"role": 1, "message_id": 1, "spam": 1},
        ).to_list()
        if len(docs) == len(oids) and any(d["role"] != "received" for d in docs):
            raise ValidationError.on("ids", "only received mail can be marked spam or not spam")
        verdicts = {d["message_id"]: d.get("spam") or {} for d in docs}
        folder = Folder.SPAM if is_spam else Folder.INBOX
        # "Not spam" also takes the probably-spam flag off: the user has just answered it.
        change = StateChange(folder=folder.value, clear_probable_spam=not is_spam)
        items = await self.mailbox.update_items(viewer, [str(o) for o in oids], change)
        for item in items:
            if await self._learn(viewer.user_id, item["message_id"], is_spam):
                await self._move_threshold(
                    viewer.user_id, verdicts.get(item["message_id"], {}), is_spam
                )
        return items

    async def _move_threshold(
        self, user_id: ObjectId, verdict: Mapping[str, Any], is_spam: bool
    ) -> None:
        import ml

        if not verdict:
            return  # mail scored before verdicts were stored: nothing to compare with
        current = await self.probable_offset(user_id)
        moved = ml.moved_probable_offset(
            current, bool(verdict.get("is_spam")), bool(verdict.get("probable")), is_spam
        )
        if moved != current:
            await self.db.spam_thresholds.update_one(
                {"_id": user_id},
                {"$set": {"probable_offset": moved, "updated_at": datetime.now(UTC)}},
                upsert=True,
            )

    async def probable_offset(self, user_id: ObjectId) -> float:
        """How far this user's feedback has moved their probably-spam threshold (0: not)."""
        doc = await self.db.spam_thresholds.find_one({"_id": user_id})
        return float(doc["probable_offset"]) if doc else 0.0

    async def _learn(self, user_id: ObjectId, message_id: ObjectId, is_spam: bool) -> bool:
        """Record the label and teach the user's token counts; False if it was not new."""
        import ml

        message = await self.db.messages.find_one({"_id": message_id}, {"raw_blob_id": 1})
        if not message or not message.get("raw_blob_id"):
            return False
        previous = await self.db.spam_labels.find_one_and_update(
            {"user_id": user_id, "message_id": message_id},
            {
                "$set": {
                    "is_spam": is_spam,
                    "raw_blob_id": message["raw_blob_id"],
                    "at": datetime.now(UTC),
                }
            },
            upsert=True,
        )
        if previous is not None and previous.get("is_spam") == is_spam:
            return False  # the same label again teaches nothing new
        raw = await self.blobs.get(message["raw_blob_id"])
        tokens = list(dict.fromkeys(ml.tokens_for_feedback(raw)))[:MAX_TOKENS_PER_MESSAGE]
        add, undo = ("spam", "ham") if is_spam else ("ham", "spam")
        change: dict[str, int] = {add: 1}
        if previous is not None:
            change[undo] = -1  # the user changed their mind: move the earlier vote
        await self.db.spam_tokens.bulk_write(
            [
                UpdateOne({"user_id": user_id, "token": t}, {"$inc": change}, upsert=True)
                for t in tokens
            ],
            ordered=False,
        )
        return True

    async def user_counts(
        self, user_id: ObjectId, tokens: list[str]
    ) -> Mapping[str, tuple[int, int]]:
        """The user's (spam, ham) counts for just these tokens: one indexed read."""
        if not tokens:
            return {}
        docs = await self.db.spam_tokens.find(
            {"user_id": user_id, "token": {"$in": tokens}}, {"token": 1, "spam": 1, "ham": 1}
        ).to_list()
        return {d["token"]: (max(0, d.get("spam", 0)), max(0, d.get("ham", 0))) for d in docs}

    async def has_feedback(self, user_ids: list[ObjectId]) -> set[ObjectId]:
        docs = await self.db.spam_labels.distinct("user_id", {"user_id": {"$in": user_ids}})
        return set(docs)

    async def verdict_for_user(self, raw: bytes, user_id: ObjectId, model: Any = None) -> Any:
        """The global verdict adjusted by this user's feedback (``ml.score_for_user``), flagged
        "probably spam" at the user's own threshold."""
        import ml

        tokens = list(dict.fromkeys(ml.tokens_for_feedback(raw)))
        counts = await self.user_counts(user_id, tokens)
        offset = await self.probable_offset(user_id)
        return ml.score_for_user(raw, counts, model, probable_offset=offset)

    async def recent_inbound(self, now: datetime | None = None) -> list[bytes]:
        """Raw inbound mail of the last ``RETRAIN_INBOUND_DAYS`` (newest first, at most
        ``RETRAIN_MAX_INBOUND``), each cut to what scoring reads: the unlabeled stream."""
        since = (now or datetime.now(UTC)) - timedelta(days=RETRAIN_INBOUND_DAYS)
        # An ObjectId starts with its creation time: the _id index serves the date range.
        docs = (
            await self.db.messages.find(
                {"_id": {"$gte": ObjectId.from_datetime(since)}, "direction": "inbound"},
                {"raw_blob_id": 1},
            )
            .sort("_id", -1)
            .limit(RETRAIN_MAX_INBOUND)
            .to_list()
        )
        out = []
        for doc in docs:
            if not doc.get("raw_blob_id"):
                continue
            try:
                out.append(bounded_for_scoring(await self.blobs.get(doc["raw_blob_id"])))
            except Exception:  # deleted since (expunged, retention): it simply is not in the stream
                continue
        return out

    async def retrain(self, models_dir: Path, corpus_path: Path | None = None) -> RetrainOutcome:
        """Retrain the global model from corpus + feedback, adapted (EM) to recent inbound
        mail when there is enough of it; promote only if not worse on the held-out period."""
        from ml.adaptation import AdaptationConfig
        from ml.corpus import load_corpus
        from ml.model import save
        from ml.retrain import retrain

        labels = (
            await self.db.spam_labels.find({}, {"raw_blob_id": 1, "is_spam": 1})
            .sort("at", -1)
            .limit(RETRAIN_MAX_LABELS)
            .to_list()
        )
        inbound = await self.recent_inbound()
        if len(inbound) < AdaptationConfig().min_unlabeled:
            inbound = []  # too little to adapt to: the recipe is corpus + feedback alone
        if not labels and not inbound:
            return RetrainOutcome(False, None, 0, "no feedback and too little inbound mail yet")
        try:
            corpus = load_corpus(corpus_path)
        except (FileNotFoundError, OSError) as e:
            return RetrainOutcome(False, None, len(labels), f"training corpus unavailable: {e}")
        extra = []
        for label in labels:
            try:
                extra.append((await self.blobs.get(label["raw_blob_id"]), bool(label["is_spam"])))
            except Exception:  # the message was deleted since: its label goes with it
                continue
        version = "fb-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        # CPU-bound for minutes: off the event loop, so the worker's other jobs keep running.
        result = await asyncio.to_thread(
            retrain, extra, corpus.messages, version=version, unlabeled=inbound
        )
        if not result.not_worse:
            log.info(
                "retrained spam model not promoted",
                auc=result.candidate_metrics.roc_auc,
                reference_auc=result.reference_metrics.roc_auc,
                adapted=result.adapted,
            )
            return RetrainOutcome(
                False,
                version,
                len(extra),
                "candidate was worse on the held-out period",
                len(inbound),
            )
        await asyncio.to_thread(models_dir.mkdir, parents=True, exist_ok=True)
        card = {
            "version": version,
            "feedback_labels": len(extra),
            "inbound_unlabeled": len(inbound),
            "pseudo_spam": result.pseudo_spam,
            "pseudo_ham": result.pseudo_ham,
            "held_out": {
                "auc": result.candidate_metrics.roc_auc,
                "ham_fpr": result.candidate_metrics.ham_fpr,
            },
            "reference": {
                "auc": result.reference_metrics.roc_auc,
                "ham_fpr": result.reference_metrics.ham_fpr,
            },
        }
        model_path, _ = save(result.candidate, models_dir, card)
        await self.db.spam_models.insert_one(
            {
                "version": version,
                "path": str(model_path),
                "promoted_at": datetime.now(UTC),
                "card": card,
            }
        )
        return RetrainOutcome(True, version, len(extra), "promoted", len(inbound))

    async def promoted_model_path(self) -> Path | None:
        doc = await self.db.spam_models.find_one({}, sort=[("promoted_at", -1)])
        if doc is None:
            return None
        path = Path(doc["path"])
        return path if await asyncio.to_thread(path.exists) else None
