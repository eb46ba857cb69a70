"""The scoring request contract (from the use case and its raw suite) and the buffered inference log."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from mlloop.data.generator import generate_day
from mlloop.serving.client import request_rows
from mlloop.serving.inference_log import InferenceLog
from mlloop.serving.schema import RequestAdapters
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return request_rows(generate_day(dt.date(2026, 9, 1), rows=50, seed=1).transactions, USE_CASE)


@pytest.fixture(scope="module")
def adapters() -> RequestAdapters:
    return RequestAdapters(USE_CASE, max_rows=10)


def test_every_generated_row_is_accepted_and_the_target_is_not_a_field(adapters, rows) -> None:
    parsed, batch = adapters.parse(json.dumps(rows[:10]).encode())
    assert batch and len(parsed) == 10
    assert parsed[0].event_time.tzinfo is not None
    assert "is_fraud" not in adapters.row.model_fields
    assert set(adapters.row.model_fields) == set(USE_CASE.schema_) - {"is_fraud"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": 0}, "greater than 0"),  # strict_min in the suite
        ({"amount": 2_000_000.0}, "less than or equal to 1000000"),
        ({"customer_age": 17}, "greater than or equal to 18"),
        ({"tx_count_1h": -1}, "greater than or equal to 0"),
        ({"channel": "fax"}, "Input should be"),
        ({"card_number": "4111-1111"}, "should match pattern"),
        ({"customer_id": None}, "valid string"),
        ({"event_time": "yesterday"}, "datetime"),
        ({"amount": True}, "valid number"),
    ],
)
def test_suite_rules_reject_a_row(adapters, rows, change, message) -> None:
    with pytest.raises(ValidationError) as caught:
        adapters.parse(json.dumps({**rows[0], **change}).encode())
    assert message in str(caught.value)


def test_batches_are_bounded_and_non_empty(adapters, rows) -> None:
    with pytest.raises(ValidationError, match="at most 10 items"):
        adapters.parse(json.dumps(rows[:11]).encode())
    with pytest.raises(ValidationError, match="at least 1 item"):
        adapters.parse(b"[]")


def _served(rows: list[dict], start: int = 0) -> list[dict]:
    return [
        {**r, "event_time": pd.Timestamp(r["event_time"]), "score": 0.1, "request_id": str(start + i)}
        for i, r in enumerate(rows)
    ]


def _logged(root: Path) -> pd.DataFrame:
    storage = Storage(str(root))
    keys = [k for k in storage.list("inference/transactions") if k.endswith(".parquet")]
    return pd.concat([storage.read_frame(k) for k in keys], ignore_index=True) if keys else pd.DataFrame()


def test_inference_log_flushes_on_size_time_and_close(tmp_path: Path, rows) -> None:
    log = InferenceLog(Storage(str(tmp_path)), "transactions", "event_time", flush_rows=20, flush_seconds=0.5)
    log.append(_served(rows[:25]))
    deadline = time.monotonic() + 10
    while log.rows_written < 25:  # size triggers the first write; age the rest
        assert time.monotonic() < deadline, log.rows_written
        time.sleep(0.05)
    log.append(_served(rows[25:30], start=25))
    log.close()
    logged = _logged(tmp_path)
    assert sorted(logged["request_id"].astype(int)) == list(range(30))
    assert {p.parent.name for p in tmp_path.rglob("*.parquet")} == {"date=2026-09-01"}
    with pytest.raises(RuntimeError, match="closed"):
        log.append(_served(rows[:1]))


class _BrokenStorage(Storage):
    def write_frame(self, uri_or_key: str, frame: pd.DataFrame) -> str:
        raise OSError("bucket unreachable")


def test_inference_log_keeps_rows_when_storage_fails_and_spools_them(tmp_path: Path, rows) -> None:
    spool = tmp_path / "spool"
    log = InferenceLog(
        _BrokenStorage(str(tmp_path / "data")), "transactions", "event_time", flush_rows=5, flush_seconds=60,
        spool_dir=spool,
    )  # fmt: skip
    log.append(_served(rows[:7]))
    assert log.flush() == 0 and log.pending == 7 and log.write_errors >= 1
    log.close(attempts=1)
    spooled = pd.concat([pd.read_parquet(p) for p in spool.glob("*.parquet")])
    assert sorted(spooled["request_id"].astype(int)) == list(range(7))


def test_inference_log_frame_holds_the_same_instants_in_utc_and_the_right_days(tmp_path: Path) -> None:
    """Aware datetimes become datetime64 UTC by arithmetic: same instants as pandas, any offset."""
    from mlloop.serving.inference_log import _frame

    plus_two = dt.timezone(dt.timedelta(hours=2))
    rows = [
        {"id": "a", "event_time": dt.datetime(2026, 3, 2, 1, 30, 0, 123456, tzinfo=plus_two), "score": 0.1},
        {"id": "b", "event_time": dt.datetime(2026, 3, 2, 23, 59, 59, tzinfo=dt.UTC), "score": 0.2},
        {"id": "c", "event_time": dt.datetime(1969, 12, 31, 23, 0, tzinfo=dt.UTC), "score": 0.3},
    ]
    frame = _frame(rows)
    expected = pd.to_datetime([r["event_time"] for r in rows], utc=True)
    assert frame["event_time"].tolist() == list(expected)
    assert str(frame["event_time"].dtype) == "datetime64[ns, UTC]"
    assert frame["id"].tolist() == ["a", "b", "c"] and frame["score"].tolist() == [0.1, 0.2, 0.3]

    log = InferenceLog(Storage(str(tmp_path)), "tx", "event_time", flush_rows=10_000, flush_seconds=3600)
    log.append(rows)
    log.close()
    days = sorted(p.parent.name for p in tmp_path.rglob("*.parquet"))
    # a's instant is 23:30 UTC on 03-01; c lies before the epoch
    assert days == ["date=1969-12-31", "date=2026-03-01", "date=2026-03-02"]


def test_every_declared_kind_has_a_request_field_and_the_real_use_case_allows_its_gaps() -> None:
    flights = load_use_case("flight_delay")
    boolean = flights.model_copy(update={"schema_": {**flights.schema_, "codeshare": "boolean"}})
    adapters = RequestAdapters(boolean, max_rows=10)
    row = {
        "flight_id": "20261201-UA1545-EWR",
        "event_time": "2026-12-01T10:15:00Z",
        "carrier": "UA",
        "flight": "1545",
        "tailnum": None,  # real deliveries miss some: the suite does not require it
        "origin": "EWR",
        "dest": "IAH",
        "distance": 1400.0,
        **dict.fromkeys(["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip"], None),
        "pressure": None,
        "visib": 10.0,
        "codeshare": True,
    }
    (parsed,), batch = adapters.parse(json.dumps(row).encode())
    assert parsed.codeshare is True and parsed.tailnum is None and not batch
    with pytest.raises(ValidationError, match="codeshare"):
        adapters.parse(json.dumps({**row, "codeshare": "yes"}).encode())
    with pytest.raises(ValidationError, match="distance"):
        adapters.parse(json.dumps({**row, "distance": None}).encode())
