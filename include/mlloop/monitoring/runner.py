"""One monitoring check: the champion's own training data against a recent window, decided and guarded.

``monitor_window`` is what the ``monitor_drift`` DAG calls. Reference = the champion's training snapshot
(found through its ``mlloop.snapshot_digest`` version tag, never "the latest data"); current = the
monitored window of validated days, built by the same feature code as a content-addressed snapshot (so
the labels known by then come along, and a retrain can use it as is). Checks: data drift per feature
column (``check_drift``), drift of the champion's scores and its PR-AUC on the labelled rows against its
holdout value at promotion, both on what production saw: the champion's answers in the inference log
(joined with the labels known) when the scoring service served the window, else the window re-scored.
Then ``decide`` and ``guard``; every outcome is written to ``reports/monitoring/<dataset>/`` (JSON +
Evidently's HTML) and to the ``mlloop-monitoring`` MLflow experiment (one run per check, tagged with the
model version and the window).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from mlloop.config import get_settings
from mlloop.monitoring.decision import (
    GuardOutcome,
    MonitorConfig,
    MonitorEvidence,
    TriggerRecord,
    change_seen_from,
    decide,
    guard,
    load_monitor_config,
    source_words,
)
from mlloop.storage import Storage
from mlloop.usecase import UseCase, load_use_case

log = logging.getLogger("mlloop.monitoring")
MONITORING_EXPERIMENT = "mlloop-monitoring"
REPORTS_AREA = "reports/monitoring"


def decisions_prefix(dataset: str) -> str:
    """Return the storage prefix holding one JSON per monitoring check of ``dataset``."""
    return f"{REPORTS_AREA}/{dataset}/decisions"


def load_history(storage: Storage, dataset: str) -> list[TriggerRecord]:
    """Return every recorded monitoring outcome of ``dataset`` (the guard's memory), oldest first."""
    records = []
    for key in storage.list(decisions_prefix(dataset)):
        if key.endswith(".json"):
            data = storage.read_json(key)
            records.append(
                TriggerRecord(
                    datetime.fromisoformat(data["checked_at"]),
                    data["action"],
                    data["reason"],
                    champion_version=str(data.get("champion_version") or "") or None,
                    train_from=(data.get("decision") or {}).get("train_from"),
                )
            )
    return sorted(records, key=lambda r: r.at)


def monitored_days(storage: Storage, use_case: UseCase, end_day: str | None, window_days: int) -> list[date]:
    """Return the last ``window_days`` validated days up to ``end_day`` (the newest when None).

    Raises:
        ValueError: when fewer validated days exist (naming those that do).
    """
    available = sorted(storage.iter_partitions("validated", use_case.dataset))
    eligible = [d for d in available if end_day is None or d <= end_day]
    if len(eligible) < window_days:
        raise ValueError(
            f"monitor_drift needs {window_days} validated day(s) up to {end_day or 'now'}, found "
            f"{', '.join(eligible) or 'none'}; ingest the day first or change window_days/end_day."
        )
    return [date.fromisoformat(d) for d in eligible[-window_days:]]


def monitor_window(
    *,
    end_day: str | None,
    window_days: int,
    now: datetime,
    training_active: bool,
    dry_run: bool,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check the window against the champion's training data, decide, guard and record the outcome.

    Returns:
        A JSON-able summary: ``action`` (quiet | trigger | suppressed | dry_run), ``reason``, the window,
        the champion version, the evidence, the report's storage URI and the MLflow run id.
    """
    from mlloop.features.spec import feature_columns
    from mlloop.registry import champion_version
    from mlloop.registry.runner import registry_client_and_model
    from mlloop.training.pipeline import snapshot_days
    from mlloop.training.snapshot import load_snapshot

    started = time.perf_counter()
    settings = get_settings()
    use_case = load_use_case(settings.use_case)
    storage = Storage.from_settings(settings)
    config = load_monitor_config(overrides)
    client, name = registry_client_and_model()
    days = monitored_days(storage, use_case, end_day, window_days)
    window = f"{days[0].isoformat()}..{days[-1].isoformat()}"
    champion = champion_version(client, name)
    if champion is None:
        summary = {
            "action": "quiet",
            "reason": f"no champion of {name} yet: nothing to monitor",
            "window": window,
        }
        log.info("%s", summary["reason"])
        return summary

    reference, ref_manifest = load_snapshot(storage, champion.tags["mlloop.snapshot_digest"])
    current_manifest = snapshot_days(storage, use_case, days, as_of=now, validate=False)
    current, _ = load_snapshot(storage, current_manifest.digest)
    log.info(
        "Monitoring %s v%s: reference %s (%d rows) vs %s (%d rows)",
        name,
        champion.version,
        ref_manifest.digest[:12],
        len(reference),
        window,
        len(current),
    )
    columns = [c for c in feature_columns(use_case.features) if c not in use_case.drift_exclude]
    categorical = [c for c in columns if c in use_case.features.categorical]
    numeric = [c for c in columns if c not in use_case.features.categorical]
    served = _champion_answers(storage, use_case, days, str(champion.version), now)
    evidence, drift, prediction = _evidence(
        client, champion, reference, current, ref_manifest, numeric, categorical, use_case, served, config
    )
    history = load_history(storage, use_case.dataset)
    evidence = replace(
        evidence,
        monitored_days=[d.isoformat() for d in days],
        change_seen_from=change_seen_from(history, str(champion.version)),
    )
    quality = _quality(reference, current, numeric, categorical, use_case, Path(drift.report_path).parent)
    decision = decide(evidence, config)
    outcome = guard(
        decision, now=now, history=history, training_active=training_active, dry_run=dry_run, config=config
    )
    log.info("Monitoring decision for %s: %s — %s", window, outcome.action, outcome.reason)
    summary = _record(
        storage,
        client,
        use_case,
        champion_version=champion.version,
        window=window,
        days=days,
        now=now,
        outcome=outcome,
        decision=decision.to_dict(),
        evidence=asdict(evidence),
        drift=drift,
        prediction=prediction,
        quality=quality,
        current_snapshot=current_manifest.digest,
        dry_run=dry_run,
    )
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def _evidence(
    client: Any,
    champion: Any,
    reference: Any,
    current: Any,
    ref_manifest: Any,
    numeric: list[str],
    categorical: list[str],
    use_case: UseCase,
    served: Any,
    config: MonitorConfig,
) -> tuple[MonitorEvidence, Any, Any]:
    """Run the drift checks and the performance check; return the evidence and both drift results.

    Prediction drift and performance are judged on what production saw: the champion's answers in the
    inference log (``served``) when it holds at least ``min_labelled_rows`` of them for the window (and
    enough labelled ones for performance); otherwise on the window's batch re-scored by the champion.
    """
    import numpy as np
    import pandas as pd

    from mlloop.monitoring.drift import check_drift
    from mlloop.orchestration.params import TRAIN_WINDOW_DAYS
    from mlloop.promotion import pr_auc
    from mlloop.training.pipeline import TRAIN_FROM_TAG
    from mlloop.training.train import IMPORTANCE_ARTIFACT, load_model, model_matrix

    html_dir = Path(tempfile.mkdtemp(prefix="mlloop-monitor-"))
    drift = check_drift(
        reference,
        current,
        numeric=numeric,
        categorical=categorical,
        html_path=html_dir / "data_drift.html",
    )
    model = load_model(f"models:/{champion.name}/{champion.version}")
    spec = ref_manifest.spec()
    ref_scores = model.predict_proba(model_matrix(reference, spec, ref_manifest.feature_columns))[:, 1]
    scores_served = len(served) >= config.min_labelled_rows
    labelled = served[served[use_case.target_column].notna()]
    served_labels = labelled[use_case.target_column].to_numpy(dtype=np.int8)
    labels_served = (
        scores_served
        and len(served_labels) >= config.min_labelled_rows
        and int(served_labels.sum()) >= config.min_labelled_positives
    )
    # The window is re-scored only when a check falls back to it (served answers too few).
    cur_scores = (
        None
        if labels_served
        else model.predict_proba(model_matrix(current, spec, ref_manifest.feature_columns))[:, 1]
    )
    prediction = check_drift(
        pd.DataFrame({"score": ref_scores}),
        pd.DataFrame({"score": served["score"].to_numpy(dtype=np.float64) if scores_served else cur_scores}),
        numeric=["score"],
        categorical=[],
        html_path=html_dir / "prediction_drift.html",
    )
    if labels_served:
        labels, scores = served_labels, labelled["score"].to_numpy(dtype=np.float64)
    else:
        known = current[ref_manifest.label_known_column].astype(bool).to_numpy()
        labels, scores = current.loc[known, use_case.target_column].to_numpy(dtype=np.int8), cur_scores[known]
    positives = int(labels.sum())
    performance = float(pr_auc(labels, scores)) if positives and positives < len(labels) else None
    log.info(
        "Prediction drift on %s, performance on %s (%d of the champion's answers logged, %d labelled)",
        source_words("served" if scores_served else "batch"),
        source_words("served" if labels_served else "batch"),
        len(served),
        len(served_labels),
    )
    run = client.get_run(champion.run_id)
    try:
        ranked = json.loads(Path(client.download_artifacts(champion.run_id, IMPORTANCE_ARTIFACT)).read_text())
        top = list(ranked["importance"])
    except Exception as exc:  # an older model without importance.json: the top-k rule sees none
        log.warning(
            "No %s in the champion's run (%s): the top-k feature rule is skipped", IMPORTANCE_ARTIFACT, exc
        )
        top = []
    evidence = MonitorEvidence(
        drift_share=drift.drift_share,
        drifted_columns=drift.drifted_names,
        top_features=top,
        prediction_drift=prediction.drifted("score"),
        prediction_drift_score=prediction.columns[0].score,
        performance=performance,
        performance_at_promotion=run.data.metrics.get("holdout_pr_auc"),
        labelled_rows=len(labels),
        labelled_positives=positives,
        served_rows=len(served),
        prediction_source="served" if scores_served else "batch",
        scores_source="served" if labels_served else "batch",
        champion_days=list(ref_manifest.days),
        champion_train_from=run.data.tags.get(TRAIN_FROM_TAG) or None,
        full_window_days=TRAIN_WINDOW_DAYS,
    )
    return evidence, drift, prediction


def _champion_answers(
    storage: Storage, use_case: UseCase, days: list[date], version: str, now: datetime
) -> Any:
    """Return the champion ``version``'s logged answers for ``days``, labels known at the start of now's day.

    The same label cut-off as the window's snapshot (``snapshot_days``), so both judge the same labels.
    """
    from mlloop.serving.inference_log import labelled_answers
    from mlloop.training.pipeline import labels_cutoff

    answers = labelled_answers(storage, use_case, [d.isoformat() for d in days], labels_cutoff(now))
    if answers.empty:
        return answers
    return answers[answers["model_version"].astype(str) == version].reset_index(drop=True)


def _quality(
    reference: Any, current: Any, numeric: list[str], categorical: list[str], use_case: UseCase, folder: Path
) -> tuple[Any, list[str]]:
    """Return the window's data quality (Evidently HTML in ``folder``) and what changed from the reference."""
    from mlloop.monitoring.quality import check_quality, quality_changes

    vocabularies = use_case.features.categorical
    now = check_quality(
        current,
        numeric=numeric,
        categorical=categorical,
        vocabularies=vocabularies,
        html_path=folder / "data_quality.html",
    )
    before = check_quality(reference, numeric=numeric, categorical=categorical, vocabularies=vocabularies)
    return now, quality_changes(now, before)


def _record(
    storage: Storage,
    client: Any,
    use_case: UseCase,
    *,
    champion_version: str,
    window: str,
    days: list[date],
    now: datetime,
    outcome: GuardOutcome,
    decision: dict[str, Any],
    evidence: dict[str, Any],
    drift: Any,
    prediction: Any,
    quality: tuple[Any, list[str]],
    current_snapshot: str,
    dry_run: bool,
) -> dict[str, Any]:
    """Write the outcome JSON and both HTML reports to storage and to an MLflow monitoring run."""
    check_id = f"{now.astimezone(UTC):%Y%m%dT%H%M%S}-{days[-1].isoformat()}"
    prefix = f"{REPORTS_AREA}/{use_case.dataset}/{check_id}"
    html = {}
    for label, result in (
        ("data_drift", drift),
        ("prediction_drift", prediction),
        ("data_quality", quality[0]),
    ):
        if result.report_path:
            key = f"{prefix}/{label}.html"
            storage.write_bytes(key, Path(result.report_path).read_bytes())
            html[label] = storage.uri(key)
    record = {
        "checked_at": now.astimezone(UTC).isoformat(),
        "action": outcome.action,
        "reason": outcome.reason,
        "window": window,
        "end_day": days[-1].isoformat(),
        "window_days": len(days),
        "champion_version": champion_version,
        "current_snapshot": current_snapshot,
        "dry_run": dry_run,
        "decision": decision,
        "evidence": evidence,
        "data_drift": drift.to_dict(),
        "prediction_drift": prediction.to_dict(),
        "data_quality": quality[0].to_dict(),
        "quality_findings": quality[1],
        "reports": html,
    }
    from mlloop.registry.champion import experiment_id as get_experiment_id

    experiment_id = get_experiment_id(client, MONITORING_EXPERIMENT)
    tags = {
        "mlloop.model_version": champion_version,
        "mlloop.window": window,
        "mlloop.monitor.action": outcome.action,
        "mlloop.monitor.reason": outcome.reason[:4900],
    }
    run = client.create_run(
        experiment_id, run_name=f"{outcome.action} {window} v{champion_version}", tags=tags
    )
    run_id = run.info.run_id
    client.log_metric(run_id, "drift_share", drift.drift_share)
    if evidence["performance"] is not None:
        client.log_metric(run_id, "labelled_pr_auc", evidence["performance"])
    record["mlflow_run_id"] = run_id
    client.log_dict(run_id, record, "monitoring/decision.json")
    for result in (drift, prediction, quality[0]):
        if result.report_path:
            client.log_artifact(run_id, result.report_path, "monitoring")
    client.set_terminated(run_id)
    key = f"{decisions_prefix(use_case.dataset)}/{check_id}.json"
    storage.write_json(key, record)
    summary_keys = ("action", "reason", "window", "end_day", "window_days", "champion_version", "reports")
    return {k: record[k] for k in summary_keys} | {
        "current_snapshot": current_snapshot,
        "record": storage.uri(key),
        "report_run": run_id,
        "experiment_id": experiment_id,
        "drift_share": drift.drift_share,
        "fired_rules": [r["rule"] for r in decision["rules"] if r["fired"]],
        "train_from": decision.get("train_from"),
        "quality_findings": quality[1],
    }


def retrain_request(summary: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """Return the Asset event extra asking train_model to retrain: reason, window and report link."""
    return {
        "reason": summary["reason"],
        "window": summary["window"],
        "end_day": summary["end_day"],
        "train_from": summary.get("train_from"),
        "monitor_record": summary.get("record"),
        "report_run": summary.get("report_run"),
        "requested_at": now.astimezone(UTC).isoformat(),
    }
