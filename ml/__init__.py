"""mailhub's naive-Bayes spam model: features, training, evaluation and scoring.

``load_model(path=None)`` loads (and caches) the newest committed model; ``score(raw)`` judges
one message — full RFC 5322 bytes, an ``EmailMessage``, or just "Subject: ...\\n\\nbody".
"""

from ml.message_text import SharedHtml
from ml.personal import moved_probable_offset, score_for_user, tokens_for_feedback
from ml.scoring import Verdict, load_model, score

__all__ = [
    "SharedHtml",
    "Verdict",
    "load_model",
    "moved_probable_offset",
    "score",
    "score_for_user",
    "tokens_for_feedback",
]
