"""Entry points the train_model DAG calls: snapshot, train (local backend), gate, promote or reject.

Each step takes and returns small JSON-able dicts (URIs, digests, versions), never frames.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

from mlloop.config import get_settings
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

log = logging.getLogger("mlloop.training")


def assemble_snapshot(window_days: int, end_day: str | None, as_of: datetime) -> dict[str, Any]:
    """Snapshot the last ``window_days`` validated days up to ``end_day`` with the labels known at ``as_of``.

    Raises:
        ValueError: when fewer validated days exist than the window asks for (naming what exists).
    """
    import pandas as pd

    from mlloop.training.snapshot import create_snapshot

    settings = get_settings()
    use_case = load_use_case(settings.use_case)
    storage = Storage.from_settings(settings)
    available = sorted(storage.iter_partitions("validated", use_case.dataset))
    if end_day:
        available = [d for d in available if d <= end_day]
    if len(available) < window_days:
        raise ValueError(
            f"train_model needs {window_days} validated days up to {end_day or 'now'}, found "
            f"{len(available)} ({', '.join(available) or 'none'}); ingest more days or lower window_days."
        )
    days = [date.fromisoformat(d) for d in available[-window_days:]]
    label_keys = [k for d in days for k in storage.list(f"labels/{use_case.dataset}/date={d.isoformat()}")]
    labels = pd.concat([storage.read_frame(k) for k in label_keys]) if label_keys else None
    manifest = create_snapshot(storage, use_case, days, labels=labels, as_of=as_of)
    log.info(
        "Snapshot %s: %d rows over %s..%s, labels known %s",
        manifest.digest[:12],
        manifest.row_count,
        days[0],
        days[-1],
        manifest.labels.model_dump(),
    )
    return {
        "digest": manifest.digest,
        "rows": manifest.row_count,
        "days": [d.isoformat() for d in days],
        "uri": storage.uri(manifest.manifest_key),
    }


def train_cli_args(
    digest: str, *, model: str, seed: int, dag_run_id: str, backend: str, result_path: str
) -> list[str]:
    """Return the training CLI's arguments: identical for the local subprocess and the Kubernetes pod."""
    return [
        "--snapshot",
        digest,
        "--model",
        model,
        "--seed",
        str(seed),
        "--dag-run-id",
        dag_run_id,
        "--backend",
        backend,
        "--result-path",
        result_path,
    ]


def train_local(digest: str, *, model: str, seed: int, dag_run_id: str) -> dict[str, Any]:
    """Run the training CLI in a subprocess on this worker (streaming its log) and return its result."""
    with tempfile.TemporaryDirectory(prefix="mlloop-train-") as tmp:
        result_path = Path(tmp) / "return.json"
        argv = [
            sys.executable,
            "-m",
            "mlloop.training.train",
            *train_cli_args(
                digest,
                model=model,
                seed=seed,
                dag_run_id=dag_run_id,
                backend="local",
                result_path=str(result_path),
            ),
        ]
        log.info("Running %s", " ".join(argv[1:]))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("[train] %s", line.rstrip())
        if proc.wait():
            raise RuntimeError(f"the training CLI failed (exit {proc.returncode}); its log is above")
        return json.loads(result_path.read_text())


def _scored(name: str, model_uri: str, matrix: Any) -> Any:
    """Load an XGBoost model from the registry and score the holdout with its latency and size."""
    import mlflow

    from mlloop.training.train import score_model

    return score_model(name, mlflow.xgboost.load_model(model_uri), matrix)


def gate_challenger(result: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Score challenger and champion on the challenger's holdout, decide, and log the report to MLflow."""
    import mlflow

    from mlloop.promotion import evaluate_gate, load_gate_config
    from mlloop.registry import champion_version
    from mlloop.training.train import TrainConfig, load_training_data

    settings = get_settings()
    storage = Storage.from_settings(settings)
    name, version = result["model_name"], str(result["version"])
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    data = load_training_data(storage, TrainConfig(snapshot=result["snapshot"]))
    matrix, _ = data.parts["holdout"]
    challenger = _scored(f"{name}/{version}", f"models:/{name}/{version}", matrix)
    current = champion_version(client, name)
    champion = None
    if current is not None and current.version != version:
        champion = _scored(f"{name}/{current.version}", f"models:/{name}/{current.version}", matrix)
    config = load_gate_config(overrides or None)
    decision = evaluate_gate(
        challenger, champion, data.split.holdout, target_column=data.manifest.target_column, config=config
    )
    client.log_dict(result["run_id"], decision.to_json(), "gate/gate_report.json")
    client.log_text(result["run_id"], decision.to_markdown(), "gate/gate_report.md")
    verdict = "passed" if decision.promote else "failed"
    client.set_model_version_tag(name, version, "mlloop.gate.verdict", verdict)
    client.set_model_version_tag(name, version, "mlloop.gate.summary", decision.summary()[:4900])
    log.info("Gate: %s", decision.summary())
    return {
        "promote": decision.promote,
        "failed_rules": decision.failed_rules,
        "summary": decision.summary(),
        "champion_version": current.version if current else None,
        "report": f"runs:/{result['run_id']}/gate/gate_report.md",
    }


def promote_or_reject(result: dict[str, Any], decision: dict[str, Any], actor: str) -> dict[str, Any]:
    """Move the champion alias to a challenger that passed, or tag it rejected with the failed rules."""
    import mlflow

    from mlloop.registry import promote, reject

    settings = get_settings()
    client = mlflow.MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )
    name, version = result["model_name"], str(result["version"])
    if decision["promote"]:
        record = promote(
            client, name, version, actor=actor, reason=decision["summary"], gate_report=decision["report"]
        )
    else:
        record = reject(
            client, name, version, actor=actor, reason=decision["summary"], gate_report=decision["report"]
        )
    return record.__dict__
