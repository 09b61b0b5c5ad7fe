"""Destination-domain labels stay bounded: the first DOMAIN_LABELS domains, then "other"."""

from app.adapters import metrics


def test_domains_past_the_limit_share_the_other_label() -> None:
    seen = [metrics.domain_label(f"d{i}.label-test") for i in range(metrics.DOMAIN_LABELS + 5)]
    named = [d for d in seen if d != metrics.OTHER]
    assert 0 < len(named) <= metrics.DOMAIN_LABELS
    assert seen[-5:] == [metrics.OTHER] * 5  # the table is full by now
    assert named == [f"d{i}.label-test" for i in range(len(named))]  # the first ones keep theirs
    assert metrics.domain_label(named[0].upper()) == named[0]  # case does not make a new one
