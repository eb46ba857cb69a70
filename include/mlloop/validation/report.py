"""Turn a GX suite validation result into a readable, machine-readable validation report."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

SAMPLE_SIZE = 5
# A cell value copied into a report is cut to this many characters (a 1 MB string stays out of reports).
VALUE_CHARS = 200
_TABLE = "table"
# Result keys whose values are cell values of the validated column (redacted for PII columns).
_VALUE_KEYS = ("partial_unexpected_list", "unexpected_list")
_COUNT_KEYS = ("partial_unexpected_counts",)
_TYPE_EXPECTATIONS = ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type")


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation: what was expected, on which column, how many rows broke it, examples."""

    expectation: str
    column: str | None
    kwargs: dict[str, Any]
    unexpected_count: int | None
    unexpected_percent: float | None
    sample_values: list[Any]
    details: str
    # The contract default this expectation is (mlloop.validation.contract), None for a hand-written one.
    contract_default: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the failure as a JSON-serialisable dict."""
        return asdict(self)


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one frame against one suite, with GX's full result kept as JSON."""

    suite: str
    success: bool
    evaluated: int
    failures: list[ExpectationFailure]
    row_count: int
    result: dict[str, Any]
    # Expectations under a report policy that passed with unexpected values (listed, not failed).
    reported: list[ExpectationFailure] = field(default_factory=list)

    @property
    def passed(self) -> int:
        """Return how many expectations passed."""
        return self.evaluated - len(self.failures)

    def summary(self) -> str:
        """Return a multi-line human summary: the counts, then one line per failed expectation."""
        verdict = "passed" if self.success else "FAILED"
        lines = [
            f"suite {self.suite}: {self.evaluated} expectations, {self.passed} passed, "
            f"{len(self.failures)} failed on {self.row_count} rows ({verdict})"
        ]
        lines += [f"  - {failure.expectation}: {failure.details}" for failure in self.failures]
        lines += [f"  ~ reported, passes: {item.expectation}: {item.details}" for item in self.reported]
        return "\n".join(lines)

    def to_reason(self) -> dict[str, Any]:
        """Return the machine-readable quarantine reason: suite, verdict, counts and the failures."""
        return {
            "suite": self.suite,
            "success": self.success,
            "row_count": self.row_count,
            "evaluated": self.evaluated,
            "passed": self.passed,
            "failed": len(self.failures),
            "failures": [failure.to_dict() for failure in self.failures],
            "reported": [item.to_dict() for item in self.reported],
        }

    def with_check(
        self, name: str, outcome: dict[str, Any], failure: ExpectationFailure | None
    ) -> ValidationReport:
        """Return this report with one more check run outside GX (counted, recorded in the result's meta)."""
        failures = [*self.failures, *([failure] if failure is not None else [])]
        success = self.success and failure is None
        evaluated = self.evaluated + 1
        statistics = dict(self.result.get("statistics") or {})
        statistics.update(
            evaluated_expectations=evaluated,
            successful_expectations=evaluated - len(failures),
            unsuccessful_expectations=len(failures),
            success_percent=100.0 * (evaluated - len(failures)) / evaluated,
        )
        meta = dict(self.result.get("meta") or {})
        ours = dict(meta.get("mlloop") or {})
        ours["checks"] = {**ours.get("checks", {}), name: outcome | {"success": failure is None}}
        meta["mlloop"] = ours
        result = self.result | {"success": success, "statistics": statistics, "meta": meta}
        return replace(self, success=success, evaluated=evaluated, failures=failures, result=result)


def build_report(
    result: dict[str, Any], *, suite: str, row_count: int, columns: list[str]
) -> ValidationReport:
    """Build a ``ValidationReport`` from a GX ``ExpectationSuiteValidationResult`` JSON dict.

    Args:
        result: ``ExpectationSuiteValidationResult.to_json_dict()`` of the run.
        suite: the suite name.
        row_count: rows in the validated frame.
        columns: the frame's columns (to tell a missing column from any other GX exception).
    """
    failures = [
        describe_failure(item, row_count=row_count, columns=columns)
        for item in result["results"]
        if not item["success"]
    ]
    reported = [
        describe_failure(item, row_count=row_count, columns=columns)
        for item in result["results"]
        if item["success"]
        and (item["expectation_config"].get("meta") or {}).get("policy") == "report"
        and (item.get("result") or {}).get("unexpected_count")
    ]
    return ValidationReport(
        suite=suite,
        success=bool(result["success"]),
        evaluated=len(result["results"]),
        failures=failures,
        row_count=row_count,
        result=result,
        reported=reported,
    )


def describe_failure(item: dict[str, Any], *, row_count: int, columns: list[str]) -> ExpectationFailure:
    """Turn one failed GX ``ExpectationValidationResult`` JSON dict into an ``ExpectationFailure``."""
    config = item["expectation_config"]
    expectation = config["type"]
    kwargs = {key: value for key, value in config["kwargs"].items() if key != "batch_id"}
    column = kwargs.get("column")
    outcome = item.get("result") or {}
    error = _exception_message(item.get("exception_info") or {})
    unexpected_count = outcome.get("unexpected_count")
    unexpected_percent = outcome.get("unexpected_percent")
    samples = [_jsonable(value) for value in (outcome.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]]
    if error is not None:
        details = _describe_error(column, error, columns)
    else:
        details = _describe_outcome(expectation, column, kwargs, outcome, row_count)
    default = (config.get("meta") or {}).get("contract_default")
    if default is not None:
        details += f" [contract default {default}]"
    return ExpectationFailure(
        expectation=expectation,
        column=column,
        kwargs=_jsonable(kwargs),
        unexpected_count=None if unexpected_count is None else int(unexpected_count),
        unexpected_percent=None if unexpected_percent is None else round(float(unexpected_percent), 4),
        sample_values=samples,
        details=details,
        contract_default=default,
    )


def redact_result(result: dict[str, Any], pii_columns: set[str]) -> None:
    """Mask, in place, the cell values GX copied into the results of expectations on PII columns."""
    for item in result.get("results", []):
        if item["expectation_config"]["kwargs"].get("column") not in pii_columns:
            continue
        outcome = item.get("result") or {}
        for key in _VALUE_KEYS:
            if key in outcome and outcome[key] is not None:
                outcome[key] = [mask_value(value) for value in outcome[key]]
        for key in _COUNT_KEYS:
            for entry in outcome.get(key) or []:
                entry["value"] = mask_value(entry.get("value"))
        outcome.pop("partial_unexpected_index_list", None)
        outcome.pop("unexpected_index_list", None)


def shorten_values(result: dict[str, Any]) -> None:
    """Cut, in place, the text cell values GX copied into the results to ``VALUE_CHARS`` characters."""
    for item in result.get("results", []):
        outcome = item.get("result") or {}
        for key in _VALUE_KEYS:
            if outcome.get(key) is not None:
                outcome[key] = [shorten_value(value) for value in outcome[key]]
        for key in _COUNT_KEYS:
            for entry in outcome.get(key) or []:
                entry["value"] = shorten_value(entry.get("value"))


def shorten_value(value: Any) -> Any:
    """Return a text value cut to ``VALUE_CHARS`` characters with its full length named; others unchanged."""
    if isinstance(value, str) and len(value) > VALUE_CHARS:
        return f"{value[:VALUE_CHARS]}... ({len(value):,} characters)"
    return value


def mask_value(value: Any) -> Any:
    """Mask a PII value, keeping only its last four characters (None and NaN stay as they are)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return value
    text = str(value)
    return "*" * max(len(text) - 4, 0) + text[-4:] if len(text) > 4 else "*" * len(text)


def _describe_error(column: str | None, error: str, columns: list[str]) -> str:
    """Return the details line for an expectation GX could not evaluate."""
    if column is not None and column not in columns:
        return f"{column}: column is missing"
    first_line = error.strip().splitlines()[-1] if error.strip() else "no message"
    return f"{column or _TABLE}: the check could not run on this data: {first_line[:300]}"


def _describe_outcome(
    expectation: str, column: str | None, kwargs: dict[str, Any], outcome: dict[str, Any], row_count: int
) -> str:
    """Return the details line for an expectation that ran and failed."""
    observed = outcome.get("observed_value")
    if expectation == "expect_table_columns_to_match_ordered_list":
        return _describe_columns(list(kwargs.get("column_list") or []), list(observed or []))
    if expectation == "expect_table_row_count_to_be_between":
        return f"{_TABLE}: {observed} rows, expected {_bounds(kwargs)}"
    if "unexpected_count" not in outcome:  # decided on the column as a whole (e.g. its dtype)
        if expectation in _TYPE_EXPECTATIONS:
            return f"{column}: column type is {observed!r}, expected {_types(kwargs)}"
        return f"{column or _TABLE}: observed {_short(observed)}, failed {expectation}"
    what = _violation(expectation, kwargs)
    count = int(outcome["unexpected_count"])
    share = float(outcome.get("unexpected_percent") or 0.0)
    if expectation == "expect_column_values_to_not_be_null":
        total, unit = int(outcome.get("element_count", row_count)), "rows"
    else:
        total = int(outcome.get("element_count", row_count)) - int(outcome.get("missing_count") or 0)
        unit = "non-null values"
    line = f"{column}: {count} of {total} {unit} ({share:.2f}%) {what}"
    samples = [value for value in outcome.get("partial_unexpected_list") or [] if value is not None]
    if samples:
        line += f", e.g. {_short(samples[:3])}"
    return line


def _describe_columns(expected: list[str], observed: list[str]) -> str:
    """Return which columns are missing, unexpected or out of order."""
    missing = [name for name in expected if name not in observed]
    extra = [name for name in observed if name not in expected]
    parts = []
    if missing:
        parts.append(f"missing {missing}")
    if extra:
        parts.append(f"unexpected {extra}")
    if not parts:
        parts.append(f"out of order: expected {expected}, found {observed}")
    return "columns: " + "; ".join(parts)


def _violation(expectation: str, kwargs: dict[str, Any]) -> str:
    """Return what the offending values did wrong, phrased for the details line."""
    if expectation == "expect_column_values_to_not_be_null":
        return "are null"
    if expectation in _TYPE_EXPECTATIONS:
        return f"are not of type {_types(kwargs)}"
    if expectation == "expect_column_values_to_be_between":
        return f"are outside {_bounds(kwargs)}"
    if expectation == "expect_column_values_to_be_in_set":
        return f"are not in the allowed set {_short(kwargs.get('value_set'))}"
    if expectation == "expect_column_values_to_be_unique":
        return "are duplicated"
    if expectation == "expect_column_values_to_match_regex":
        return f"do not match {kwargs.get('regex')}"
    return f"break {expectation}"


def _types(kwargs: dict[str, Any]) -> str:
    """Return the accepted types of a type expectation, e.g. 'float64 | float32'."""
    return " | ".join(kwargs.get("type_list") or [str(kwargs.get("type_"))])


def _bounds(kwargs: dict[str, Any]) -> str:
    """Return the range of a between-style expectation, e.g. '> 0 and <= 1000000'."""
    parts = []
    if kwargs.get("min_value") is not None:
        parts.append(f"{'>' if kwargs.get('strict_min') else '>='} {_number(kwargs['min_value'])}")
    if kwargs.get("max_value") is not None:
        parts.append(f"{'<' if kwargs.get('strict_max') else '<='} {_number(kwargs['max_value'])}")
    return " and ".join(parts) if parts else "any value"


def _number(value: Any) -> Any:
    """Return a whole float as an int (GX stores bounds as floats: 18.0 reads better as 18)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _exception_message(info: dict[str, Any]) -> str | None:
    """Return GX's exception message when the expectation raised, else None (GX has two shapes)."""
    if "raised_exception" in info:
        return (info.get("exception_message") or "unknown error") if info["raised_exception"] else None
    for nested in info.values():
        if isinstance(nested, dict) and nested.get("raised_exception"):
            return nested.get("exception_message") or "unknown error"
    return None


def _short(value: Any, limit: int = 120) -> str:
    """Return a repr of ``value`` cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: Any) -> Any:
    """Return ``value`` if it is JSON-serialisable, else its ``str()`` (recursively for lists and dicts)."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return str(value)
    return value
