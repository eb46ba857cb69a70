"""Champion/challenger promotion gate: pure functions on a holdout and two models' scores.

No MLflow and no Airflow here: the caller scores the models, measures their budgets, and acts on
the returned ``GateDecision`` (its JSON and Markdown are the evidence to log).

The package imports its numpy-backed modules on first use, so that ``gate_config`` (the policy,
which use-case declarations check at DAG parse) stays light to import.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from mlloop.promotion.gate_config import (
    GATE_DEFAULTS_PATH,
    GateConfig,
    GateConfigSource,
    check_gate_section,
    load_gate_config,
    slice_column_choices,
)

if TYPE_CHECKING:
    from mlloop.promotion.gate import ScoredModel, evaluate_gate
    from mlloop.promotion.metrics import (
        BootstrapInterval,
        MetricInterval,
        ModelMetrics,
        expected_cost,
        log_loss,
        no_skill_pr_auc,
        no_skill_recall_at_precision,
        paired_bootstrap,
        pr_auc,
        recall_at_precision,
        roc_auc,
        skill_intervals,
        threshold_at_precision,
    )
    from mlloop.promotion.report import GateDecision, RuleResult, SliceResult

_LAZY = {
    "ScoredModel": "gate",
    "evaluate_gate": "gate",
    "BootstrapInterval": "metrics",
    "MetricInterval": "metrics",
    "ModelMetrics": "metrics",
    "expected_cost": "metrics",
    "log_loss": "metrics",
    "no_skill_pr_auc": "metrics",
    "no_skill_recall_at_precision": "metrics",
    "paired_bootstrap": "metrics",
    "pr_auc": "metrics",
    "recall_at_precision": "metrics",
    "roc_auc": "metrics",
    "skill_intervals": "metrics",
    "threshold_at_precision": "metrics",
    "GateDecision": "report",
    "RuleResult": "report",
    "SliceResult": "report",
}

__all__ = [
    "GATE_DEFAULTS_PATH",
    "BootstrapInterval",
    "GateConfig",
    "GateConfigSource",
    "GateDecision",
    "MetricInterval",
    "ModelMetrics",
    "RuleResult",
    "ScoredModel",
    "SliceResult",
    "check_gate_section",
    "evaluate_gate",
    "expected_cost",
    "load_gate_config",
    "log_loss",
    "no_skill_pr_auc",
    "no_skill_recall_at_precision",
    "paired_bootstrap",
    "pr_auc",
    "recall_at_precision",
    "roc_auc",
    "skill_intervals",
    "slice_column_choices",
    "threshold_at_precision",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
