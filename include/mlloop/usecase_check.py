"""Check a use case beyond its keys: its suites against its declaration, both on a sample, and its plan.

``mlloop use-cases check NAME [--sample FILE]`` runs these after the declaration loads:

- ``contract_problems``: every column a suite names is one the use case has (the raw suite: the schema;
  the features suite: what ``build_features`` outputs), every one of them has a type expectation that
  fits its declared kind, the ordered column lists match, and the raw suite redacts the PII columns;
- ``check_sample``: the raw suite on each UTC day of a sample (one day is one delivery), the features
  suite on the features built from all of it, as ingestion and training run them;
- ``plan_lines``: the DAG ids, Assets, registered model and the policy (after defaults) it will create.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlloop.config import get_settings
from mlloop.features.build import build_features
from mlloop.features.spec import feature_columns
from mlloop.ingestion.batches import read_delivery
from mlloop.monitoring.decision import MONITOR_DEFAULTS_PATH, load_monitor_config
from mlloop.orchestration.names import dag_names
from mlloop.promotion.gate_config import load_gate_config
from mlloop.registry.champion import CHAMPION, PREVIOUS
from mlloop.usecase import UseCase
from mlloop.usecase_init import sample_format
from mlloop.validation import ValidationReport, load_suite, validate_frame
from mlloop.validation.suite import read_suite_json

TYPE_EXPECTATIONS = ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type")
ORDERED_COLUMNS = "expect_table_columns_to_match_ordered_list"
# The type names (GX's dtype or value type names) that fit each declared kind.
KIND_TYPES: dict[str, re.Pattern[str]] = {
    "string": re.compile(r"^(str|StringDtype|object)$"),
    "float": re.compile(r"^(float(16|32|64)|Float(32|64)Dtype)$"),
    "integer": re.compile(r"^(u?int(8|16|32|64)|U?Int(8|16|32|64)Dtype)$"),
    "boolean": re.compile(r"^(bool|BooleanDtype)$"),
    "datetime": re.compile(r"^(Timestamp|datetime64.*|DatetimeTZDtype|datetime)$"),
}
ALL_ROWS = "all rows"


@dataclass(frozen=True)
class SuiteRun:
    """One suite run on (part of) a sample: its report, or why it could not run."""

    suite: str
    part: str  # a UTC day of the sample, or ALL_ROWS
    report: ValidationReport | None
    error: str | None = None

    @property
    def success(self) -> bool:
        """Return whether the suite ran and passed."""
        return self.report is not None and self.report.success


def contract_problems(use_case: UseCase) -> list[str]:
    """Return each way the use case's suites disagree with its declaration (empty when they agree)."""
    problems: list[str] = []
    raw_name = use_case.suites["raw"]
    where = f"suites.raw ({raw_name})"
    raw = _suite_document(where, raw_name, problems)
    if raw is not None:
        problems += _column_problems(where, raw, use_case.schema_, "schema")
        pii = set((raw.get("meta") or {}).get("pii_columns") or [])
        unredacted = [c for c in use_case.pii_columns if c not in pii]
        if unredacted:
            problems.append(
                f"{where}: meta.pii_columns lacks the declared PII columns {unredacted}, so validation "
                "reports would show their values. Add them to the suite's meta.pii_columns."
            )
    features_name = use_case.suites.get("features")
    if features_name is not None:
        where = f"suites.features ({features_name})"
        document = _suite_document(where, features_name, problems)
        if document is not None:
            built = {
                use_case.key_column: use_case.schema_[use_case.key_column],
                use_case.time_column: "datetime",
            }
            built |= dict.fromkeys(feature_columns(use_case.features), "feature")
            problems += _column_problems(where, document, built, "what the feature spec builds")
    return problems


def _suite_document(where: str, name: str, problems: list[str]) -> dict[str, Any] | None:
    """Return a suite's JSON once GX accepts it; else record why not and return None."""
    try:
        load_suite(name)
        return read_suite_json(name)
    except (FileNotFoundError, ValueError) as exc:
        problems.append(f"{where}: {exc}")
        return None


def _column_problems(where: str, suite: dict[str, Any], kinds: dict[str, str], what: str) -> list[str]:
    """Return the suite's problems against the columns it should describe (``kinds``: column -> kind)."""
    problems = []
    expectations = suite["expectations"]
    named = {e.get("kwargs", {}).get("column") for e in expectations} - {None}
    strangers = sorted(str(c) for c in named if c not in kinds)
    if strangers:
        problems.append(
            f"{where}: expectations on {strangers}, which are not in {what}. Remove them or fix the names."
        )
    for expectation in expectations:
        listed = expectation.get("kwargs", {}).get("column_list")
        if expectation.get("type") == ORDERED_COLUMNS and listed != list(kinds):
            problems.append(
                f"{where}: {ORDERED_COLUMNS} lists {listed}, but {what} is {list(kinds)} (in this order). "
                "Make them the same."
            )
    typed: dict[str, list[str]] = {}
    for expectation in expectations:
        kwargs = expectation.get("kwargs", {})
        if expectation.get("type") in TYPE_EXPECTATIONS and kwargs.get("column") in kinds:
            typed[kwargs["column"]] = list(kwargs.get("type_list") or [kwargs.get("type_")])
    untyped = [c for c in kinds if c not in typed]
    if untyped:
        problems.append(
            f"{where}: no type expectation for {untyped}. Add an expect_column_values_to_be_in_type_list (or "
            "_of_type) for each, as `mlloop use-cases init` writes them."
        )
    for column, names in typed.items():
        pattern = KIND_TYPES.get(kinds[column])
        if pattern is not None and not any(pattern.match(str(name)) for name in names):
            problems.append(
                f"{where}: column {column!r} is declared {kinds[column]} but its type expectation accepts "
                f"{names}; every delivery would fail. Make the declared kind and the suite's types agree."
            )
    return problems


def check_sample(use_case: UseCase, sample: Path) -> list[SuiteRun]:
    """Run the raw suite on each UTC day of ``sample`` and the features suite on its built features.

    The sample is read as a delivery of its own format with the declared schema; a target column in
    it is dropped (labels are delivered apart).
    """
    reader = use_case.model_copy(
        update={"source": use_case.source.model_copy(update={"format": sample_format(sample)})}
    )
    raw_name = use_case.suites["raw"]
    try:
        frame = read_delivery(sample.read_bytes(), reader)
    except Exception as exc:  # any reader error is the sample's: report it as the ingest task would
        return [
            SuiteRun(raw_name, ALL_ROWS, None, f"the sample is not readable: {type(exc).__name__}: {exc}")
        ]
    target = use_case.target_column
    if target in frame.columns and target not in use_case.schema_:
        frame = frame.drop(columns=[target])
    runs = [SuiteRun(raw_name, day, validate_frame(part, raw_name)) for day, part in _days(frame, use_case)]
    features_name = use_case.suites.get("features")
    if features_name is not None:
        try:
            built = build_features(
                frame, use_case.features, key_column=use_case.key_column, time_column=use_case.time_column
            )
        except ValueError as exc:
            runs.append(SuiteRun(features_name, ALL_ROWS, None, f"features could not be built: {exc}"))
        else:
            runs.append(SuiteRun(features_name, ALL_ROWS, validate_frame(built, features_name)))
    return runs


def _days(frame: pd.DataFrame, use_case: UseCase) -> list[tuple[str, pd.DataFrame]]:
    """Return the sample's UTC days (one delivery each); all rows as one part when time is not a timestamp."""
    times = frame.get(use_case.time_column)
    if times is None or not pd.api.types.is_datetime64_any_dtype(times.dtype) or times.isna().any():
        return [(ALL_ROWS, frame)]
    utc = times.dt.tz_convert("UTC") if times.dt.tz is not None else times
    days = utc.dt.strftime("%Y-%m-%d")
    return [(str(day), part.reset_index(drop=True)) for day, part in frame.groupby(days, sort=True)]


def sample_lines(runs: list[SuiteRun]) -> list[str]:
    """Return the outcome per suite: PASSED with its parts, or FAILED with each failing expectation."""
    lines = []
    for suite in dict.fromkeys(run.suite for run in runs):
        mine = [run for run in runs if run.suite == suite]
        parts = f"{len(mine)} part(s): {', '.join(run.part for run in mine)}"
        if all(run.success for run in mine):
            checks = sum(run.report.evaluated for run in mine if run.report is not None)
            lines.append(f"PASSED   suite {suite} on {parts} ({checks} expectation checks)")
            continue
        lines.append(f"FAILED   suite {suite} on {parts}")
        for run in mine:
            if run.error is not None:
                lines.append(f"  [{run.part}] {run.error}")
            elif run.report is not None:
                lines += [f"  [{run.part}] {f.expectation}: {f.details}" for f in run.report.failures]
    return lines


def plan_lines(use_case: UseCase) -> list[str]:
    """Return what the use case will create: DAGs, Assets, registered model, source and policy."""
    names = dag_names(use_case.name)
    source = use_case.source
    if source.kind == "files":
        feed = (
            f"files: {source.format} deliveries under "
            f"{source.uri}/{use_case.dataset}/date=YYYY-MM-DD/ (waited for {source.wait_hours:g} h), "
            + (
                f"labels inside them ({use_case.target_column})"
                if use_case.labels.mode == "in_delivery"
                else f"labels under {use_case.labels.uri or f'{source.uri}/labels/{use_case.dataset}'}"
                "/date=<day delivered>/"
            )
        )
    else:
        feed = f"generator: {source.rows_per_day} rows a day (seed {source.seed})"
    spec = use_case.features
    columns = feature_columns(spec)
    gate = load_gate_config(use_case=use_case)
    monitor = load_monitor_config(use_case=use_case)
    declared_monitor = ", ".join(use_case.monitor) or "nothing"
    training = use_case.training
    lines = [
        f"DAGs:     {names.ingest} (daily, 00:00 UTC), {names.train} (on {names.validated_asset} or "
        f"{names.retrain_asset}, or by hand), {names.monitor} ({get_settings().monitor_schedule}), "
        f"{names.rollback} (by hand)",
        f"Assets:   {names.validated_asset}, {names.champion_asset}, {names.retrain_asset}",
        f"Model:    {use_case.model_name} (MLflow registry, aliases {CHAMPION} and {PREVIOUS}); "
        f"scoring POST /predict/{use_case.name}",
        f"Source:   {feed}",
        f"Features: version {spec.version}, {len(columns)} columns: {', '.join(columns)}",
        f"Training: window_days={training.window_days} min_rows={training.min_rows} "
        f"min_positives={training.min_positives} label_maturity_days={use_case.label_maturity_days}",
        _settings_line(
            "Gate", gate.source.describe() if gate.source else "", gate.model_dump(exclude={"source"})
        ),
        _settings_line(
            "Monitor",
            f"{MONITOR_DEFAULTS_PATH.name} version {monitor.version}; use case {use_case.name}'s monitor: "
            f"section sets {declared_monitor}",
            monitor.model_dump(),
        ),
    ]
    return lines


def _settings_line(title: str, source: str, values: dict[str, Any]) -> str:
    """Return an effective policy as wrapped ``key=value`` text under its title and where it came from."""
    text = " ".join(f"{key}={value}" for key, value in values.items() if key != "version")
    body = textwrap.fill(text, width=106, initial_indent="    ", subsequent_indent="    ")
    return f"{title + ':':<10}{source}\n{body}"
