"""`python -m ml adapt` and `python -m ml score --model`, on a small generated corpus."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPAM = ["click here for your free offer", "free prize click here now", "cheap offer click now"]
HAM = ["lunch tomorrow at the usual place", "notes from the meeting", "the build is broken"]
# The stream's spam must be spam beyond doubt to the corpus model (a 0.999 bar) to be learned.
SPAM_B = [
    "crypto airdrop click here for your free offer now",
    "wallet token free prize click here now cheap offer",
]
HAM_B = ["pallet shipment invoice dock meeting", "invoice dock forklift pallet notes"]
SCORE_KEYS = ["file", "spam_probability", "is_spam", "reasons"]


def _ml(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ml", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def _mbox(when: str, subject: str, body: str) -> bytes:
    # The mbox From_ line is what ml.corpus reads a delivery date from.
    return f"From x@example.com  {when}\nSubject: {subject}\n\n{body}\n".encode()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapt")
    corpus = root / "corpus"
    for group, texts in (("spam-1", SPAM), ("easy-ham-1", HAM)):
        folder = corpus / group
        folder.mkdir(parents=True)
        for i in range(60):
            when = "Mon Jul  1 10:00:00 2002" if i < 30 else "Tue Oct  1 10:00:00 2002"
            (folder / f"{i:03}.txt").write_bytes(_mbox(when, "s", f"{texts[i % 3]} m{i}"))
    unlabeled = root / "inbound"
    unlabeled.mkdir()
    for i in range(40):
        text = (SPAM_B + HAM_B)[i % 4]
        (unlabeled / f"{i:03}.eml").write_bytes(f"Subject: s\n\n{text} u{i}\n".encode())
    (unlabeled / ".keep").write_bytes(b"not a message")
    samples = root / "samples"
    samples.mkdir()
    (samples / "spam.eml").write_bytes(b"Subject: s\n\ncrypto airdrop wallet token\n")
    (samples / "ham.eml").write_bytes(b"Subject: s\n\npallet forklift invoice dock\n")
    return {"root": root, "corpus": corpus, "unlabeled": unlabeled, "samples": samples}


@pytest.fixture(scope="module")
def adapted(dirs) -> Path:
    out = dirs["root"] / "models" / "adapted.skops"
    result = _ml(
        "adapt", "--corpus", dirs["corpus"], "--unlabeled", dirs["unlabeled"], "--out", out
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["written"] == str(out) and summary["unlabeled"] == 40
    return out


def test_adapt_writes_a_model_and_its_card(adapted) -> None:
    card = json.loads(adapted.with_suffix(".json").read_text())
    assert card["unlabeled_data"]["messages"] == 40
    assert card["version"].startswith("1.1.0-adapted-")
    assert card["trusted_types"] == []


def test_adapt_gives_the_same_bytes_from_the_same_inputs(dirs, adapted) -> None:
    again = dirs["root"] / "again" / "adapted.skops"
    args = ("adapt", "--corpus", dirs["corpus"], "--unlabeled", dirs["unlabeled"], "--out", again)
    assert _ml(*args).returncode == 0
    assert again.read_bytes() == adapted.read_bytes()


def test_score_with_the_adapted_model_prints_the_usual_lines(dirs, adapted) -> None:
    files = [dirs["samples"] / "spam.eml", dirs["samples"] / "ham.eml"]
    result = _ml("score", "--model", adapted, *files)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [list(line) for line in lines] == [SCORE_KEYS, SCORE_KEYS]
    assert [line["file"] for line in lines] == [str(f) for f in files]
    # words the corpus never had, learned from the unlabeled stream
    assert lines[0]["spam_probability"] > lines[1]["spam_probability"]


def test_adapt_without_the_directory_is_a_clear_error(dirs) -> None:
    missing = dirs["root"] / "nowhere"
    out = dirs["root"] / "x.skops"
    result = _ml("adapt", "--corpus", dirs["corpus"], "--unlabeled", missing, "--out", out)
    assert result.returncode == 2
    assert "no directory of unlabeled mail" in result.stderr
    assert not out.exists()


def test_adapt_with_too_little_mail_is_a_clear_error(dirs) -> None:
    few = dirs["root"] / "few"
    few.mkdir()
    (few / "one.eml").write_bytes(b"Subject: s\n\nhello\n")
    out = dirs["root"] / "y.skops"
    result = _ml("adapt", "--corpus", dirs["corpus"], "--unlabeled", few, "--out", out)
    assert result.returncode == 2 and "at least" in result.stderr
    assert not out.exists()
