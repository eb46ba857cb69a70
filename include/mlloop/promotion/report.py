"""The gate's evidence: one result per rule, per-slice numbers, and the decision as JSON and Markdown."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from mlloop.promotion.gate_config import GateConfigSource
from mlloop.promotion.metrics import ModelMetrics

SliceStatus = Literal["ok", "regressed", "too_small", "undefined"]


@dataclass(frozen=True)
class RuleResult:
    """One gate rule: whether it passed, what was observed and the threshold it was held to."""

    name: str
    passed: bool
    observed: float | None
    threshold: float | None
    detail: str
    comparison: str = ">="  # how observed must compare to threshold to pass
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the rule as a JSON-serialisable dict (NaN as None)."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class SliceResult:
    """Both models' metric on one slice (a value of a slice column), or why the slice was skipped."""

    column: str
    value: str
    rows: int
    positives: int
    challenger: float | None
    champion: float | None
    delta: float | None
    status: SliceStatus
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the slice as a JSON-serialisable dict (NaN as None)."""
        return _jsonable(asdict(self))


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on a challenger, with every rule's evidence."""

    promote: bool
    rules: list[RuleResult]
    challenger: str
    champion: str | None
    config_version: str
    metric: str
    holdout_rows: int
    holdout_positives: int
    metrics: dict[str, ModelMetrics]  # by role: "challenger" and, when there is one, "champion"
    slices: list[SliceResult] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def failed_rules(self) -> list[str]:
        """Return the names of the rules that failed, in rule order."""
        return [rule.name for rule in self.rules if not rule.passed]

    def config_source(self) -> str:
        """Return which layers (defaults, use case declaration, run) set the config, in one line."""
        source = self.config.get("source")
        if not source:
            return "as passed by the caller (not from load_gate_config)"
        return GateConfigSource.model_validate(source).describe()

    def summary(self) -> str:
        """Return a one-line verdict for task logs and error messages."""
        against = f"champion {self.champion}" if self.champion else "no champion"
        if self.promote:
            return f"PROMOTE {self.challenger} (vs {against}): all {len(self.rules)} rules passed"
        return f"REJECT {self.challenger} (vs {against}): failed {', '.join(self.failed_rules)}"

    def to_json(self) -> dict[str, Any]:
        """Return the decision as a JSON-serialisable dict (NaN as None)."""
        return _jsonable(
            {
                "promote": self.promote,
                "failed_rules": self.failed_rules,
                "challenger": self.challenger,
                "champion": self.champion,
                "config_version": self.config_version,
                "metric": self.metric,
                "holdout_rows": self.holdout_rows,
                "holdout_positives": self.holdout_positives,
                "rules": [rule.to_json() for rule in self.rules],
                "metrics": {role: values.to_dict() for role, values in self.metrics.items()},
                "slices": [item.to_json() for item in self.slices],
                "config": self.config,
            }
        )

    def to_markdown(self) -> str:
        """Return a readable report: the verdict, the rules table, the models' metrics, then the slices."""
        verdict = "PROMOTE" if self.promote else "REJECT"
        against = (
            f"champion `{self.champion}`" if self.champion else "no champion (floors and budgets decide)"
        )
        lines = [
            f"# Gate decision: {verdict} `{self.challenger}`",
            "",
            f"Challenger `{self.challenger}` vs {against}, on {self.holdout_rows:,} holdout rows"
            f"{f' ({self.holdout_positives:,} positive)' if self.holdout_positives else ''}; gate config "
            f"version {self.config_version}.",
            "",
            f"Effective config: {self.config_source()}.",
            "",
            f"Failed rules: {', '.join(f'`{name}`' for name in self.failed_rules)}."
            if self.failed_rules
            else f"All {len(self.rules)} rules passed.",
            "",
            "| rule | result | observed | threshold | detail |",
            "|---|---|---|---|---|",
        ]
        for rule in self.rules:
            lines.append(
                f"| {rule.name} | {'pass' if rule.passed else '**FAIL**'} | {_number(rule.observed)} | "
                f"{rule.comparison} {_number(rule.threshold)} | {_cell(rule.detail)} |"
            )
        lines += ["", "## Metrics", "", _metrics_table(self.metrics)]
        if self.slices:
            lines += ["", f"## Slices ({self.metric}, challenger - champion)", "", _slices_table(self.slices)]
        return "\n".join(lines) + "\n"


def _metrics_table(metrics: dict[str, ModelMetrics]) -> str:
    """Return a Markdown table with one column per model role."""
    roles = list(metrics)
    rows = [f"| metric | {' | '.join(roles)} |", "|---|" + "---|" * len(roles)]
    values = {role: metrics[role].to_dict() for role in roles}
    for name in values[roles[0]]:
        rows.append(f"| {name} | {' | '.join(_number(values[role][name]) for role in roles)} |")
    return "\n".join(rows)


def _slices_table(slices: list[SliceResult]) -> str:
    """Return a Markdown table of the slices, regressions first, then by delta, then the skipped ones."""
    order = {"regressed": 0, "ok": 1, "undefined": 2, "too_small": 3}
    ranked = sorted(slices, key=lambda s: (order[s.status], s.delta if s.delta is not None else 0.0))
    rows = [
        "| slice | rows | positives | challenger | champion | delta | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in ranked:
        status = "**regressed**" if item.status == "regressed" else item.status.replace("_", " ")
        if item.note:
            status += f": {item.note}"
        numbers = " | ".join(_number(value) for value in (item.challenger, item.champion, item.delta))
        rows.append(
            f"| {_cell(item.column)}={_cell(item.value)} | {item.rows:,} | {item.positives:,} | "
            f"{numbers} | {_cell(status)} |"
        )
    return "\n".join(rows)


def _number(value: float | None) -> str:
    """Return ``value`` with four significant digits, or a dash when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def _cell(text: str) -> str:
    """Return ``text`` safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _jsonable(value: Any) -> Any:
    """Return ``value`` with NaN and infinities as None and numpy scalars as Python ones, recursively."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
