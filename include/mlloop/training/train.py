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
For a binary use case both are calibrated on the validation part (``calibration.py``: Platt scaling on the
logit, logged with the model), so every score the flow logs, gates and serves is a probability. For a
regression use case (``task: regression``) they fit squared error and serve the predicted value; the run
logs the holdout RMSE and MAE with bootstrap intervals and the no-skill RMSE (predicting the training mean)
instead of the ranking metrics and calibration. Logging, loading and scoring a
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
from mlloop.registry.tags import (
    BACKEND_TAG,
    CODE_VERSION_TAG,
    DAG_RUN_ID_TAG,
    DEVICE_TAG,
    FEATURE_SPEC_VERSION_TAG,
    MODEL_TYPE_TAG,
    SNAPSHOT_DIGEST_TAG,
)
from mlloop.training.fit import (
    MODEL_TYPES,
    FittedModel,
    TrainConfig,
    TrainingData,
    device,
    fit_model,
    load_training_data,
)
from mlloop.training.model_io import (
    IMPORTANCE_ARTIFACT,
    log_model,
    package_versions,
    score_model,
    serving_frame,
)

if TYPE_CHECKING:
    import numpy as np

    from mlloop.promotion import GateConfig


log = logging.getLogger("mlloop.training")


@dataclass(frozen=True)
class HoldoutEvaluation:
    """What a run logs of its holdout: headline metrics, extra figures (calibration), plots, a summary."""

    metrics: dict[str, float]  # logged as holdout_<name>, returned in the result
    extra: dict[str, float]  # logged beside them (the binary calibration's Brier score and ECE)
    figures: dict[str, Any]
    summary: str


def evaluate_holdout(
    data: TrainingData, fitted: FittedModel, scores: np.ndarray, config: GateConfig
) -> HoldoutEvaluation:
    """Return the holdout's evaluation for the use case's task (the gate's operating point, or intervals)."""
    from mlloop.promotion.gate import operating_metrics
    from mlloop.promotion.regression import regression_metrics
    from mlloop.training.calibration import calibration_metrics

    x_holdout, y_holdout = data.parts["holdout"]
    importance = _importance_plot(fitted.importance, fitted.importance_kind)
    if not data.task.calibrated:
        training_mean = float(data.parts["train"][1].mean())
        values = regression_metrics(y_holdout, scores, training_mean, config)
        summary = (
            f"holdout RMSE {values.rmse:.4g} [{values.rmse_lower:.4g}, {values.rmse_upper:.4g}], MAE "
            f"{values.mae:.4g} (predicting the training mean: RMSE {values.no_skill_rmse:.4g})"
        )
        figures = _regression_plots(y_holdout, scores) | importance
        metrics = {k: v for k, v in values.to_dict().items() if v is not None}
        return HoldoutEvaluation(metrics, {}, figures, summary)
    metrics_at = operating_metrics(y_holdout, scores, config)
    raw_scores = fitted.model.model.predict_proba(x_holdout)[:, 1]
    extra = {f"holdout_{k}": v for k, v in calibration_metrics(y_holdout, scores).items()} | {
        f"holdout_{k}_raw": v for k, v in calibration_metrics(y_holdout, raw_scores).items()
    }
    figures = _plots(y_holdout, scores, raw_scores, metrics_at.threshold_at_precision) | importance
    summary = f"holdout PR-AUC {metrics_at.pr_auc:.4f}, ROC-AUC {metrics_at.roc_auc:.4f}"
    metrics = {k: v for k, v in asdict(metrics_at).items() if v is not None}
    return HoldoutEvaluation(metrics, extra, figures, summary)


def _pyplot() -> Any:
    """Return matplotlib's pyplot on the Agg backend (no display in a worker or a pod)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _importance_plot(importance: dict[str, float], importance_kind: str) -> dict[str, Any]:
    """Return the feature-importance figure (the 20 most important features)."""
    plt = _pyplot()
    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:20]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.barh([k for k, _ in reversed(top)], [v for _, v in reversed(top)])
    ax.set_title(f"Feature importance ({importance_kind})")
    fig.tight_layout()
    return {"feature_importance.png": fig}


def _regression_plots(labels: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
    """Return a regression model's figures: predicted against actual, and the residuals' histogram."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(labels, predictions, s=4, alpha=0.3)
    low, high = float(min(labels.min(), predictions.min())), float(max(labels.max(), predictions.max()))
    ax.plot([low, high], [low, high], linestyle="--", label="ideal")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("Holdout: predicted vs actual")
    ax.legend()
    fig2, ax2 = plt.subplots(figsize=(5, 4))
    ax2.hist(predictions - labels, bins=50)
    ax2.set_xlabel("predicted - actual")
    ax2.set_title("Holdout residuals")
    return {"predicted_vs_actual.png": fig, "residuals.png": fig2}


def _plots(
    labels: np.ndarray,
    scores: np.ndarray,
    raw_scores: np.ndarray,
    threshold: float | None,
) -> dict[str, Any]:
    """Return a binary model's figures: PR curve, calibration (before and after), confusion."""
    import numpy as np
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay

    plt = _pyplot()
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
    ax.set_ylabel("observed positive rate")
    ax.set_title("Calibration (holdout, quantile bins)")
    ax.legend()
    figures["calibration.png"] = fig
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


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one training end to end and return the result (run id, version, metrics)."""
    import mlflow
    from mlflow.models import infer_signature

    from mlloop.promotion import load_gate_config
    from mlloop.registry import register_version
    from mlloop.registry.runner import registered_model_name, use_configured_mlflow
    from mlloop.storage import Storage
    from mlloop.usecase import load_use_case

    if config.model not in MODEL_TYPES:
        raise ValueError(f"--model {config.model!r} is not supported; use one of {MODEL_TYPES}")
    started = time.perf_counter()
    settings = get_settings()
    storage = Storage.from_settings(settings)
    data = load_training_data(storage, config)
    manifest, split, parts = data.manifest, data.split, data.parts
    use_case = load_use_case(manifest.use_case)  # the snapshot knows whose data it holds
    model_name = registered_model_name(use_case, settings)
    on = device()
    log.info("Training %s on %s: %s", config.model, on, split.sizes())
    fitted = fit_model(data, config, on)
    x_holdout = parts["holdout"][0]
    scored = score_model(f"{model_name}/challenger", fitted.model, x_holdout)
    scores = scored.scores
    latency_ms_per_1k, size_mb = scored.batch_latency_ms_per_1k_rows, scored.size_mb
    evaluation = evaluate_holdout(data, fitted, scores, load_gate_config(use_case=use_case))

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
            {f"holdout_{k}": v for k, v in evaluation.metrics.items()}
            | {"holdout_latency_ms_per_1k_rows": latency_ms_per_1k}
            | evaluation.extra
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
        for file_name, figure in evaluation.figures.items():
            mlflow.log_figure(figure, f"plots/{file_name}")
        # Monitoring reads the champion's most important features from here (top-k drift rule).
        ranked = dict(sorted(fitted.importance.items(), key=lambda kv: kv[1], reverse=True))
        mlflow.log_dict({"kind": fitted.importance_kind, "importance": ranked}, IMPORTANCE_ARTIFACT)
        example = x_holdout.head(5)
        model_info = log_model(
            config.model,
            fitted.model,
            example,
            infer_signature(serving_frame(example), scores[:5]),
            task=data.task.name,
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
        "task": data.task.name,
        "metrics": evaluation.metrics,
        "calibration": evaluation.extra,
        "latency_ms_per_1k_rows": latency_ms_per_1k,
        "model_size_mb": size_mb,
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("Trained %s v%s: %s (%.0fs)", model_name, version.version, evaluation.summary, result["seconds"])
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
