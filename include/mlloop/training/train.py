"""The training CLI: one command for the local backend and the Kubernetes pod alike.

    python -m mlloop.training.train --snapshot <sha256|uri> --model xgboost|torch --seed 42 \
        --dag-run-id <id> --backend local --result-path result.json

Loads a content-addressed snapshot (digest verified), keeps the rows whose label was known when the
snapshot was taken, splits them by time (train / validation / holdout), trains, scores the holdout,
logs params, metrics, plots, the snapshot as an MLflow dataset input, the code version and package
versions to MLflow, logs the model in a safe format with signature and input example, registers it
(once per DAG run: a retried task gets the same version) and writes a small result JSON. The MLflow
server and storage come from MLLOOP_* settings (env), never from arguments.

Two model types share that flow and differ only in fitting, importance and how the model is logged:
``xgboost`` (logged as UBJ by the XGBoost flavour) and ``torch`` (a tabular MLP, logged as a state
dict plus a preprocessing JSON through MLflow "models from code", see ``torch_pyfunc.py``).
Both are calibrated on the validation part (``calibration.py``: Platt scaling on the logit, logged with
the model), so every score the flow logs, gates and serves is a probability. Logging, loading and scoring a
model live in ``model_io`` (the gate, serving and monitoring use them too), the model's input matrix in
``features.build.model_matrix``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlloop.config import REPO_ROOT, get_settings
from mlloop.features.build import model_matrix
from mlloop.registry.tags import (
    BACKEND_TAG,
    CODE_VERSION_TAG,
    DAG_RUN_ID_TAG,
    DEVICE_TAG,
    FEATURE_SPEC_VERSION_TAG,
    MODEL_TYPE_TAG,
    SNAPSHOT_DIGEST_TAG,
)
from mlloop.training.model_io import log_model, package_versions, score_model, serving_frame

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlloop.storage import Storage
    from mlloop.training.calibration import CalibratedModel
    from mlloop.training.snapshot import SnapshotManifest, Split
    from mlloop.training.torch_model import TabularModel, TabularParams

log = logging.getLogger("mlloop.training")

MODEL_TYPES = ("xgboost", "torch")
XGBOOST_PARAMS = ("max_rounds", "learning_rate", "max_depth", "min_child_weight", "subsample")
IMPORTANCE_MAX_ROWS = 20_000
IMPORTANCE_ARTIFACT = "importance.json"  # {"kind": ..., "importance": {feature: value}}, most important first


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
) -> Any:
    """Fit a hist XGBoost classifier with early stopping on the validation part; imbalance by weighting."""
    import xgboost as xgb

    positives = max(int(y_train.sum()), 1)
    model = xgb.XGBClassifier(
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
        scale_pos_weight=((len(y_train) - positives) / positives) ** 0.5,
        eval_metric="aucpr",
        early_stopping_rounds=50,
        random_state=config.seed,
        n_jobs=2,
    )
    model.fit(x_train, y_train, eval_set=[(x_val, y_val)], verbose=False)
    log.info(
        "XGBoost stopped at %d rounds (best validation aucpr %.4f)",
        model.best_iteration + 1,
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
) -> TabularModel:
    """Fit the torch tabular network on ``on`` with early stopping on validation PR-AUC (pos_weight)."""
    from mlloop.training.torch_model import fit_tabular

    return fit_tabular(x_train, y_train, x_val, y_val, config.tabular_params(), device=on)


def permutation_importance(
    model: Any,
    matrix: pd.DataFrame,
    labels: np.ndarray,
    *,
    max_rows: int = IMPORTANCE_MAX_ROWS,
    seed: int = 0,
) -> dict[str, float]:
    """Return each column's drop in PR-AUC when its values are shuffled (on at most ``max_rows`` rows).

    Model-agnostic and cheap: one scoring of the rows per column. A drop near zero (or below) means the
    model does not rely on the column, or that other columns carry the same information.
    """
    import numpy as np

    from mlloop.promotion import pr_auc

    rng = np.random.default_rng(seed)
    if len(matrix) > max_rows:
        rows = np.sort(rng.choice(len(matrix), size=max_rows, replace=False))
        matrix, labels = matrix.iloc[rows], labels[rows]
    baseline = pr_auc(labels, model.predict_proba(matrix)[:, 1])
    drops = {}
    for column in matrix.columns:
        shuffled = matrix.copy()
        shuffled[column] = matrix[column].array.take(rng.permutation(len(matrix)))
        drops[str(column)] = baseline - pr_auc(labels, model.predict_proba(shuffled)[:, 1])
    return drops


@dataclass(frozen=True)
class FittedModel:
    """A trained model of either type and what the shared flow logs about it besides its scores."""

    model: CalibratedModel  # predict_proba(matrix) -> (n, 2) calibrated probabilities
    params: dict[str, Any]  # where early stopping stopped, logged next to the run's params
    importance: dict[str, float]
    importance_kind: str  # what the importance measures, for the plot's title


def fit_model(data: TrainingData, config: TrainConfig, on: str) -> FittedModel:
    """Fit the model type of ``config`` on the train part, early-stopping on the validation part.

    The model's scores are then calibrated on the same validation part (``fit_calibration``). Early
    stopping picks one number there (the round or epoch); measured on generated windows, calibrating on
    the whole validation part left the holdout at least as well calibrated as stopping on one half and
    calibrating on the other (which halves the calibration's rows), so the part is not split.
    """
    from mlloop.training.calibration import CalibratedModel, fit_calibration

    x_val, y_val = data.parts["validation"]
    if config.model == "xgboost":
        model: Any = train_xgboost(*data.parts["train"], x_val, y_val, config, on)
        gain = model.get_booster().get_score(importance_type="gain")
        params: dict[str, Any] = {"best_rounds": model.best_iteration + 1}
        importance, kind = {k: float(v) for k, v in gain.items()}, "gain"
    else:
        model = train_torch(*data.parts["train"], x_val, y_val, config, on)
        params = {"best_epoch": model.training["best_epoch"]}
        importance = permutation_importance(model, x_val, y_val, seed=config.seed)
        kind = "validation PR-AUC drop when shuffled"
    calibration = fit_calibration(y_val, model.predict_proba(x_val)[:, 1])
    params |= {"calibration_slope": calibration.slope, "calibration_intercept": calibration.intercept}
    return FittedModel(CalibratedModel(model, calibration), params, importance, kind)


def _plots(
    labels: np.ndarray,
    scores: np.ndarray,
    raw_scores: np.ndarray,
    threshold: float | None,
    importance: dict[str, float],
    importance_kind: str,
) -> dict[str, Any]:
    """Return the evaluation figures: PR curve, calibration (before and after), importance, confusion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay

    figures = {}
    fig, ax = plt.subplots(figsize=(5, 4))
    PrecisionRecallDisplay.from_predictions(labels, scores, ax=ax)
    ax.set_title("Holdout precision-recall")
    figures["pr_curve.png"] = fig
    fig, ax = plt.subplots(figsize=(5, 4))
    top = 1e-3
    for name, values in (("calibrated", scores), ("raw model", raw_scores)):
        true, predicted = calibration_curve(labels, values, n_bins=10, strategy="quantile")
        ax.plot(predicted, true, marker="o", label=name)
        top = max(top, predicted.max(), true.max())
    ax.plot([0, top], [0, top], linestyle="--", label="ideal")
    ax.set_xlabel("mean predicted score")
    ax.set_ylabel("observed fraud rate")
    ax.set_title("Calibration (holdout, quantile bins)")
    ax.legend()
    figures["calibration.png"] = fig
    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:20]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.barh([k for k, _ in reversed(top)], [v for _, v in reversed(top)])
    ax.set_title(f"Feature importance ({importance_kind})")
    fig.tight_layout()
    figures["feature_importance.png"] = fig
    fig, ax = plt.subplots(figsize=(4, 4))
    cut = threshold if threshold is not None else 0.5
    ConfusionMatrixDisplay.from_predictions(labels, (scores >= cut).astype(np.int8), ax=ax, colorbar=False)
    ax.set_title(f"Confusion at threshold {cut:.3f}")
    figures["confusion_matrix.png"] = fig
    return figures


def code_version() -> str:
    """Return the git commit of the code (-dirty with changes); without git, $MLLOOP_CODE_VERSION (images)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("MLLOOP_CODE_VERSION") or "unknown"
    return f"{commit}-dirty" if dirty else commit


@dataclass(frozen=True)
class TrainingData:
    """A snapshot split by time, with each part as (model matrix, labels)."""

    manifest: SnapshotManifest
    split: Split
    parts: dict[str, tuple[pd.DataFrame, np.ndarray]]


def load_training_data(storage: Storage, config: TrainConfig) -> TrainingData:
    """Load the snapshot, keep rows with a known label, split by time; the gate re-uses the same holdout.

    Raises:
        ValueError: when a part has a single class (the window is too short or labels have not arrived).
    """
    import numpy as np

    from mlloop.training.snapshot import load_snapshot, time_split

    frame, manifest = load_snapshot(storage, config.snapshot)
    labelled = frame[frame[manifest.label_known_column].astype(bool)]
    log.info("Snapshot %s: %d rows, %d with a known label", manifest.digest[:12], len(frame), len(labelled))
    split = time_split(
        labelled,
        manifest.time_column,
        validation_fraction=config.validation_fraction,
        holdout_fraction=config.holdout_fraction,
    )
    spec, columns = manifest.spec(), manifest.feature_columns
    parts = {}
    for name, part in (("train", split.train), ("validation", split.validation), ("holdout", split.holdout)):
        y = part[manifest.target_column].to_numpy(dtype=np.int8)
        if y.sum() == 0 or y.sum() == len(y):
            raise ValueError(
                f"the {name} part of snapshot {manifest.digest[:12]} has only one class "
                f"({len(y)} rows); widen the training window or wait for more labels"
            )
        parts[name] = (model_matrix(part, spec, columns), y)
    return TrainingData(manifest, split, parts)


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one training end to end and return the result (run id, version, metrics)."""
    import mlflow
    from mlflow.models import infer_signature

    from mlloop.promotion import load_gate_config
    from mlloop.promotion.gate import operating_metrics
    from mlloop.registry import register_version
    from mlloop.registry.runner import registered_model_name, use_configured_mlflow
    from mlloop.storage import Storage
    from mlloop.training.calibration import calibration_metrics
    from mlloop.usecase import load_use_case

    if config.model not in MODEL_TYPES:
        raise ValueError(f"--model {config.model!r} is not supported; use one of {MODEL_TYPES}")
    started = time.perf_counter()
    settings = get_settings()
    use_case = load_use_case(settings.use_case)
    model_name = registered_model_name(settings, use_case)
    storage = Storage.from_settings(settings)
    data = load_training_data(storage, config)
    manifest, split, parts = data.manifest, data.split, data.parts
    on = device()
    log.info("Training %s on %s: %s", config.model, on, split.sizes())
    fitted = fit_model(data, config, on)
    x_holdout, y_holdout = parts["holdout"]
    scored = score_model(f"{model_name}/challenger", fitted.model, x_holdout)
    scores = scored.scores
    latency_ms_per_1k, size_mb = scored.batch_latency_ms_per_1k_rows, scored.size_mb
    metrics = operating_metrics(y_holdout, scores, load_gate_config(use_case=use_case))
    raw_scores = fitted.model.model.predict_proba(x_holdout)[:, 1]
    calibration_figures = {f"holdout_{k}": v for k, v in calibration_metrics(y_holdout, scores).items()} | {
        f"holdout_{k}_raw": v for k, v in calibration_metrics(y_holdout, raw_scores).items()
    }

    use_configured_mlflow()
    mlflow.set_experiment(use_case.name)
    tags = {
        SNAPSHOT_DIGEST_TAG: manifest.digest,
        DAG_RUN_ID_TAG: config.dag_run_id,
        BACKEND_TAG: config.backend,
        DEVICE_TAG: on,
        MODEL_TYPE_TAG: config.model,
        CODE_VERSION_TAG: code_version(),
        FEATURE_SPEC_VERSION_TAG: manifest.feature_spec_version,
    }
    with mlflow.start_run(run_name=f"{config.model} {manifest.digest[:12]}", tags=tags) as run:
        mlflow.log_params(
            {
                **config.model_params(),
                "snapshot": manifest.digest,
                **fitted.params,
                **{f"rows_{k}": v for k, v in split.sizes().items()},
            }
        )
        mlflow.log_metrics(
            {f"holdout_{k}": v for k, v in asdict(metrics).items() if v is not None}
            | {"holdout_latency_ms_per_1k_rows": latency_ms_per_1k}
            | calibration_figures
        )
        mlflow.log_dict(package_versions(), "environment/packages.json")
        mlflow.log_dict(manifest.model_dump(mode="json"), "snapshot/manifest.json")
        dataset = mlflow.data.from_pandas(
            split.holdout[[manifest.key_column, manifest.time_column]].head(1000),
            source=storage.uri(manifest.data_key),
            name=f"snapshot-{manifest.digest[:12]}",
            digest=manifest.digest[:36],
        )
        mlflow.log_input(dataset, context="training")
        figures = _plots(
            y_holdout,
            scores,
            raw_scores,
            metrics.threshold_at_precision,
            fitted.importance,
            fitted.importance_kind,
        )
        for file_name, figure in figures.items():
            mlflow.log_figure(figure, f"plots/{file_name}")
        # Monitoring reads the champion's most important features from here (top-k drift rule).
        ranked = dict(sorted(fitted.importance.items(), key=lambda kv: kv[1], reverse=True))
        mlflow.log_dict({"kind": fitted.importance_kind, "importance": ranked}, IMPORTANCE_ARTIFACT)
        example = x_holdout.head(5)
        model_info = log_model(
            config.model, fitted.model, example, infer_signature(serving_frame(example), scores[:5])
        )
        description = f"{config.model} on snapshot {manifest.digest[:12]} ({config.backend}, {on})"
        version = register_version(
            mlflow.MlflowClient(), model_name, source=model_info.model_uri, run_id=run.info.run_id,
            tags=tags, description=description, idempotency_tag=DAG_RUN_ID_TAG,
            model_id=model_info.model_id,
        )  # fmt: skip
    result = {
        "run_id": run.info.run_id,
        "model_name": model_name,
        "version": version.version,
        "snapshot": manifest.digest,
        "model": config.model,
        "device": on,
        "metrics": {k: v for k, v in asdict(metrics).items() if v is not None},
        "calibration": calibration_figures,
        "latency_ms_per_1k_rows": latency_ms_per_1k,
        "model_size_mb": size_mb,
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info(
        "Trained %s v%s: holdout PR-AUC %.4f, ROC-AUC %.4f (%.0fs)",
        model_name,
        version.version,
        metrics.pr_auc,
        metrics.roc_auc,
        result["seconds"],
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; writes the result JSON to --result-path."""
    parser = argparse.ArgumentParser(
        prog="python -m mlloop.training.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--snapshot", required=True, help="snapshot digest (sha256) or its URI")
    parser.add_argument("--model", default="xgboost", choices=MODEL_TYPES)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dag-run-id", default="manual", help="registers at most one version per value")
    parser.add_argument("--backend", default="local", choices=("local", "kubernetes"))
    parser.add_argument("--result-path", type=Path, required=True, help="where to write the result JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mlloop.orchestration.connections import use_airflow_connections

    use_airflow_connections()  # the local backend's subprocess inherits the worker's MLLOOP_STORAGE_CONN_ID
    result = train(
        TrainConfig(
            snapshot=args.snapshot,
            model=args.model,
            seed=args.seed,
            dag_run_id=args.dag_run_id,
            backend=args.backend,
        )
    )
    args.result_path.parent.mkdir(parents=True, exist_ok=True)
    args.result_path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
