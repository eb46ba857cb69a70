"""Data quality of a monitored window: missing shares and new categories, computed by Evidently."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from mlloop.data.generator import generate_day
from mlloop.features import build_use_case_features
from mlloop.features.spec import feature_columns
from mlloop.monitoring.quality import check_quality, quality_changes
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")
CATEGORICAL = list(USE_CASE.features.categorical)
NUMERIC = [c for c in feature_columns(USE_CASE.features) if c not in CATEGORICAL]


def features(scenario: str):
    day = generate_day(dt.date(2026, 3, 2), rows=20_000, seed=7, scenario=scenario)
    return build_use_case_features(day.transactions, USE_CASE)


def check(frame, **kwargs):
    return check_quality(
        frame, numeric=NUMERIC, categorical=CATEGORICAL, vocabularies=USE_CASE.features.categorical, **kwargs
    )


def test_clean_day_only_misses_history_a_first_payment_cannot_have(tmp_path) -> None:
    result = check(features("none"), html_path=tmp_path / "quality.html")
    assert result.rows == 20_000 and {c.column for c in result.columns} == set(NUMERIC) | set(CATEGORICAL)
    assert all(line.startswith("customer_") and "missing" in line for line in result.findings())
    html = (tmp_path / "quality.html").read_text(encoding="utf-8")
    assert html.lstrip().startswith("<!DOCTYPE html>") and "Missing" in html
    other = generate_day(dt.date(2026, 3, 3), rows=20_000, seed=8, scenario="none")
    assert quality_changes(check(build_use_case_features(other.transactions, USE_CASE)), result) == []


def test_new_merchant_categories_are_counted() -> None:
    result = check(features("covariate_new_categories"))
    merchant = next(c for c in result.columns if c.column == "merchant_category")
    assert merchant.new_category_share == pytest.approx(0.2, abs=0.02)
    assert merchant.new_categories == ("__unknown__",)
    assert any(line.startswith("merchant_category:") for line in result.findings())
    changes = quality_changes(result, check(features("none")))
    assert changes == [
        f"merchant_category: {merchant.new_category_share:.1%} new categories (reference 0.0%; __unknown__)"
    ]


def test_missing_values_are_shared_per_column() -> None:
    frame = features("none")
    frame.loc[frame.index[:1000], "amount"] = np.nan
    amount = next(c for c in check(frame).columns if c.column == "amount")
    assert amount.missing_share == pytest.approx(0.05)
    assert "amount: 5.0% missing" in check(frame).findings()


def test_missing_column_and_empty_frame_are_refused() -> None:
    frame = features("none")
    with pytest.raises(ValueError, match=r"\['amount'\] are not in the window"):
        check(frame.drop(columns=["amount"]))
    with pytest.raises(ValueError, match="no rows"):
        check(frame.head(0))
