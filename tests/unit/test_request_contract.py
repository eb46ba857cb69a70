"""The scoring service's request check applies the declaration's contract defaults that judge a row alone.

A row the service accepts must be one a delivery's validation would accept: the contract's string lengths
(default and per column), its value sets with policy ``reject`` (``report`` ones accept a new value, as a
delivery does), and a batch names each key once (the contract's key_unique).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pydantic import ValidationError

from mlloop.data.generator import generate_day
from mlloop.serving.client import request_rows
from mlloop.serving.schema import RequestAdapters
from mlloop.usecase import UseCase, ValueSetSpec, load_use_case

USE_CASE = load_use_case("card_fraud")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return request_rows(generate_day(dt.date(2026, 9, 1), rows=5, seed=3).transactions, USE_CASE)


def with_contract(**changes: object) -> UseCase:
    """Return card_fraud with its contract section changed."""
    return USE_CASE.model_copy(update={"contract": USE_CASE.contract.model_copy(update=changes)})


def parse(use_case: UseCase, body: object) -> list:
    return RequestAdapters(use_case, max_rows=10).parse(json.dumps(body).encode())[0]


def test_string_lengths_follow_the_contract_default_and_its_per_column_override(rows) -> None:
    longest = USE_CASE.contract.default_max_string_length
    assert parse(USE_CASE, {**rows[0], "customer_id": "C" * longest})
    with pytest.raises(ValidationError, match=f"at most {longest} characters") as caught:
        parse(USE_CASE, {**rows[0], "customer_id": "C" * (longest + 1)})
    assert "customer_id" in str(caught.value)
    short = with_contract(max_string_length={"merchant_id": 8})
    assert parse(short, {**rows[0], "merchant_id": "M" * 8})
    with pytest.raises(ValidationError, match="at most 8 characters"):
        parse(short, {**rows[0], "merchant_id": "M" * 9})


def test_a_value_set_rejects_a_new_value_only_under_policy_reject(rows) -> None:
    known = sorted(USE_CASE.features.categorical["merchant_category"])
    # Default policy report: a category never seen is accepted (the features map it to the unknown one).
    assert parse(USE_CASE, {**rows[0], "merchant_category": "space_travel"})
    strict = with_contract(value_sets={"merchant_category": ValueSetSpec(policy="reject")})
    assert parse(strict, {**rows[0], "merchant_category": known[0]})
    with pytest.raises(ValidationError, match="Input should be") as caught:
        parse(strict, {**rows[0], "merchant_category": "space_travel"})
    assert "merchant_category" in str(caught.value)


def test_a_batch_naming_one_key_twice_is_refused_at_the_repeat(rows) -> None:
    assert len(parse(USE_CASE, rows[:3])) == 3
    with pytest.raises(ValidationError, match="transaction_id repeats the key of row 0") as caught:
        parse(USE_CASE, [rows[0], rows[1], rows[0]])
    assert caught.value.errors()[0]["loc"] == (2, "transaction_id")
