"""The training CLI: one command for the local backend and the Kubernetes pod alike.

    python -m mlloop.training.train --snapshot <sha256|uri> --model xgboost --seed 42 \
        --dag-run-id <id> --backend local --result-path result.json

Loads a content-addressed snapshot (digest verified), keeps the rows whose label was known when the
snapshot was taken, splits them by time (train / validation / holdout), trains, scores the holdout,
logs params, metrics, plots, the snapshot as an MLflow dataset input, the code version and package
versions to MLflow, logs the model in a safe format (XGBoost UBJ) with signature and input example,
registers it (once per DAG run: a retried task gets the same version) and writes a small result JSON.
The MLflow server and storage come from MLLOOP_* settings (env), never from arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlloop.config import REPO_ROOT, get_settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlloop.features.spec import FeatureSpec
    from mlloop.promotion import ScoredModel
    from mlloop.storage import Storage
    from mlloop.training.snapshot import SnapshotManifest, Split

log = logging.getLogger("mlloop.training")

MODEL_TYPES = ("xgboost",)
PACKAGES = ("mlloop", "xgboost", "pandas", "numpy", "scikit-learn", "mlflow", "great_expectations", "torch")


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
    max_rounds: int = 400
    learning_rate: float = 0.08
    max_depth: int = 6


def device() -> str:
    """Return ``cuda`` when torch sees a GPU, else ``cpu``."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_matrix(frame: pd.DataFrame, spec: FeatureSpec, columns: list[str]) -> pd.DataFrame:
    """Return the model's input: categoricals with the spec's vocabulary, everything else float32."""
    import pandas as pd

    from mlloop.features import categorical_column

    out = {}
    for column in columns:
        if column in spec.categorical:
            out[column] = categorical_column(frame[column], spec.categorical[column])
        else:
            out[column] = pd.to_numeric(frame[column], errors="raise").astype("float32")
    return pd.DataFrame(out, index=frame.index)


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
        tree_method="hist",
        device=on,
        enable_categorical=True,
        max_cat_to_onehot=1,
        scale_pos_weight=(len(y_train) - positives) / positives,
        eval_metric="aucpr",
        early_stopping_rounds=40,
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


def _plots(
    labels: np.ndarray, scores: np.ndarray, threshold: float | None, importance: dict[str, float]
) -> dict[str, Any]:
    """Return the evaluation figures: PR curve, calibration, feature importance, confusion matrix."""
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
    true, predicted = calibration_curve(labels, scores, n_bins=10, strategy="quantile")
    ax.plot(predicted, true, marker="o", label="model")
    ax.plot([0, max(predicted.max(), 1e-3)], [0, max(predicted.max(), 1e-3)], linestyle="--", label="ideal")
    ax.set_xlabel("mean predicted score")
    ax.set_ylabel("observed fraud rate")
    ax.set_title("Calibration (holdout, quantile bins)")
    ax.legend()
    figures["calibration.png"] = fig
    top = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:20]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.barh([k for k, _ in reversed(top)], [v for _, v in reversed(top)])
    ax.set_title("Feature importance (gain)")
    fig.tight_layout()
    figures["feature_importance.png"] = fig
    fig, ax = plt.subplots(figsize=(4, 4))
    cut = threshold if threshold is not None else 0.5
    ConfusionMatrixDisplay.from_predictions(labels, (scores >= cut).astype(np.int8), ax=ax, colorbar=False)
    ax.set_title(f"Confusion at threshold {cut:.3f}")
    figures["confusion_matrix.png"] = fig
    return figures


def code_version() -> str:
    """Return the git commit of the code (with -dirty when the tree has changes), or 'unknown'."""
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
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    """Return the installed versions of the packages a model depends on."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def score_model(name: str, model: Any, matrix: pd.DataFrame) -> ScoredModel:
    """Score ``matrix`` with an XGBoost model, timing it (ms per 1,000 rows) and sizing it (UBJ, MB)."""
    from mlloop.promotion import ScoredModel

    started = time.perf_counter()
    scores = model.predict_proba(matrix)[:, 1]
    latency = (time.perf_counter() - started) * 1e6 / max(len(matrix), 1)
    size_mb = len(model.get_booster().save_raw(raw_format="ubj")) / 1e6
    return ScoredModel(name, scores, batch_latency_ms_per_1k_rows=latency, size_mb=size_mb)


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
    from mlloop.storage import Storage
    from mlloop.usecase import load_use_case

    if config.model not in MODEL_TYPES:
        raise ValueError(f"--model {config.model!r} is not supported; use one of {MODEL_TYPES}")
    started = time.perf_counter()
    settings = get_settings()
    use_case = load_use_case(settings.use_case)
    model_name = settings.model_name or use_case.model_name
    storage = Storage.from_settings(settings)
    data = load_training_data(storage, config)
    manifest, split, parts = data.manifest, data.split, data.parts
    on = device()
    log.info("Training %s on %s: %s", config.model, on, split.sizes())
    model = train_xgboost(*parts["train"], *parts["validation"], config, on)
    x_holdout, y_holdout = parts["holdout"]
    scored = score_model(f"{model_name}/challenger", model, x_holdout)
    scores = scored.scores
    latency_ms_per_1k, size_mb = scored.batch_latency_ms_per_1k_rows, scored.size_mb
    metrics = operating_metrics(y_holdout, scores, load_gate_config())
    importance = {k: float(v) for k, v in model.get_booster().get_score(importance_type="gain").items()}

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(use_case.name)
    tags = {
        "mlloop.snapshot_digest": manifest.digest,
        "mlloop.dag_run_id": config.dag_run_id,
        "mlloop.backend": config.backend,
        "mlloop.device": on,
        "mlloop.code_version": code_version(),
        "mlloop.feature_spec_version": manifest.feature_spec_version,
    }
    with mlflow.start_run(run_name=f"{config.model} {manifest.digest[:12]}", tags=tags) as run:
        mlflow.log_params(
            {
                **{k: v for k, v in asdict(config).items() if k != "snapshot"},
                "snapshot": manifest.digest,
                "best_rounds": model.best_iteration + 1,
                **{f"rows_{k}": v for k, v in split.sizes().items()},
            }
        )
        mlflow.log_metrics(
            {f"holdout_{k}": v for k, v in asdict(metrics).items() if v is not None}
            | {"holdout_latency_ms_per_1k_rows": latency_ms_per_1k}
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
        for file_name, figure in _plots(
            y_holdout, scores, metrics.threshold_at_precision, importance
        ).items():
            mlflow.log_figure(figure, f"plots/{file_name}")
        example = x_holdout.head(5)
        model_info = mlflow.xgboost.log_model(
            model,
            name="model",
            model_format="ubj",
            input_example=example,
            signature=infer_signature(example, scores[:5]),
        )
        description = f"{config.model} on snapshot {manifest.digest[:12]} ({config.backend}, {on})"
        version = register_version(
            mlflow.MlflowClient(), model_name, source=model_info.model_uri, run_id=run.info.run_id,
            tags=tags, description=description, idempotency_tag="mlloop.dag_run_id",
            model_id=model_info.model_id,
        )  # fmt: skip
    result = {
        "run_id": run.info.run_id,
        "model_name": model_name,
        "version": version.version,
        "snapshot": manifest.digest,
        "device": on,
        "metrics": {k: v for k, v in asdict(metrics).items() if v is not None},
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
