"""Fitting a model on a snapshot, as a library: the training run's config, its data and the fit itself.

``load_training_data`` loads a snapshot, keeps the rows whose label was known when it was taken and
splits them by time (train / validation / holdout: the gate, the monitor's reference band and the
offline replay rebuild the same holdout). ``fit_model`` fits the run's model type on the train part,
early-stopping on the validation part, and (binary use cases) calibrates its scores there. The use case's
task (``mlloop.tasks``) chooses the objective: a regression model is fitted on squared error, never
calibrated, and serves its predicted value. The training CLI
(``training.train``) adds MLflow logging and registration around them; nothing here talks to MLflow.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlloop.features.build import model_matrix
from mlloop.tasks import BINARY, TaskSpec, task_spec

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlloop.storage import Storage
    from mlloop.training.calibration import CalibratedModel, RegressionModel
    from mlloop.training.snapshot import SnapshotManifest, Split
    from mlloop.training.torch_model import TabularModel, TabularParams

log = logging.getLogger("mlloop.training")

MODEL_TYPES = ("xgboost", "torch")
XGBOOST_PARAMS = ("max_rounds", "learning_rate", "max_depth", "min_child_weight", "subsample")
IMPORTANCE_MAX_ROWS = 20_000


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides the snapshot's data."""

    snapshot: str
    model: str = "xgboost"
    seed: int = 42
    dag_run_id: str = "manual"
    backend: str = "local"
    validation_fraction: float = 0.15
    holdout_fraction: float = 0.2
    # XGBoost only; the torch model's hyperparameters are TabularParams' defaults with the run's seed.
    # Shallow, sub-sampled trees with sqrt class weighting: full weighting (negatives/positives ~70) made
    # early stopping on the noisy validation PR-AUC stop after a handful of rounds on some windows.
    max_rounds: int = 600
    learning_rate: float = 0.05
    max_depth: int = 4
    min_child_weight: float = 5.0
    subsample: float = 0.8

    def model_params(self) -> dict[str, Any]:
        """Return the parameters of this run to log: the shared ones and those of its model type."""
        shared = {k: v for k, v in asdict(self).items() if k != "snapshot" and k not in XGBOOST_PARAMS}
        if self.model == "xgboost":
            return shared | {k: getattr(self, k) for k in XGBOOST_PARAMS}
        return shared | {f"torch_{k}": v for k, v in asdict(self.tabular_params()).items() if k != "seed"}

    def tabular_params(self) -> TabularParams:
        """Return the torch model's hyperparameters (``TabularParams``) for this run's seed."""
        from mlloop.training.torch_model import TabularParams

        return TabularParams(seed=self.seed)


def device() -> str:
    """Return ``cuda`` when torch sees a GPU, else ``cpu`` (without importing torch where no driver is)."""
    if not Path("/dev/nvidiactl").exists() and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def train_xgboost(
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_val: pd.DataFrame,
    y_val: np.ndarray,
    config: TrainConfig,
    on: str,
    task: TaskSpec = BINARY,
) -> Any:
    """Fit hist XGBoost with early stopping on the validation part: a classifier (imbalance by weighting)
    or, for a regression task, a regressor on squared error."""
    import xgboost as xgb

    if task.counts_positives:
        positives = max(int(y_train.sum()), 1)
        estimator, extra = (
            xgb.XGBClassifier,
            {"scale_pos_weight": ((len(y_train) - positives) / positives) ** 0.5},
        )
    else:
        estimator, extra = xgb.XGBRegressor, {}
    model = estimator(
        objective=task.xgboost_objective,
        n_estimators=config.max_rounds,
        learning_rate=config.learning_rate,
        max_depth=config.max_depth,
        min_child_weight=config.min_child_weight,
        subsample=config.subsample,
        colsample_bytree=config.subsample,
        tree_method="hist",
        device=on,
        enable_categorical=True,
        max_cat_to_onehot=1,
        eval_metric=task.xgboost_eval_metric,
        early_stopping_rounds=50,
        random_state=config.seed,
        n_jobs=2,
        **extra,
    )
    model.fit(x_train, y_train, eval_set=[(x_val, y_val)], verbose=False)
    log.info(
        "XGBoost stopped at %d rounds (best validation %s %.4f)",
        model.best_iteration + 1,
        task.xgboost_eval_metric,
        model.best_score,
    )
    return model


def train_torch(
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_val: pd.DataFrame,
    y_val: np.ndarray,
    config: TrainConfig,
    on: str,
    task: TaskSpec = BINARY,
) -> TabularModel:
    """Fit the torch tabular network on ``on``, early-stopping on validation PR-AUC or RMSE (by task)."""
    from mlloop.training.torch_model import fit_tabular

    return fit_tabular(x_train, y_train, x_val, y_val, config.tabular_params(), device=on, task=task.name)


def permutation_importance(
    model: Any,
    matrix: pd.DataFrame,
    labels: np.ndarray,
    *,
    max_rows: int = IMPORTANCE_MAX_ROWS,
    seed: int = 0,
    task: TaskSpec = BINARY,
) -> dict[str, float]:
    """Return each column's loss of skill when its values are shuffled (on at most ``max_rows`` rows).

    ``model`` serves ``scores(matrix)``. Skill is PR-AUC (binary) or minus the RMSE (regression).

    Model-agnostic and cheap: one scoring of the rows per column. A drop near zero (or below) means the
    model does not rely on the column, or that other columns carry the same information.
    """
    import numpy as np

    from mlloop.promotion import pr_auc

    rng = np.random.default_rng(seed)
    if len(matrix) > max_rows:
        rows = np.sort(rng.choice(len(matrix), size=max_rows, replace=False))
        matrix, labels = matrix.iloc[rows], labels[rows]

    def skill(scores: np.ndarray) -> float:
        if task.counts_positives:
            return pr_auc(labels, scores)
        return -float(np.sqrt(np.mean((scores - labels) ** 2)))

    baseline = skill(model.scores(matrix))
    drops = {}
    for column in matrix.columns:
        shuffled = matrix.copy()
        shuffled[column] = matrix[column].array.take(rng.permutation(len(matrix)))
        drops[str(column)] = baseline - skill(model.scores(shuffled))
    return drops


@dataclass(frozen=True)
class FittedModel:
    """A trained model of either type and what the shared flow logs about it besides its scores."""

    model: CalibratedModel | RegressionModel  # scores(matrix): calibrated probabilities or predicted values
    params: dict[str, Any]  # where early stopping stopped, logged next to the run's params
    importance: dict[str, float]
    importance_kind: str  # what the importance measures, for the plot's title


def fit_model(data: TrainingData, config: TrainConfig, on: str) -> FittedModel:
    """Fit the model type of ``config`` on the train part, early-stopping on the validation part.

    A binary model's scores are then calibrated on the same validation part (``fit_calibration``). Early
    stopping picks one number there (the round or epoch); measured on generated windows, calibrating on
    the whole validation part left the holdout at least as well calibrated as stopping on one half and
    calibrating on the other (which halves the calibration's rows), so the part is not split. A regression
    model serves its predicted value uncalibrated (``calibration: skipped`` in its params).
    """
    from mlloop.training.calibration import IDENTITY, fit_calibration, served_model

    task = data.task
    x_val, y_val = data.parts["validation"]
    if config.model == "xgboost":
        model: Any = train_xgboost(*data.parts["train"], x_val, y_val, config, on, task)
        gain = model.get_booster().get_score(importance_type="gain")
        params: dict[str, Any] = {"best_rounds": model.best_iteration + 1}
    else:
        model = train_torch(*data.parts["train"], x_val, y_val, config, on, task)
        params = {"best_epoch": model.training["best_epoch"]}
    if task.calibrated:
        calibration = fit_calibration(y_val, model.predict_proba(x_val)[:, 1])
        params |= {"calibration_slope": calibration.slope, "calibration_intercept": calibration.intercept}
    else:
        calibration = IDENTITY
        params |= {"calibration": f"skipped: a {task.name} model serves its predicted value"}
    wrapped = served_model(model, calibration, task.calibrated)
    if config.model == "xgboost":
        importance, kind = {k: float(v) for k, v in gain.items()}, "gain"
    else:
        importance = permutation_importance(wrapped, x_val, y_val, seed=config.seed, task=task)
        kind = f"validation {'PR-AUC drop' if task.counts_positives else 'RMSE increase'} when shuffled"
    return FittedModel(wrapped, params, importance, kind)


@dataclass(frozen=True)
class TrainingData:
    """A snapshot split by time, with each part as (model matrix, labels), and its use case's task."""

    manifest: SnapshotManifest
    split: Split
    parts: dict[str, tuple[pd.DataFrame, np.ndarray]]
    task: TaskSpec = BINARY


def load_training_data(storage: Storage, config: TrainConfig, task: str | None = None) -> TrainingData:
    """Load the snapshot, keep rows with a known label, split by time; the gate re-uses the same holdout.

    ``task`` is the use case's (``binary`` or ``regression``); None reads it from the declaration of the
    use case the snapshot names.

    Raises:
        ValueError: when a part cannot judge a model: a single class (binary) or a single value
            (regression), because the window is too short or labels have not arrived.
    """
    from mlloop.training.snapshot import load_snapshot, time_split

    frame, manifest = load_snapshot(storage, config.snapshot)
    if task is None:
        from mlloop.usecase import load_use_case

        task = load_use_case(manifest.use_case).task
    spec = task_spec(task)
    labelled = frame[frame[manifest.label_known_column].astype(bool)]
    log.info("Snapshot %s: %d rows, %d with a known label", manifest.digest[:12], len(frame), len(labelled))
    split = time_split(
        labelled,
        manifest.time_column,
        validation_fraction=config.validation_fraction,
        holdout_fraction=config.holdout_fraction,
    )
    features, columns = manifest.spec(), manifest.feature_columns
    parts = {}
    for name, part in (("train", split.train), ("validation", split.validation), ("holdout", split.holdout)):
        where = f"the {name} part of snapshot {manifest.digest[:12]}"
        y = spec.labels(part[manifest.target_column], where=f"{where}'s target")
        if not spec.judgeable(y):
            raise ValueError(
                f"{where} has only one {'class' if spec.counts_positives else 'target value'} "
                f"({len(y)} rows); widen the training window or wait for more labels"
            )
        parts[name] = (model_matrix(part, features, columns), y)
    return TrainingData(manifest, split, parts, spec)
