"""Benchmark: the raw-transactions GX suite (validate_frame) against the same checks as vectorised pandas.

Run: ``.venv/bin/python bench/validation.py [--rows 1000000] [--runs 3]``. Prints a few human lines, then
exactly one line of JSON: ours_s / peer_s (medians after one warm-up) and their ratio, the number of
expectations, and whether GX and the pandas peer agree on every check's verdict on the clean batch and on
every fault batch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from mlloop.data.generator import generate_day
from mlloop.data.scenarios import FAULT_SCENARIOS
from mlloop.validation import validate_frame
from mlloop.validation.suite import read_suite_json

SUITE = "transactions_raw"
DAY = dt.date(2026, 1, 5)
SEED = 42
Verdicts = dict[str, bool]
# What pandas.api.types.infer_dtype reports for an object column whose values are all of a type.
_INFERRED = {"str": {"string"}, "float64": {"floating"}, "float32": {"floating"}}
_INFERRED |= {name: {"integer"} for name in ("int64", "int32", "int16", "int8")}


def _check_name(expectation: dict[str, Any]) -> str:
    """Return a readable id of one check: its type and column (or 'table')."""
    return f"{expectation['type']}({expectation['kwargs'].get('column', 'table')})"


# --- the pandas peer: the suite's checks, written as vectorised pandas ---------------------------------


def _peer_in_type_list(series: pd.Series, kwargs: dict[str, Any]) -> bool:
    """Every non-null value has one of the types (by dtype, or by inferred type for object columns)."""
    if series.dtype == object:
        allowed = set().union(*(_INFERRED.get(name, set()) for name in kwargs["type_list"])) | {"empty"}
        return pd.api.types.infer_dtype(series, skipna=True) in allowed
    return series.dtype.name in kwargs["type_list"]


def _peer_of_type(series: pd.Series, kwargs: dict[str, Any]) -> bool:
    """The column holds pandas Timestamps (tz-aware datetimes)."""
    return kwargs["type_"] == "Timestamp" and isinstance(series.dtype, pd.DatetimeTZDtype)


def _peer_between(series: pd.Series, kwargs: dict[str, Any]) -> bool:
    """Every non-null value lies within the bounds."""
    values = series.dropna()
    if values.dtype == object:
        return False  # GX refuses to compare text with numeric bounds; so does the contract
    ok = pd.Series(True, index=values.index)
    if kwargs.get("min_value") is not None:
        ok &= values > kwargs["min_value"] if kwargs.get("strict_min") else values >= kwargs["min_value"]
    if kwargs.get("max_value") is not None:
        ok &= values < kwargs["max_value"] if kwargs.get("strict_max") else values <= kwargs["max_value"]
    return bool(ok.all())


def _peer_match_regex(series: pd.Series, kwargs: dict[str, Any]) -> bool:
    """Every non-null value is text matching the regex."""
    if series.dtype != object and not isinstance(series.dtype, pd.StringDtype):
        return False
    return bool(series.dropna().str.contains(kwargs["regex"], regex=True, na=False).all())


_COLUMN_CHECKS: dict[str, Callable[[pd.Series, dict[str, Any]], bool]] = {
    "expect_column_values_to_be_in_type_list": _peer_in_type_list,
    "expect_column_values_to_be_of_type": _peer_of_type,
    "expect_column_values_to_not_be_null": lambda s, kw: bool(s.notna().all()),
    "expect_column_values_to_be_between": _peer_between,
    "expect_column_values_to_be_in_set": lambda s, kw: bool((s.isin(kw["value_set"]) | s.isna()).all()),
    "expect_column_values_to_be_unique": lambda s, kw: bool(s.dropna().is_unique),
    "expect_column_values_to_match_regex": _peer_match_regex,
}


def pandas_peer(frame: pd.DataFrame, suite: dict[str, Any]) -> Verdicts:
    """Run the suite's checks as vectorised pandas; return each check's verdict."""
    verdicts: Verdicts = {}
    for expectation in suite["expectations"]:
        kind, kwargs = expectation["type"], expectation["kwargs"]
        if kind == "expect_table_columns_to_match_ordered_list":
            ok = list(frame.columns) == kwargs["column_list"]
        elif kind == "expect_table_row_count_to_be_between":
            ok = kwargs["min_value"] <= len(frame) <= kwargs["max_value"]
        elif kwargs["column"] not in frame.columns:
            ok = False
        else:
            ok = _COLUMN_CHECKS[kind](frame[kwargs["column"]], kwargs)
        verdicts[_check_name(expectation)] = ok
    return verdicts


# --- GX side -----------------------------------------------------------------------------------------


def gx_verdicts(frame: pd.DataFrame) -> Verdicts:
    """Run the real GX suite through validate_frame; return each check's verdict."""
    result = validate_frame(frame, SUITE).result
    return {_check_name(item["expectation_config"]): bool(item["success"]) for item in result["results"]}


def naive_gx(frame: pd.DataFrame) -> Callable[[], object]:
    """Return a call of the same GX suite the plain way: one batch, default result format, no tuning."""
    import great_expectations as gx

    from mlloop.validation import load_suite

    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_pandas("naive").add_dataframe_asset("frame")
    definition = asset.add_batch_definition_whole_dataframe("whole")
    suite = load_suite(SUITE)
    return lambda: definition.get_batch(batch_parameters={"dataframe": frame}).validate(suite)


def delivered_frame(scenario: str, rows: int) -> pd.DataFrame:
    """Return a generated day as ingestion sees it: written to Parquet and read back."""
    return pd.read_parquet(
        io.BytesIO(generate_day(DAY, rows=rows, seed=SEED, scenario=scenario).to_file_bytes())
    )


def _median_seconds(fn: Callable[[], object], runs: int) -> float:
    """Return the median wall time of ``runs`` calls of ``fn`` (after the caller's warm-up)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Time GX against the pandas peer on a clean day and compare their verdicts on clean and faulty days."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fault-rows", type=int, default=20_000, help="rows of each fault batch checked")
    parser.add_argument("--naive", action="store_true", help="also time one plain GX run (slow)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    suite = read_suite_json(SUITE)
    started = time.perf_counter()
    clean = delivered_frame("none", args.rows)
    print(
        f"generated {len(clean):,} clean rows in {time.perf_counter() - started:.1f}s; "
        f"{len(suite['expectations'])} expectations in suite {SUITE}"
    )

    gx_clean, peer_clean = gx_verdicts(clean), pandas_peer(clean, suite)  # warm-up (and verdicts)
    ours_s = _median_seconds(lambda: validate_frame(clean, SUITE), args.runs)
    peer_s = _median_seconds(lambda: pandas_peer(clean, suite), args.runs)
    print(
        f"GX validate_frame: {ours_s:.3f}s   pandas peer: {peer_s:.3f}s   ratio {ours_s / peer_s:.2f}x "
        f"(median of {args.runs} after one warm-up)"
    )

    figures: dict[str, Any] = {}
    if args.naive:
        naive_s = _median_seconds(naive_gx(clean), 1)
        figures = {"naive_gx_s": round(naive_s, 3), "naive_ratio": round(naive_s / peer_s, 2)}
        print(
            f"plain GX (one batch, default result format): {naive_s:.3f}s, {naive_s / peer_s:.2f}x the peer"
        )

    disagreements = {name for name in gx_clean if gx_clean[name] != peer_clean.get(name)}
    print(
        f"clean batch: GX success={all(gx_clean.values())}, peer success={all(peer_clean.values())}, "
        f"checks disagreeing: {sorted(disagreements) or 'none'}"
    )
    for scenario in (name for name in FAULT_SCENARIOS if name != "fault_malformed"):
        frame = delivered_frame(scenario, args.fault_rows)
        gx, peer = gx_verdicts(frame), pandas_peer(frame, suite)
        differ = {name for name in gx if gx[name] != peer.get(name)}
        disagreements |= differ
        failed = sorted(name for name, ok in gx.items() if not ok)
        print(f"{scenario}: GX failed {len(failed)} checks {failed}; peer agrees: {not differ}")

    print(
        json.dumps(
            {
                "bench": "validation",
                "rows": len(clean),
                "ours_s": round(ours_s, 3),
                "peer_s": round(peer_s, 3),
                "ratio": round(ours_s / peer_s, 2),
                "expectations": len(suite["expectations"]),
                "verdicts_agree": not disagreements,
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
