"""Contract defaults every use case gets: built from its declaration, run with its raw suite per delivery.

A delivery of day D is validated against the raw suite plus these GX expectations (``contract:`` in
the declaration sets their parameters; the report, its JSON and the quarantine reason name each one
under ``contract_default``):

- ``event_time_in_day``: the time column lies in [D 00:00, D+1 00:00) of ``contract.timezone``.
- ``key_unique``: the key column is unique within the delivery.
- ``max_string_length``: every string column's values have at most ``default_max_string_length``
  characters (``max_string_length`` per column).
- ``value_set``: the categorical features' vocabularies (and ``value_sets``), policy ``reject`` (a new
  value fails the batch) or ``report`` (the expectation runs with ``mostly: 0``: the batch passes and the
  new values with their row counts are listed in the report and logged as a warning).

and one check that needs storage, reported in the same failure format:

- ``key_not_published_for_another_day``: no delivered key is in a ``validated/`` partition of another
  day within ``key_lookback_days`` either side of D (only the key column is read).

A hand-written expectation of the same type on the same column wins: the default is not added (no
duplicate), and the report's meta lists it as covered by the suite. A key column declared as PII is
compared after tokenisation (with the PII key), as ``validated/`` holds it.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mlloop.storage import Storage, partition_key
from mlloop.validation.report import ExpectationFailure, ValidationReport, mask_value, shorten_value
from mlloop.validation.runner import validate_frame
from mlloop.validation.suite import read_suite_json

if TYPE_CHECKING:
    import pandas as pd

    from mlloop.usecase import UseCase

log = logging.getLogger(__name__)

EVENT_TIME_IN_DAY = "event_time_in_day"
KEY_UNIQUE = "key_unique"
MAX_STRING_LENGTH = "max_string_length"
VALUE_SET = "value_set"
KEY_NOT_PUBLISHED = "key_not_published_for_another_day"
EXAMPLES = 5  # example keys (with their day) and new values named in a details line
NEW_VALUES_LISTED = 20  # new values (with their row counts) listed per column in the report


@dataclass(frozen=True)
class ContractDefaults:
    """The contract defaults of one delivery: the GX expectations added, and those the suite covers."""

    expectations: list[dict[str, Any]]
    covered_by_suite: list[str]

    def names(self) -> list[str]:
        """Return ``default(column)`` for each added expectation."""
        return [f"{e['meta']['contract_default']}({e['kwargs']['column']})" for e in self.expectations]


def day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    """Return the UTC instants where day ``day`` of time zone ``zone`` starts and the next one starts."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, clock_time(), tz)
    end = datetime.combine(day + timedelta(days=1), clock_time(), tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def contract_expectations(use_case: UseCase, day: date, suite_document: dict[str, Any]) -> ContractDefaults:
    """Return the contract defaults of ``use_case``'s delivery of ``day`` as GX expectation dicts.

    A default is left out when ``suite_document`` already has an expectation of its type on its column.
    """
    contract = use_case.contract
    start, end = day_bounds(day, contract.timezone)
    wanted = [
        _expectation(
            EVENT_TIME_IN_DAY,
            "expect_column_values_to_be_between",
            {
                "column": use_case.time_column,
                "min_value": start.isoformat(),
                "max_value": end.isoformat(),
                "strict_max": True,
            },
            f"the delivered day {day} in {contract.timezone}: events of other days are another delivery's",
        ),
        _expectation(
            KEY_UNIQUE,
            "expect_column_values_to_be_unique",
            {"column": use_case.key_column},
            "the key names one row of the delivery",
        ),
        *_row_defaults(use_case),
    ]
    in_suite = _in_suite(suite_document)
    added = [e for e in wanted if (e["type"], e["kwargs"]["column"]) not in in_suite]
    covered = [
        f"{e['meta']['contract_default']}({e['kwargs']['column']}): {e['type']} in the suite"
        for e in wanted
        if (e["type"], e["kwargs"]["column"]) in in_suite
    ]
    return ContractDefaults(expectations=added, covered_by_suite=covered)


def row_expectations(use_case: UseCase, suite_document: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the contract defaults that judge a row on its own (string lengths, value sets) not in the suite.

    The scoring service checks each request row with these beside the raw suite's rules, so a row it
    accepts is one a delivery's validation would accept.
    """
    in_suite = _in_suite(suite_document)
    return [e for e in _row_defaults(use_case) if (e["type"], e["kwargs"]["column"]) not in in_suite]


def _in_suite(suite_document: dict[str, Any]) -> set[tuple[Any, Any]]:
    """Return the (expectation type, column) pairs a suite document already has."""
    return {
        (e.get("type"), (e.get("kwargs") or {}).get("column")) for e in suite_document.get("expectations", [])
    }


def _row_defaults(use_case: UseCase) -> list[dict[str, Any]]:
    """Return the defaults that judge each row alone: string lengths and the declared value sets."""
    contract = use_case.contract
    wanted: list[dict[str, Any]] = []
    for column, kind in use_case.schema_.items():
        if kind == "string":
            longest = contract.max_string_length.get(column, contract.default_max_string_length)
            wanted.append(
                _expectation(
                    MAX_STRING_LENGTH,
                    "expect_column_value_lengths_to_be_between",
                    {"column": column, "max_value": longest},
                    f"at most {longest} characters (contract.max_string_length)",
                )
            )
    for column in dict.fromkeys([*use_case.features.categorical, *contract.value_sets]):
        spec = contract.value_set_of(column, use_case.features.categorical)
        if spec is None or spec.values is None:
            continue
        kwargs: dict[str, Any] = {"column": column, "value_set": list(spec.values)}
        if spec.policy == "report":
            kwargs["mostly"] = 0.0  # evaluated and reported, never failing
        wanted.append(
            _expectation(
                VALUE_SET,
                "expect_column_values_to_be_in_set",
                kwargs,
                f"policy {spec.policy}: a value outside the declared set "
                + ("fails the batch" if spec.policy == "reject" else "is reported, the batch passes"),
                policy=spec.policy,
            )
        )
    return wanted


def _expectation(
    default: str, kind: str, kwargs: dict[str, Any], notes: str, *, policy: str = "reject"
) -> dict[str, Any]:
    """Return one contract default as a GX 1.x expectation dict (as a suite JSON holds it)."""
    meta = {"group": "contract_defaults", "contract_default": default, "policy": policy, "notes": notes}
    return {"type": kind, "kwargs": kwargs, "meta": meta, "severity": "critical"}


def validate_delivery(
    storage: Storage, use_case: UseCase, day: date, frame: pd.DataFrame
) -> ValidationReport:
    """Validate the delivery of ``day`` against the raw suite plus the contract defaults; report both.

    Raises:
        FileNotFoundError / ValueError: as ``validate_frame`` for a missing or invalid suite.
    """
    suite = use_case.suites["raw"]
    defaults = contract_expectations(use_case, day, read_suite_json(suite))
    log.info(
        "Contract defaults for %s of %s: %s added; covered by suite %r: %s",
        use_case.dataset,
        day,
        ", ".join(defaults.names()) or "none",
        suite,
        "; ".join(defaults.covered_by_suite) or "none",
    )
    report = _list_new_values(validate_frame(frame, suite, defaults.expectations), frame, use_case)
    outcome, failure = published_key_check(storage, use_case, day, frame)
    report = report.with_check(KEY_NOT_PUBLISHED, outcome, failure)
    meta = dict(report.result.get("meta") or {})
    meta["mlloop"] = dict(meta.get("mlloop") or {}) | {
        "contract_defaults": {
            "day": day.isoformat(),
            "timezone": use_case.contract.timezone,
            "added": [*defaults.names(), f"{KEY_NOT_PUBLISHED}({use_case.key_column})"],
            "covered_by_suite": defaults.covered_by_suite,
        }
    }
    return replace(report, result=report.result | {"meta": meta})


def published_key_check(
    storage: Storage, use_case: UseCase, day: date, frame: pd.DataFrame
) -> tuple[dict[str, Any], ExpectationFailure | None]:
    """Return (what was checked, the failure or None): delivered keys already published for another day.

    Reads only the key column of ``validated/<dataset>/date=D'/*.parquet`` for the days D' within
    ``contract.key_lookback_days`` either side of ``day`` (not ``day`` itself: a re-delivery of the day
    may repeat its keys).
    """
    import pandas as pd

    column, lookback = use_case.key_column, use_case.contract.key_lookback_days
    outcome: dict[str, Any] = {"column": column, "lookback_days": lookback}
    if column not in frame.columns:
        return outcome | {"skipped": f"the delivery has no column {column!r} (the suite reports it)"}, None
    keys = _stored_keys(frame, use_case)
    delivered, stored_column = set(keys.dropna()), str(keys.name)
    published_on: dict[str, str] = {}
    days_read: list[str] = []
    for other in (day + timedelta(days=offset) for offset in range(-lookback, lookback + 1) if offset):
        folder = partition_key("validated", use_case.dataset, other)
        files = [key for key in storage.list(folder) if key.endswith(".parquet")] if delivered else []
        days_read += [other.isoformat()] if files else []
        for key in files:
            stored = pd.read_parquet(io.BytesIO(storage.read_bytes(key)), columns=[stored_column])
            stored = stored[stored_column].astype(str)
            for value in stored[stored.isin(delivered)].unique():
                published_on.setdefault(value, other.isoformat())
    outcome |= {"days_read": days_read, "keys_published_elsewhere": len(published_on)}
    if not published_on:
        log.info("No delivered %s was published on the %d other validated days read", column, len(days_read))
        return outcome, None
    rows = int(keys.isin(list(published_on)).sum())
    examples = dict(list(published_on.items())[:EXAMPLES])
    shown = {_shown(value, stored_column, use_case): on for value, on in examples.items()}  # tokens: not PII
    days = sorted(set(published_on.values()))
    details = (
        f"{column}: {rows} of {len(keys)} rows have a key already published for another day "
        f"({len(published_on)} keys, published on {', '.join(days)}; read {len(days_read)} validated days "
        f"within {lookback} days of {day}), e.g. {shown} [contract default {KEY_NOT_PUBLISHED}]"
    )
    failure = ExpectationFailure(
        expectation=KEY_NOT_PUBLISHED,
        column=column,
        kwargs={"column": column, "lookback_days": lookback},
        unexpected_count=rows,
        unexpected_percent=round(100.0 * rows / len(keys), 4) if len(keys) else None,
        sample_values=list(shown),
        details=details,
        contract_default=KEY_NOT_PUBLISHED,
    )
    return outcome | {"published_on": shown, "days_published": days, "rows": rows}, failure


def _stored_keys(frame: pd.DataFrame, use_case: UseCase) -> pd.Series:
    """Return the delivered keys as ``validated/`` holds them, named as its column: tokenised when PII."""
    keys = frame[[use_case.key_column]]
    if use_case.key_column in use_case.pii_columns:
        from mlloop.config import get_settings
        from mlloop.ingestion.pii import resolve_pii_key, tokenise_frame

        keys = tokenise_frame(keys, [use_case.key_column], resolve_pii_key(get_settings()))
    stored = keys.iloc[:, 0]
    return stored.astype(str).where(stored.notna())


def _shown(value: Any, column: str, use_case: UseCase) -> Any:
    """Return a cell value as a report may show it: masked for a PII column, cut when long."""
    return mask_value(value) if column in use_case.pii_columns else shorten_value(value)


def _list_new_values(report: ValidationReport, frame: pd.DataFrame, use_case: UseCase) -> ValidationReport:
    """Name every new value (with its rows) of each reported value set in the report, and log a warning."""
    reported, listed = [], {}
    for item in report.reported:
        if item.contract_default == VALUE_SET and item.column in frame.columns:
            values = frame[item.column].dropna()
            counts = values[~values.isin(item.kwargs["value_set"])].astype(str).value_counts()
            new = {
                _shown(v, item.column, use_case): int(n) for v, n in counts.head(NEW_VALUES_LISTED).items()
            }
            more = f" and {len(counts) - len(new)} more" if len(counts) > len(new) else ""
            item = replace(item, details=f"{item.details}; new values (rows): {new}{more}")
            listed[item.column] = {"new_values": new, "distinct_new_values": len(counts)}
            log.warning(
                "%s: %d new value(s) outside the declared set (policy report, the batch passes): %s%s",
                item.column,
                len(counts),
                new,
                more,
            )
        reported.append(item)
    if not listed:
        return report
    meta = dict(report.result.get("meta") or {})
    meta["mlloop"] = dict(meta.get("mlloop") or {}) | {"reported_values": listed}
    return replace(report, reported=reported, result=report.result | {"meta": meta})
