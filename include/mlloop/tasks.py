"""What differs between a use case's task types (``task:`` in its declaration): the one place that says it.

A ``binary`` use case predicts a 0/1 target: its models output a calibrated probability, it is judged by
ranking metrics (PR-AUC, ROC-AUC) against random scores, and the service answers a score and a decision
at the gate's threshold. A ``regression`` use case predicts a number: its models output the value itself
(never calibrated), it is judged by RMSE and MAE against predicting the training mean, and the service
answers the predicted value. Training, the gate, serving and monitoring ask the ``TaskSpec`` of their use
case (``task_spec``) rather than testing the task's name. Light to import (numpy only): the declaration
checks its task when it loads (at DAG parse), so numpy is imported where arrays are handled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

Task = Literal["binary", "regression"]
TASKS: tuple[str, ...] = ("binary", "regression")
BINARY_PERFORMANCE_METRICS = ("roc_auc", "pr_auc_lift", "log_loss")
REGRESSION_PERFORMANCE_METRICS = ("rmse", "mae")


@dataclass(frozen=True)
class TaskSpec:
    """One task type: how its models are fitted, judged, served and monitored."""

    name: str
    xgboost_objective: str  # the XGBoost objective of its models
    xgboost_eval_metric: str  # what XGBoost's early stopping watches on the validation part
    torch_loss: str  # "bce" (logits, class-weighted) or "mse" (a standardised target)
    metrics: tuple[str, ...]  # the holdout's headline metrics, logged to MLflow
    no_skill: str  # what a model without skill is compared with, in words
    calibrated: bool  # scores are probabilities calibrated on the validation part
    counts_positives: bool  # training.min_positives and the monitor's positive counts apply
    answer: str  # what the scoring service answers per row, in words
    performance_metrics: tuple[str, ...]  # metrics the monitor may judge decay on
    default_performance_metric: str | None  # overrides monitor_defaults.yaml's for this task (None: keep)
    label_kind: str  # the target's kind in a label delivery (a schema kind): integer or float
    label_dtype: str  # how landed labels store it
    valid_labels: str  # what a delivered target value must be, in words

    def labels(self, values: Any, where: str = "the target") -> NDArray[Any]:
        """Return a target column as the model's labels: 0/1 int8 (binary) or float64 (regression).

        Raises:
            ValueError: when a value is missing, or (binary) not 0/1, or (regression) not finite.
        """
        import numpy as np

        array = np.asarray(values, dtype=np.float64)
        if array.size and not np.isfinite(array).all():
            raise ValueError(
                f"{where} holds {int((~np.isfinite(array)).sum())} missing or infinite values; keep only "
                "rows whose label is known (the snapshot's label_known column)"
            )
        if not self.counts_positives:
            return array
        if not np.isin(array, (0.0, 1.0)).all():
            found = sorted(set(np.unique(array[~np.isin(array, (0.0, 1.0))]).tolist()))[:5]
            raise ValueError(
                f"{where} must hold 0/1 labels for a binary use case; found {found}. Declare task: "
                "regression for a numeric target"
            )
        return array.astype(np.int8)

    def invalid_labels(self, values: ArrayLike) -> NDArray[np.bool_]:
        """Return which delivered target values (numbers, NaN where not numeric) this task refuses."""
        import numpy as np

        array = np.asarray(values, dtype=np.float64)
        return ~np.isin(array, (0.0, 1.0)) if self.counts_positives else ~np.isfinite(array)

    def counted(self, labels: ArrayLike) -> int:
        """Return what label floors count: labelled positives (binary) or labelled rows (regression)."""
        import numpy as np

        y = np.asarray(labels)
        return int(y.sum()) if self.counts_positives else int(y.size)

    @property
    def counted_word(self) -> str:
        """Return the name of what ``counted`` counts: ``positives`` or ``rows``."""
        return "positives" if self.counts_positives else "rows"

    def judgeable(self, labels: ArrayLike) -> bool:
        """Return whether labels can judge a model: both classes (binary), two values (regression)."""
        import numpy as np

        y = np.asarray(labels)
        if self.counts_positives:
            return 0 < int(y.sum()) < y.size
        return y.size > 1 and bool(np.ptp(y) > 0)

    def served_row(self, score: float, threshold: float | None) -> dict[str, Any]:
        """Return one row's answer: the score and the decision at ``threshold``, or the predicted value."""
        if self.calibrated:
            return {"score": score, "flagged": threshold is not None and score >= threshold}
        return {"prediction": score}


BINARY = TaskSpec(
    name="binary",
    xgboost_objective="binary:logistic",
    xgboost_eval_metric="aucpr",
    torch_loss="bce",
    metrics=("pr_auc", "roc_auc", "recall_at_precision", "log_loss", "expected_cost"),
    no_skill="random scores on the same holdout (ROC-AUC 0.5, PR-AUC of a random ranking)",
    calibrated=True,
    counts_positives=True,
    answer="a calibrated probability (score) and the decision at the gate's threshold (flagged)",
    performance_metrics=BINARY_PERFORMANCE_METRICS,
    default_performance_metric=None,
    label_kind="integer",
    label_dtype="int8",
    valid_labels="0 or 1",
)
REGRESSION = TaskSpec(
    name="regression",
    xgboost_objective="reg:squarederror",
    xgboost_eval_metric="rmse",
    torch_loss="mse",
    metrics=("rmse", "mae", "no_skill_rmse"),
    no_skill="predicting the training mean for every row",
    calibrated=False,
    # training.min_positives has no meaning for a numeric target: only training.min_rows applies.
    counts_positives=False,
    answer="the predicted value (prediction); no threshold, no decision",
    performance_metrics=REGRESSION_PERFORMANCE_METRICS,
    default_performance_metric="rmse",
    label_kind="float",
    label_dtype="float64",
    valid_labels="a finite number",
)
_SPECS = {spec.name: spec for spec in (BINARY, REGRESSION)}


def task_spec(task: str) -> TaskSpec:
    """Return the ``TaskSpec`` of ``task`` (``binary`` or ``regression``).

    Raises:
        ValueError: for another name, naming the valid ones.
    """
    try:
        return _SPECS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; declare task: one of {list(TASKS)}") from None


def check_performance_metric(task: str, metric: str | None) -> None:
    """Raise ValueError when a declared ``monitor.performance_metric`` does not fit ``task``."""
    spec = task_spec(task)
    if metric is not None and metric not in spec.performance_metrics:
        raise ValueError(
            f"monitor.performance_metric {metric!r} does not apply to a {task} use case; use one of "
            f"{list(spec.performance_metrics)}"
        )
