"""Training, persistence and scoring of the naive-Bayes spam model.

The model is scikit-learn's ``MultinomialNB`` over Boolean, hashed tokens (``FeatureHasher``),
combined the way SpamBayes combines word probabilities (Robinson's geometric mean): the
message's spam log-odds is the *mean* of its tokens' log-likelihood ratios, and tokens seen in
fewer than ``min_df`` training messages count as neutral. Summing instead of averaging lets a
long essay or a long foreign-language message overwhelm everything else, and a token seen once
is more often an accident of the corpus than evidence. A Platt sigmoid (``LogisticRegression``
on that one number), fitted on out-of-fold scores, turns the score into a probability, so the
threshold is a probability too.

Files are written with skops, never pickle, and rewritten canonically (sequential ids, fixed zip
timestamps) so that training twice gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import skops.io as sio
from scipy import sparse
from sklearn.feature_extraction import FeatureHasher
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import MultinomialNB
from sklearn.utils import murmurhash3_32

from app.domain.errors import NotFound, ValidationError

MODELS_DIR = Path(__file__).resolve().parent / "models"
# Types a model file may contain beyond skops' defaults: none today. A file that asks for
# anything else is refused, whatever its card says.
ALLOWED_EXTRA_TYPES: frozenset[str] = frozenset()
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# Model files before 1.1.0 have no "probably spam" threshold: their card called 0.5–0.99 that.
LEGACY_PROBABLE_THRESHOLD = 0.5


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides the model's bytes (with the corpus and library versions)."""

    n_features: int = 2**20
    alpha: float = 1.0  # Laplace smoothing
    min_df: int = 2  # tokens in fewer training messages are neutral
    calibration_folds: int = 5
    target_fpr: float = 0.0005  # threshold: the lowest whose out-of-fold ham FPR is below this
    seed: int = 0
    # "Probably spam" (a flag in the Inbox, not a move to Spam): a wrongly flagged ham costs a
    # glance, not a lost message, so it may fire on this share of ham.
    probable_target_fpr: float = 0.01


@dataclass(frozen=True)
class SpamModel:
    version: str
    hasher: FeatureHasher
    nb: MultinomialNB
    calibrator: LogisticRegression
    threshold: float
    config: TrainingConfig
    card: dict = field(default_factory=dict, compare=False)
    # At or above it (and below ``threshold``): "probably spam". 0.5 for files older than 1.1.
    probable_threshold: float = LEGACY_PROBABLE_THRESHOLD
    # log P(token|spam) − log P(token|ham) per hash bucket, 0 for rare ones; derived, not saved.
    token_log_odds: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_log_odds", _token_log_odds(self.nb, self.config.min_df))


def _token_log_odds(nb: MultinomialNB, min_df: int) -> np.ndarray:
    log_odds = nb.feature_log_prob_[1] - nb.feature_log_prob_[0]
    rare = nb.feature_count_.sum(axis=0) < min_df
    return np.where(rare, 0.0, log_odds)


def make_hasher(config: TrainingConfig) -> FeatureHasher:
    return FeatureHasher(n_features=config.n_features, input_type="string", alternate_sign=False)


def vectorize(hasher: FeatureHasher, token_lists: Sequence[Sequence[str]]) -> sparse.csr_matrix:
    """Boolean document-token matrix (a token counts once however often it occurs)."""
    matrix = hasher.transform(token_lists).tocsr()
    matrix.data[:] = 1.0
    return matrix


def bucket_of(token: str, n_features: int) -> int:
    """The FeatureHasher column of one token (same murmurhash3, seed 0, abs, modulo)."""
    return abs(murmurhash3_32(token, seed=0)) % n_features


def mean_log_odds(log_odds: np.ndarray, matrix: sparse.csr_matrix) -> np.ndarray:
    """Each row's mean token log-odds: the length-normalised NB score."""
    counts = np.maximum(np.diff(matrix.indptr), 1)
    return (matrix @ log_odds) / counts


def _fit_nb(matrix: sparse.csr_matrix, labels: np.ndarray, config: TrainingConfig) -> MultinomialNB:
    return MultinomialNB(alpha=config.alpha).fit(matrix, labels)


def _out_of_fold_scores(
    matrix: sparse.csr_matrix, labels: np.ndarray, config: TrainingConfig
) -> np.ndarray:
    scores = np.zeros(matrix.shape[0])
    folds = StratifiedKFold(config.calibration_folds, shuffle=True, random_state=config.seed)
    for train, held_out in folds.split(np.zeros(len(labels)), labels):
        nb = _fit_nb(matrix[train], labels[train], config)
        scores[held_out] = mean_log_odds(_token_log_odds(nb, config.min_df), matrix[held_out])
    return scores


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray, target_fpr: float) -> float:
    """The lowest threshold (0.50–0.99, by 0.01) whose ham false-positive rate ≤ target."""
    ham = probabilities[~labels]
    for cents in range(50, 100):
        threshold = cents / 100
        if np.mean(ham >= threshold) <= target_fpr:
            return threshold
    return 0.99


def choose_probable_threshold(
    probabilities: np.ndarray, labels: np.ndarray, config: TrainingConfig
) -> float:
    """The "probably spam" threshold: the lowest (0.50–0.99, by 0.01) whose ham FPR is at most
    ``probable_target_fpr``, and never above the spam threshold itself."""
    spam_threshold = choose_threshold(probabilities, labels, config.target_fpr)
    return min(choose_threshold(probabilities, labels, config.probable_target_fpr), spam_threshold)


def training_labels(labels: Sequence[bool] | np.ndarray) -> np.ndarray:
    """The labels as a boolean array (True = spam); a model learns nothing from one class."""
    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        raise ValidationError.on("labels", "training needs both spam and ham")
    return y


def fit(
    token_lists: Sequence[Sequence[str]],
    labels: Sequence[bool] | np.ndarray,
    config: TrainingConfig = TrainingConfig(),
    version: str = "dev",
) -> SpamModel:
    """Train NB, a Platt calibrator on out-of-fold scores, and a threshold — deterministically."""
    y = training_labels(labels)
    hasher = make_hasher(config)
    matrix = vectorize(hasher, token_lists)
    oof = _out_of_fold_scores(matrix, y, config)
    calibrator = LogisticRegression(C=1e4, random_state=config.seed).fit(oof.reshape(-1, 1), y)
    oof_probabilities = calibrator.predict_proba(oof.reshape(-1, 1))[:, 1]
    threshold = choose_threshold(oof_probabilities, y, config.target_fpr)
    nb = _fit_nb(matrix, y, config)
    return SpamModel(
        version,
        hasher,
        nb,
        calibrator,
        threshold,
        config,
        probable_threshold=choose_probable_threshold(oof_probabilities, y, config),
    )


def predict_proba(model: SpamModel, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
    """Calibrated spam probabilities for many messages (batch path, used by evaluation)."""
    matrix = vectorize(model.hasher, token_lists)
    scores = mean_log_odds(model.token_log_odds, matrix)
    return model.calibrator.predict_proba(scores.reshape(-1, 1))[:, 1]


# --- persistence -------------------------------------------------------------------------


def _canonical_skops(data: bytes) -> bytes:
    """Rewrite a skops archive so equal models give equal bytes.

    skops names arrays and memo entries by ``id(obj)`` (a memory address) and stamps zip
    entries with the current time; both change run to run. Ids are renumbered in order of
    first appearance (a bijection, so shared references stay shared) and times are fixed.
    """
    source = zipfile.ZipFile(io.BytesIO(data))
    schema = source.read("schema.json").decode("utf-8")
    ids: dict[str, str] = {}
    for match in re.finditer(r'"__id__": (\d+)|"(\d+)\.npy"', schema):
        raw_id = match.group(1) or match.group(2)
        ids.setdefault(raw_id, str(len(ids) + 1))
    schema = re.sub(r'("__id__": )(\d+)', lambda m: m.group(1) + ids[m.group(2)], schema)
    schema = re.sub(r'"(\d+)\.npy"', lambda m: f'"{ids[m.group(1)]}.npy"', schema)
    entries = {"schema.json": schema.encode("utf-8")}
    for name in source.namelist():
        if name.endswith(".npy"):
            entries[f"{ids[name[:-4]]}.npy"] = source.read(name)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, entries[name], compresslevel=9)
    return out.getvalue()


def model_bytes(model: SpamModel) -> bytes:
    """The canonical skops bytes of a model (its sklearn parts and its config)."""
    payload = {
        "format": "mailhub-spam-nb/1",
        "version": model.version,
        "hasher": model.hasher,
        "nb": model.nb,
        "calibrator": model.calibrator,
        "threshold": model.threshold,
        "probable_threshold": model.probable_threshold,
        "config": asdict(model.config),
    }
    return _canonical_skops(sio.dumps(payload))


def save(model: SpamModel, directory: Path, card: dict) -> tuple[Path, Path]:
    """Write ``spam-nb-<version>.skops`` and its JSON card; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    return save_as(model, directory / f"spam-nb-{model.version}.skops", card)


def save_as(model: SpamModel, model_path: Path, card: dict) -> tuple[Path, Path]:
    """Write the model to ``model_path`` and its card beside it (same name, ``.json``), which is
    where ``load`` looks for it."""
    data = model_bytes(model)
    card_path = model_path.with_suffix(".json")
    model_path.write_bytes(data)
    full_card = {
        **card,
        "version": model.version,
        "threshold": model.threshold,
        "probable_threshold": model.probable_threshold,
        "parameters": asdict(model.config),
        "file": model_path.name,
        "file_bytes": len(data),
        "file_sha256": _sha256(data),
        # What this file needs trusted beyond skops' defaults, computed from the bytes.
        "trusted_types": sio.get_untrusted_types(data=data),
    }
    card_path.write_text(json.dumps(full_card, indent=2, sort_keys=True) + "\n")
    return model_path, card_path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version_key(path: Path) -> tuple[int, ...]:
    version = path.stem.removeprefix("spam-nb-")
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def newest_model_path(directory: Path = MODELS_DIR) -> Path:
    """The committed model with the highest version number."""
    candidates = sorted(directory.glob("spam-nb-*.skops"), key=_version_key)
    if not candidates:
        raise NotFound(f"no spam model in {directory}; run `python -m ml train`")
    return candidates[-1]


def load(path: Path) -> SpamModel:
    """Load a model file, trusting only the types its card lists and this code allows."""
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    data = path.read_bytes()
    trusted = list(card.get("trusted_types", []))
    untrusted = sio.get_untrusted_types(data=data)
    refused = sorted(set(untrusted) - (set(trusted) & ALLOWED_EXTRA_TYPES))
    if refused:
        raise ValidationError.on("model", f"model file {path.name} needs untrusted {refused}")
    payload = sio.loads(data, trusted=trusted)
    if not isinstance(payload, dict) or payload.get("format") != "mailhub-spam-nb/1":
        raise ValidationError.on("model", f"{path.name} is not a mailhub spam model")
    return SpamModel(
        version=str(payload["version"]),
        hasher=payload["hasher"],
        nb=payload["nb"],
        calibrator=payload["calibrator"],
        threshold=float(payload["threshold"]),
        config=TrainingConfig(**payload["config"]),
        card=card,
        probable_threshold=float(payload.get("probable_threshold", LEGACY_PROBABLE_THRESHOLD)),
    )
