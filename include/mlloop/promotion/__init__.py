"""Champion/challenger promotion gate: pure functions on a holdout and two models' scores.

No MLflow and no Airflow here: the caller scores the models, measures their budgets, and acts on
the returned ``GateDecision`` (its JSON and Markdown are the evidence to log).
"""

from mlloop.promotion.gate import (
    GATE_DEFAULTS_PATH,
    GateConfig,
    ScoredModel,
    evaluate_gate,
    load_gate_config,
)
from mlloop.promotion.metrics import (
    BootstrapInterval,
    ModelMetrics,
    expected_cost,
    log_loss,
    paired_bootstrap,
    pr_auc,
    recall_at_precision,
    roc_auc,
    threshold_at_precision,
)
from mlloop.promotion.report import GateDecision, RuleResult, SliceResult

__all__ = [
    "GATE_DEFAULTS_PATH",
    "BootstrapInterval",
    "GateConfig",
    "GateDecision",
    "ModelMetrics",
    "RuleResult",
    "ScoredModel",
    "SliceResult",
    "evaluate_gate",
    "expected_cost",
    "load_gate_config",
    "log_loss",
    "paired_bootstrap",
    "pr_auc",
    "recall_at_precision",
    "roc_auc",
    "threshold_at_precision",
]
