"""Entry points the train_<use case> DAG calls: snapshot, train (local backend), gate, promote or reject.

Each step takes and returns small JSON-able dicts (URIs, digests, versions), never frames.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from mlloop.config import get_settings
from mlloop.ingestion.labels_feed import land_labels
from mlloop.orchestration.names import dag_names
from mlloop.registry.tags import (
    DECISION_TAG,
    GATE_CONFIG_TAG,
    GATE_ERROR_TAG,
    GATE_SOURCE_TAG,
    GATE_SUMMARY_TAG,
    GATE_VERDICT_TAG,
    SNAPSHOT_DIGEST_TAG,
    TRAIN_FROM_TAG,
    TRIGGER_REASON_TAG,
    TRIGGER_WINDOW_TAG,
)
from mlloop.storage import Storage
from mlloop.tasks import task_spec
from mlloop.training.windows import snapshot_days
from mlloop.usecase import load_use_case

log = logging.getLogger("mlloop.training")


class NothingToTrain(Exception):
    """A scheduled run has nothing new to learn from (window not full yet, or already trained on)."""


def assemble_snapshot(
    window_days: int,
    end_day: str | None,
    as_of: datetime,
    *,
    use_case: str,
    scheduled: bool = False,
    train_from: str | None = None,
) -> dict[str, Any]:
    """Snapshot ``use_case``'s last ``window_days`` validated days to ``end_day``, labels known at ``as_of``.

    Labels count as known from the start of ``as_of``'s UTC day (``windows.snapshot_days``). Without
    ``end_day`` the window ends ``label_maturity_days`` (use case) before ``as_of``, so that most
    of its labels have arrived. ``train_from`` (a decay-triggered retrain: the day the relationship
    changed) drops the days before it, so the window may hold fewer than ``window_days`` days but at
    least one. A ``scheduled`` run (started by an Asset) stops quietly when the window is not full yet
    or when a version was already trained on this very snapshot.

    Raises:
        ValueError: when fewer validated days exist than the window asks for (naming what exists).
        NothingToTrain: instead of that ValueError for a scheduled run, and when a version was already
            trained on the snapshot.
    """
    train_dag = dag_names(use_case).train
    declaration = load_use_case(use_case)
    storage = Storage.from_settings(get_settings())
    available = sorted(storage.iter_partitions("validated", declaration.dataset))
    last = end_day or (as_of.date() - timedelta(days=declaration.label_maturity_days)).isoformat()
    eligible = [d for d in available if d <= last and (train_from is None or d >= train_from)]
    needed = 1 if train_from else window_days
    if len(eligible) < needed:
        why = "" if end_day else f" (labels mature after {declaration.label_maturity_days} days)"
        since = f" from {train_from} (the change monitoring found)" if train_from else ""
        message = (
            f"{train_dag} needs {needed} validated day(s){since} up to {last}{why}, found {len(eligible)} "
            f"({', '.join(eligible) or 'none'}; all validated days: {', '.join(available) or 'none'}); "
            "ingest more days, lower window_days or set end_day."
        )
        raise NothingToTrain(message) if scheduled else ValueError(message)
    days = [date.fromisoformat(d) for d in eligible[-window_days:]]
    if train_from and len(days) < window_days:
        log.info(
            "Window cut at %s (monitoring found the relationship changed there): %d of %d days",
            train_from,
            len(days),
            window_days,
        )
    land_labels(storage, declaration, as_of.date())  # labels delivered late or corrected since the last look
    manifest = snapshot_days(storage, declaration, days, as_of=as_of)
    log.info(
        "Snapshot %s: %d rows over %s..%s, labels known %s",
        manifest.digest[:12],
        manifest.row_count,
        days[0],
        days[-1],
        manifest.labels.model_dump(),
    )
    shortfall = labels_shortfall(manifest.labels, declaration)
    if shortfall:
        message = f"waiting: the window {days[0]}..{days[-1]} {shortfall}"
        raise NothingToTrain(message) if scheduled else ValueError(message)
    if scheduled:
        earlier = _version_trained_on(manifest.digest, use_case)
        if earlier is not None:
            raise NothingToTrain(
                f"v{earlier.version} was already trained on this snapshot ({manifest.digest[:12]}; "
                f"gate: {earlier.tags.get(DECISION_TAG, 'undecided')}): nothing new to learn. "
                f"Trigger {train_dag} by hand to retrain anyway."
            )
    return {
        "digest": manifest.digest,
        "rows": manifest.row_count,
        "days": [d.isoformat() for d in days],
        "uri": storage.uri(manifest.manifest_key),
    }


def labels_shortfall(labels: Any, use_case: Any) -> str | None:
    """Return why a window's known labels are too few to train on (``use_case.training``), or None.

    A regression use case needs ``training.min_rows`` only: ``min_positives`` has no meaning there.
    """
    policy = use_case.training
    if not task_spec(use_case.task).counts_positives:
        if labels.known >= policy.min_rows:
            return None
        return (
            f"holds {labels.known} labelled rows; training needs {policy.min_rows} (training.min_rows of use "
            f"case {use_case.name}). Wait for more labels, or widen window_days."
        )
    positives = round(labels.known * (labels.target_mean or 0.0))
    if labels.known >= policy.min_rows and positives >= policy.min_positives:
        return None
    return (
        f"holds {labels.known} labelled rows / {positives} labelled positives; training needs "
        f"{policy.min_rows} / {policy.min_positives} (training.min_rows / training.min_positives of use "
        f"case {use_case.name}). Wait for more labels, or widen window_days."
    )


def _version_trained_on(digest: str, use_case: str) -> Any:
    """Return ``use_case``'s newest registered version trained on snapshot ``digest``, else None."""
    from mlloop.registry.runner import registry_client_and_model

    client, name = registry_client_and_model(use_case)
    versions = [
        v for v in client.search_model_versions(f"name='{name}'") if v.tags.get(SNAPSHOT_DIGEST_TAG) == digest
    ]
    return max(versions, key=lambda v: int(v.version)) if versions else None


def train_cli_args(
    digest: str, *, model: str, seed: int | str, dag_run_id: str, backend: str, result_path: str
) -> list[str]:
    """Return the training CLI's arguments: identical for the local subprocess and the Kubernetes pod.

    The values may be Jinja templates (the pod's arguments render at run time).
    """
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


# Airflow 3 sets this unparseable metadata-DB URL in a task's environment to block DB access; a fresh
# `import airflow` (the CLI's S3Hook for an s3:// data root) then fails to start.
_BLOCKED_DB_URL = "airflow-db-not-allowed:///"
_DB_URL_VARS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CORE__SQL_ALCHEMY_CONN")


def _cli_env() -> dict[str, str]:
    """Return this process's environment for the CLI, the DB block kept as an empty in-memory SQLite."""
    env = dict(os.environ)
    for name in _DB_URL_VARS:
        if env.get(name) == _BLOCKED_DB_URL:
            env[name] = "sqlite://"
    return env


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
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_cli_env()
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("[train] %s", line.rstrip())
        if proc.wait():
            raise RuntimeError(f"the training CLI failed (exit {proc.returncode}); its log is above")
        return json.loads(result_path.read_text())


def _scored(name: str, model_uri: str, matrix: Any) -> Any:
    """Load a registered model (XGBoost or torch) and score the holdout with its latency and size."""
    from mlloop.training.model_io import load_model, score_model

    return score_model(name, load_model(model_uri), matrix)


def gate_challenger(
    result: dict[str, Any],
    overrides: dict[str, Any] | None,
    trigger: dict[str, Any] | None = None,
    *,
    use_case: str,
) -> dict[str, Any]:
    """Score challenger and champion on the challenger's holdout, decide, and log the report to MLflow.

    The gate applies the use case's policy (``load_gate_config``: defaults, the declaration's ``gate:``
    section, then ``overrides``). A ``trigger`` (a monitoring retrain request) is tagged on the
    challenger's run; it changes nothing in the decision: drift never bypasses the gate.

    Raises:
        Exception: whatever kept the gate from deciding, after tagging the version
            ``mlloop.gate.verdict=error`` with the reason, so no registered version is left unjudged.
    """
    import mlflow

    from mlloop.registry.runner import use_configured_mlflow

    name, version = result["model_name"], str(result["version"])
    use_configured_mlflow()
    client = mlflow.MlflowClient()
    try:
        decision, current = _gate_decision(client, result, overrides, use_case)
    except Exception as exc:
        _tag_gate_error(client, name, version, exc)
        raise
    if trigger:
        client.set_tag(result["run_id"], TRIGGER_REASON_TAG, str(trigger.get("reason", ""))[:4900])
        client.set_tag(result["run_id"], TRIGGER_WINDOW_TAG, str(trigger.get("window", "")))
        if trigger.get("train_from"):
            client.set_tag(result["run_id"], TRAIN_FROM_TAG, str(trigger["train_from"]))
    # The run's operating point is the one judged (a run override of fixed_precision moves the served
    # threshold with it); without overrides these are the values training logged.
    for key, value in decision.metrics["challenger"].to_dict().items():
        if value is not None:
            client.log_metric(result["run_id"], f"holdout_{key}", value)
    client.set_tag(result["run_id"], GATE_CONFIG_TAG, decision.config_version)
    client.set_tag(result["run_id"], GATE_SOURCE_TAG, decision.config_source()[:4900])
    client.log_dict(result["run_id"], decision.to_json(), "gate/gate_report.json")
    client.log_text(result["run_id"], decision.to_markdown(), "gate/gate_report.md")
    if GATE_ERROR_TAG in client.get_model_version(name, version).tags:  # an earlier try failed
        client.delete_model_version_tag(name, version, GATE_ERROR_TAG)
    client.set_model_version_tag(name, version, GATE_VERDICT_TAG, "passed" if decision.promote else "failed")
    client.set_model_version_tag(name, version, GATE_SUMMARY_TAG, decision.summary()[:4900])
    log.info("Gate: %s", decision.summary())
    return {
        "model_name": name,
        "version": version,
        "promote": decision.promote,
        "failed_rules": decision.failed_rules,
        "summary": decision.summary(),
        "champion_version": current.version if current else None,
        "config_version": decision.config_version,
        "report": f"runs:/{result['run_id']}/gate/gate_report.md",
        "experiment_id": client.get_run(result["run_id"]).info.experiment_id,
    }


def _gate_decision(
    client: Any, result: dict[str, Any], overrides: dict[str, Any] | None, use_case: str
) -> tuple[Any, Any]:
    """Return the gate's decision on the challenger of ``result`` and the champion version it faced."""
    from mlloop.promotion import evaluate_gate, load_gate_config
    from mlloop.registry import champion_version
    from mlloop.training.fit import TrainConfig, load_training_data

    settings = get_settings()
    declaration = load_use_case(use_case)
    config = load_gate_config(overrides, use_case=declaration)  # before any scoring
    name, version = result["model_name"], str(result["version"])
    data = load_training_data(
        Storage.from_settings(settings), TrainConfig(snapshot=result["snapshot"]), task=declaration.task
    )
    matrix, _ = data.parts["holdout"]
    challenger = _scored(f"{name}/{version}", f"models:/{name}/{version}", matrix)
    current = champion_version(client, name)
    champion = None
    if current is not None and current.version != version:
        champion = _scored(f"{name}/{current.version}", f"models:/{name}/{current.version}", matrix)
    decision = evaluate_gate(
        challenger,
        champion,
        data.split.holdout,
        target_column=data.manifest.target_column,
        config=config,
        task=declaration.task,
        training_mean=float(data.parts["train"][1].mean()),
    )
    return decision, current


def _tag_gate_error(client: Any, name: str, version: str, error: Exception) -> None:
    """Tag ``version`` with verdict ``error`` and the reason; a failure to tag is logged, not raised."""
    reason = f"the gate could not decide: {type(error).__name__}: {error}"
    try:
        client.set_model_version_tag(name, version, GATE_VERDICT_TAG, "error")
        client.set_model_version_tag(name, version, GATE_ERROR_TAG, reason[:4900])
    except Exception:  # the caller re-raises the gate's own error, which matters more
        log.exception("Could not tag %s v%s with the gate error", name, version)
        return
    log.error("%s v%s tagged %s=error (it cannot be promoted): %s", name, version, GATE_VERDICT_TAG, reason)


def promote_or_reject(
    result: dict[str, Any], decision: dict[str, Any], actor: str, *, promote: bool, use_case: str
) -> dict[str, Any]:
    """Move the champion alias to the challenger (``promote``), or tag it rejected with the reason.

    A rejection of a challenger that passed the gate can only come from the reviewer, and says so.

    Raises:
        PromotionError: when asked to promote a challenger the gate did not pass, or whose version does
            not carry the verdict ``passed`` (an ``error`` verdict: the gate could not decide).
    """
    from mlloop.registry import PromotionError, reject
    from mlloop.registry import promote as promote_version
    from mlloop.registry.runner import registry_client_and_model

    client, _ = registry_client_and_model(use_case)
    name, version = result["model_name"], str(result["version"])
    if promote and not decision["promote"]:
        raise PromotionError(
            f"{name} v{version} failed the gate ({decision['summary']}); it cannot be promoted"
        )
    if promote:
        tags = client.get_model_version(name, version).tags
        if tags.get(GATE_VERDICT_TAG) != "passed":
            verdict = tags.get(GATE_VERDICT_TAG, "(none)")
            raise PromotionError(
                f"{name} v{version} carries gate verdict {verdict!r}, not 'passed' "
                f"({tags.get(GATE_ERROR_TAG) or tags.get(GATE_SUMMARY_TAG) or 'never gated'}); only a "
                f"version the gate passed can be promoted: fix the cause and re-run the gate task of "
                f"{dag_names(use_case).train}"
            )
        record = promote_version(
            client, name, version, actor=actor, reason=decision["summary"], gate_report=decision["report"]
        )
    else:
        reason = decision["summary"]
        if decision["promote"]:
            reason = f"rejected by the reviewer in the Airflow UI although the gate passed ({reason})"
        record = reject(client, name, version, actor=actor, reason=reason, gate_report=decision["report"])
    return record.__dict__
