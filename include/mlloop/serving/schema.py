"""The request contract of the scoring service, derived from the use case's schema and raw GX suite.

One source of truth: the columns and kinds come from the use-case declaration, and the rules a batch
must pass before training (not null, ranges, value sets, patterns) come from its raw expectation suite
and the declaration's contract defaults that judge a row alone (string lengths, value sets with policy
``reject``; ``validation.contract.row_expectations``), so a request the service accepts is a row that
validation would accept, minus the target column. A value outside a ``report`` value set is accepted, as
in a delivery (the features map it to the unknown category). Unknown fields, NaN/inf, wrong types and
values outside the rules are refused with a 422 naming them; so is a batch that names one key twice
(the contract's key_unique: the inference log would keep only one of its answers).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from mlloop.usecase import UseCase

_KINDS: dict[str, Any] = {
    "string": str,
    "float": float,
    "integer": int,
    "boolean": bool,
    "datetime": AwareDatetime,
}


def _rules(suite: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Collect per-column constraints from a GX suite document: required, bounds, allowed set, pattern."""
    rules: dict[str, dict[str, Any]] = {}
    for expectation in suite.get("expectations", []):
        kind, kwargs = expectation.get("type"), expectation.get("kwargs", {})
        column = kwargs.get("column")
        if column is None or (kwargs.get("mostly") not in (None, 1, 1.0)):
            continue  # a rule that tolerates exceptions cannot reject a single row
        rule = rules.setdefault(column, {})
        if kind == "expect_column_values_to_not_be_null":
            rule["required"] = True
        elif kind == "expect_column_values_to_be_between":
            if kwargs.get("min_value") is not None:
                rule["gt" if kwargs.get("strict_min") else "ge"] = kwargs["min_value"]
            if kwargs.get("max_value") is not None:
                rule["lt" if kwargs.get("strict_max") else "le"] = kwargs["max_value"]
        elif kind == "expect_column_values_to_be_in_set":
            rule["values"] = tuple(kwargs["value_set"])
        elif kind == "expect_column_values_to_match_regex":
            rule["pattern"] = kwargs["regex"]
        elif kind == "expect_column_value_lengths_to_be_between":
            if kwargs.get("min_value") is not None:
                rule["min_length"] = kwargs["min_value"]
            if kwargs.get("max_value") is not None:
                rule["max_length"] = kwargs["max_value"]
    return rules


def _field(kind: str, rule: dict[str, Any]) -> tuple[Any, Any]:
    """Return the (annotation, default) of one column for ``create_model``."""
    base = _KINDS[kind]
    if "values" in rule and kind == "string":
        annotation: Any = Literal[rule["values"]]
    elif kind == "string":
        pattern = rule.get("pattern")
        if pattern is not None:
            re.compile(pattern)
        annotation = Annotated[
            str,
            StringConstraints(
                min_length=max(1, rule.get("min_length", 1)),
                max_length=rule.get("max_length"),
                pattern=pattern,
            ),
        ]
    elif kind == "boolean":
        annotation = Annotated[bool, Field(strict=True)]  # JSON true/false only, not "yes" or 1
    elif kind in ("float", "integer"):
        bounds = {k: rule[k] for k in ("gt", "ge", "lt", "le") if k in rule}
        extra = {"allow_inf_nan": False, "strict": True} if kind == "float" else {"strict": True}
        annotation = Annotated[base, Field(**bounds, **extra)]
    else:
        annotation = base
    if rule.get("required"):
        return annotation, ...
    return annotation | None, None


def request_model(use_case: UseCase) -> type[BaseModel]:
    """Build the pydantic model of one scoring request row for ``use_case`` (the target is not sent)."""
    from mlloop.validation.contract import row_expectations
    from mlloop.validation.suite import read_suite_json

    suite = read_suite_json(use_case.suites["raw"])
    rules = _rules({"expectations": [*suite.get("expectations", []), *row_expectations(use_case, suite)]})
    fields = {
        column: _field(kind, rules.get(column, {}))
        for column, kind in use_case.schema_.items()
        if column != use_case.target_column
    }
    config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)
    name = "".join(part.title() for part in use_case.dataset.split("_")) + "Request"
    return create_model(name, __config__=config, **fields)


class RequestAdapters:
    """Validators of a request body: one row (a JSON object) or a batch (a JSON array of rows)."""

    def __init__(self, use_case: UseCase, max_rows: int) -> None:
        """Compile the row model and the batch adapter (at most ``max_rows`` rows)."""
        self.key = use_case.key_column
        self.row = request_model(use_case)
        self.one = TypeAdapter(self.row)
        self.many = TypeAdapter(Annotated[list[self.row], Field(min_length=1, max_length=max_rows)])  # type: ignore[name-defined]
        self.max_rows = max_rows

    def parse(self, body: bytes) -> tuple[list[BaseModel], bool]:
        """Validate a JSON body; return its rows and whether it was a batch. Raises pydantic's error."""
        batch = body.lstrip()[:1] == b"["
        if batch:
            rows = self.many.validate_json(body)
            self._check_keys_unique(rows)
            return rows, True
        return [self.one.validate_json(body)], False

    def _check_keys_unique(self, rows: list[BaseModel]) -> None:
        """Refuse a batch that names one key twice, as a delivery's contract does (key_unique)."""
        first: dict[Any, int] = {}
        errors = []
        for index, row in enumerate(rows):
            key = getattr(row, self.key)
            if key in first:
                errors.append(
                    {
                        "type": PydanticCustomError(
                            "key_unique",
                            "{key} repeats the key of row {first}: send each key once per request",
                            {"key": self.key, "first": first[key]},
                        ),
                        "loc": (index, self.key),
                        "input": key,
                    }
                )
            first.setdefault(key, index)
        if errors:
            raise ValidationError.from_exception_data("batch", errors)


def utc(value: dt.datetime) -> dt.datetime:
    """Return an aware datetime in UTC."""
    return value.astimezone(dt.UTC)
