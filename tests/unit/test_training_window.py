"""The training window's label policy: a window with too few labels waits instead of training."""

from __future__ import annotations

from mlloop.training.pipeline import labels_shortfall
from mlloop.training.snapshot import LabelCounts
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")


def test_enough_labels_train() -> None:
    policy = USE_CASE.training
    counts = LabelCounts(known=policy.min_rows, unknown=0, target_mean=policy.min_positives / policy.min_rows)
    assert labels_shortfall(counts, USE_CASE) is None


def test_too_few_positives_wait_and_say_what_is_needed() -> None:
    counts = LabelCounts(known=50_000, unknown=10_000, target_mean=41 / 50_000)
    reason = labels_shortfall(counts, USE_CASE)
    assert reason is not None
    assert "50000 labelled rows / 41 labelled positives" in reason
    assert f"needs {USE_CASE.training.min_rows} / {USE_CASE.training.min_positives}" in reason
    assert "training.min_positives" in reason and "card_fraud" in reason


def test_no_known_labels_wait() -> None:
    counts = LabelCounts(known=0, unknown=20_000, target_mean=None)
    assert "0 labelled rows / 0 labelled positives" in (labels_shortfall(counts, USE_CASE) or "")
