"""Run a data-contract suite on a pandas frame with Great Expectations, fast enough for daily batches.

Why it is fast (each measured with cProfile on 1M rows, see bench/validation.py):

- One ephemeral GX context, pandas data source and batch definition per process, built on first use.
- GX's pandas engine filters the *whole* batch (``df[df[col].notnull()]``, every column copied) for
  each column-map metric. The suite therefore runs as one GX validation for the table-level
  expectations on the full frame and one per column on a one-column frame; GX's per-expectation
  results are merged, in suite order, into one ``ExpectationSuiteValidationResult``.
- GX fingerprints every in-memory batch under 1 GB by hashing every cell (twice per ``validate``);
  the fingerprint only goes into ``batch_markers``, so it is skipped while our batches load.
- A text column whose every non-null value is a ``str`` (checked with pandas' vectorised
  ``infer_dtype``) is handed to GX as pandas' string dtype, values unchanged. GX's
  ``expect_column_values_to_be_in_type_list`` then checks the column's dtype (its documented path for
  typed columns) instead of calling a Python lambda on every row. A column holding anything but
  ``str`` stays ``object``, so GX checks it value by value and reports the offending values.
- ``BASIC`` results with a handful of sample values (no index lists, no value counts).

Validations in one process run one at a time: they share the GX context, whose pandas engine keeps
the loaded batch under one batch id.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mlloop.validation.report import (
    SAMPLE_SIZE,
    ValidationReport,
    build_report,
    redact_result,
    shorten_values,
)
from mlloop.validation.suite import build_suite, read_suite_json, suite_path

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuite, ExpectationSuiteValidationResult
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_validation_result import ExpectationValidationResult

log = logging.getLogger(__name__)

RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": SAMPLE_SIZE}
_DATASOURCE = "mlloop_validation"
_gx_lock = threading.RLock()


@dataclass(frozen=True)
class _SuitePlan:
    """A suite split into the GX validations that run it: table-level, then one per column."""

    name: str
    table: ExpectationSuite | None
    columns: tuple[tuple[str, ExpectationSuite], ...]
    order: tuple[tuple[str, str], ...]  # (type, kwargs) of every expectation, in suite order
    pii_columns: frozenset[str]
    text_columns: frozenset[str]  # columns whose type expectation accepts "str"


def validate_frame(
    frame: pd.DataFrame, suite_name: str, extra_expectations: Sequence[dict[str, Any]] = ()
) -> ValidationReport:
    """Validate ``frame`` with the GX suite ``expectations/<suite_name>.json`` and report the outcome.

    ``extra_expectations`` (GX expectation dicts, e.g. the contract defaults of a delivery's day) run
    after the suite's own, as part of the same suite and result.

    A missing column does not stop the run: its expectations fail with "<column>: column is missing"
    and the schema expectation names the missing and unexpected columns.

    Raises:
        FileNotFoundError: when the suite does not exist (naming the suites that do).
        ValueError: when the suite file (or an extra expectation) is not valid for GX.
    """
    started = time.perf_counter()
    if extra_expectations:
        document = read_suite_json(suite_name)
        document["expectations"] = [*document["expectations"], *extra_expectations]
        where = f"{suite_path(suite_name)} with {len(extra_expectations)} added expectations"
        plan = _build_plan(suite_name, document, where)
    else:
        plan = _plan(suite_name, suite_path(suite_name).stat().st_mtime_ns)
    rows, columns = len(frame), [str(name) for name in frame.columns]
    log.info(
        "Validating %d rows x %d columns against suite %r (%d expectations, %d added)",
        rows,
        len(columns),
        suite_name,
        len(plan.order),
        len(extra_expectations),
    )
    batch_definition = _batch_definition()
    results: list[ExpectationValidationResult] = []
    meta: dict[str, Any] = {}
    text_columns: list[str] = []
    with _gx_lock, _without_batch_fingerprint():
        if plan.table is not None:
            table_result = _run(batch_definition, frame, plan.table)
            results += table_result.results
            meta = dict(table_result.meta)
        for column, suite in plan.columns:
            column_frame, as_text = _column_frame(frame, column, text=column in plan.text_columns)
            text_columns += [column] if as_text else []
            results += _run(batch_definition, column_frame, suite).results
    meta["mlloop"] = {
        "validated_as": "table expectations on the full frame, then each column's on a one-column frame",
        "parts": int(plan.table is not None) + len(plan.columns),
        "text_columns_as_string_dtype": text_columns,
        "seconds": round(time.perf_counter() - started, 3),
    }
    merged = _merge(plan, results, meta)
    result = merged.to_json_dict()
    redact_result(result, set(plan.pii_columns))
    shorten_values(result)
    report = build_report(result, suite=suite_name, row_count=rows, columns=columns)
    log.info(
        "Suite %r on %d rows: %d/%d expectations passed (%s) in %.2fs",
        suite_name,
        rows,
        report.passed,
        report.evaluated,
        "success" if report.success else "FAILED",
        time.perf_counter() - started,
    )
    return report


def _run(batch_definition: BatchDefinition, frame: pd.DataFrame, suite: ExpectationSuite) -> Any:
    """Validate one frame with one (sub-)suite through GX's public batch API."""
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    return batch.validate(suite, result_format=RESULT_FORMAT)


def _column_frame(frame: pd.DataFrame, column: str, *, text: bool) -> tuple[pd.DataFrame, bool]:
    """Return the one-column frame GX validates a column's expectations on, and whether it was typed as text.

    A missing column gives a frame with no columns (GX then fails that column's expectations). Only a
    column the contract declares as text (``text``) is given the string dtype, so a wrongly typed column
    keeps GX's value-by-value check, with counts and sample values.
    """
    import pandas as pd

    if column not in frame.columns:
        return frame.iloc[:, :0], False
    if not frame.columns.is_unique:
        return frame.loc[:, frame.columns == column], False  # a duplicated name: GX sees (and fails on) both
    series = frame[column]
    if text and series.dtype == object and pd.api.types.infer_dtype(series, skipna=True) == "string":
        return series.astype(pd.StringDtype()).to_frame(), True
    if text and isinstance(series.dtype, pd.StringDtype):  # e.g. string[pyarrow]: the one GX compares with
        return series.astype(pd.StringDtype()).to_frame(), True
    return series.to_frame(), False


def _merge(
    plan: _SuitePlan, results: list[ExpectationValidationResult], meta: dict[str, Any]
) -> ExpectationSuiteValidationResult:
    """Merge the per-part GX results into one suite result, in suite order, with GX's statistics."""
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    by_key: dict[tuple[str, str], list[ExpectationValidationResult]] = {}
    for item in results:
        config = item.expectation_config
        by_key.setdefault(_key(config.type, config.kwargs), []).append(item)
    ordered = []
    for key in plan.order:
        matches = by_key.get(key)
        if not matches:
            raise RuntimeError(
                f"suite {plan.name!r}: GX returned no result for {key[0]} {key[1]}; this is a bug in "
                "mlloop.validation.runner (the per-column split lost an expectation)."
            )
        ordered.append(matches.pop(0))
    statistics = calc_validation_statistics(ordered)
    return ExpectationSuiteValidationResult(
        success=statistics.success,
        results=ordered,
        suite_name=plan.name,
        statistics={
            "evaluated_expectations": statistics.evaluated_expectations,
            "successful_expectations": statistics.successful_expectations,
            "unsuccessful_expectations": statistics.unsuccessful_expectations,
            "success_percent": statistics.success_percent,
        },
        meta=meta,
    )


def _key(expectation_type: str, kwargs: dict[str, Any]) -> tuple[str, str]:
    """Return a stable identity for an expectation: its type and its kwargs without the batch id."""
    kept = {name: value for name, value in kwargs.items() if name != "batch_id"}
    return expectation_type, json.dumps(kept, sort_keys=True, default=str)


@lru_cache(maxsize=16)
def _plan(name: str, mtime_ns: int) -> _SuitePlan:
    """Load suite ``name`` and split it into table-level and per-column GX suites (cached per version)."""
    log.debug("Planning suite %r (version %s)", name, mtime_ns)
    return _build_plan(name, read_suite_json(name), str(suite_path(name)))


def _build_plan(name: str, document: dict[str, Any], source: str) -> _SuitePlan:
    """Split a suite document into table-level and per-column GX suites, checked whole by GX first."""
    from great_expectations.core import ExpectationSuite

    suite = build_suite(document, source)  # validates the whole document once
    table: list[dict[str, Any]] = []
    per_column: dict[str, list[dict[str, Any]]] = {}
    for expectation in document["expectations"]:
        column = expectation.get("kwargs", {}).get("column")
        (table if column is None else per_column.setdefault(column, [])).append(expectation)

    def part(expectations: list[dict[str, Any]]) -> ExpectationSuite:
        return ExpectationSuite(name=name, expectations=expectations, meta=document.get("meta"))

    order = tuple(_key(exp.configuration.type, exp.configuration.kwargs) for exp in suite.expectations)
    pii = (document.get("meta") or {}).get("pii_columns") or []
    text = {
        exp["kwargs"]["column"]
        for exp in document["expectations"]
        if exp.get("type") == "expect_column_values_to_be_in_type_list"
        and "str" in exp["kwargs"].get("type_list", [])
    }
    log.debug("Suite %r: %d expectations, %d columns", name, len(order), len(per_column))
    return _SuitePlan(
        name=name,
        table=part(table) if table else None,
        columns=tuple((column, part(items)) for column, items in per_column.items()),
        order=order,
        pii_columns=frozenset(pii),
        text_columns=frozenset(text),
    )


def _batch_definition() -> BatchDefinition:
    """Return the process-wide GX batch definition for in-memory frames (ephemeral context, built once)."""
    with _gx_lock:
        return _build_batch_definition()


@lru_cache(maxsize=1)
def _build_batch_definition() -> BatchDefinition:
    """Build the ephemeral GX context, its pandas data source, a dataframe asset and its batch definition."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    started = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    # Progress bars on stderr only clutter task logs; progress is logged instead.
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas(_DATASOURCE)
    asset = source.add_dataframe_asset("frames")
    definition = asset.add_batch_definition_whole_dataframe("whole_frame")
    log.info("Built the GX ephemeral context in %.2fs", time.perf_counter() - started)
    return definition


@contextmanager
def _without_batch_fingerprint() -> Iterator[None]:
    """Skip GX's per-batch data fingerprint (a hash of every cell, used only in batch_markers)."""
    from great_expectations.execution_engine import pandas_execution_engine

    previous = pandas_execution_engine.HASH_THRESHOLD
    pandas_execution_engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        pandas_execution_engine.HASH_THRESHOLD = previous
