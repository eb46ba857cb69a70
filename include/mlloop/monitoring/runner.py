"""One monitoring check: the champion's own training data against a recent window, decided and guarded.

``monitor_window`` is what the ``monitor_<use case>`` DAG calls: it reads the champion from the registry
(``load_champion``), gathers the evidence (``check_evidence``, storage only, which the offline replay calls
as well), applies ``decide`` and ``guard``, and records the outcome. Reference = the champion's training
snapshot (found through its ``mlloop.snapshot_digest`` version tag, never "the latest data"); current = the
monitored window of validated days, built by the same feature code as a content-addressed snapshot (so the
labels known by then come along, and a retrain can use it as is). Checks: data drift per feature column
(``check_drift``), drift of the champion's scores, and on the labelled rows the monitored metric against
the champion's holdout (rebuilt from its snapshot with training's own split, resampled at the window's
counts: ``performance.reference_band``) and the base rate against the champion's days at the window's label
maturity. Scores and labels are what production saw: the champion's answers in the inference log (joined
with the labels known) when the scoring service served the window, else the window re-scored. Every
outcome is written to ``reports/monitoring/<dataset>/`` (JSON + Evidently's HTML, with the effective
policy) and to the ``mlloop-monitoring`` MLflow experiment: one run per check, and the figures of every
check on one timeline run per use case, stepped by the monitored day, so MLflow draws them over days.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from mlloop.config import get_settings
from mlloop.ingestion.labels_feed import land_labels
from mlloop.labels import LABEL_TIME_COLUMN, labels_cutoff, read_known_labels
from mlloop.monitoring.decision import (
    GuardOutcome,
    MonitorConfig,
    MonitorDecision,
    MonitorEvidence,
    TriggerRecord,
    change_seen_from,
    decide,
    guard,
    load_monitor_config,
    policy_record,
    source_words,
)
from mlloop.orchestration.names import dag_names
from mlloop.registry.tags import (
    MODEL_VERSION_TAG,
    MONITOR_ACTION_TAG,
    MONITOR_POLICY_FINGERPRINT_TAG,
    MONITOR_POLICY_VERSION_TAG,
    MONITOR_REASON_TAG,
    SNAPSHOT_DIGEST_TAG,
    TIMELINE_TAG,
    TRAIN_FROM_TAG,
    USE_CASE_TAG,
    WINDOW_TAG,
)
from mlloop.storage import Storage
from mlloop.tasks import task_spec
from mlloop.usecase import UseCase, load_use_case

log = logging.getLogger("mlloop.monitoring")
MONITORING_EXPERIMENT = "mlloop-monitoring"
REPORTS_AREA = "reports/monitoring"
# Why a regression use case's window has no label-free estimate and no label-shift reference.
NOT_BINARY = (
    "not applicable to a regression use case: the label-free estimate (CBPE) needs calibrated "
    "probabilities, and label shift judges a 0/1 target's base rate"
)
# Tag of the one run per use case that carries every check's figures, stepped by the monitored day.


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
                    fired_rules=tuple(
                        rule["rule"]
                        for rule in (data.get("decision") or {}).get("rules", [])
                        if rule.get("fired") and rule.get("retrains", True)
                    ),
                    window_end=data.get("end_day"),
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
            f"{dag_names(use_case.name).monitor} needs {window_days} validated day(s) up to "
            f"{end_day or 'now'}, found "
            f"{', '.join(eligible) or 'none'}; ingest the day first or change window_days/end_day."
        )
    return [date.fromisoformat(d) for d in eligible[-window_days:]]


@dataclass(frozen=True)
class MonitoredChampion:
    """A champion as the monitor sees it: its model, training snapshot and scores on its own holdout."""

    version: str
    model: Any  # scores(matrix) -> (n,): calibrated probabilities or predicted values (load_model)
    snapshot_digest: str
    top_features: list[str]  # most important first ([] when unknown: the top-k rule sees none)
    holdout_labels: Any  # labels of its holdout (training's split of its snapshot; 0/1 or values), in order
    holdout_scores: Any  # its scores on those rows
    train_from: str | None = None  # set when its window was cut at a change (``mlloop.train_from``)


@dataclass(frozen=True)
class CheckResult:
    """The evidence of one window and the reports behind it."""

    evidence: MonitorEvidence
    drift: Any  # DriftResult of the feature columns
    prediction: Any  # DriftResult of the champion's scores
    quality: tuple[Any, list[str]]  # the window's quality and what got worse than the reference
    current_snapshot: str  # digest of the window's snapshot


def monitor_window(
    *,
    use_case: str,
    end_day: str | None,
    window_days: int,
    now: datetime,
    training_active: bool,
    dry_run: bool,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check ``use_case``'s window against its champion's training data, decide, guard and record.

    Returns:
        A JSON-able summary: ``action`` (quiet | trigger | suppressed | dry_run), ``reason``, the window,
        the champion version, the fired rules and findings, the report's storage URI and the MLflow run id.
    """
    from mlloop.registry import champion_version
    from mlloop.registry.runner import registry_client_and_model

    started = time.perf_counter()
    settings = get_settings()
    client, name = registry_client_and_model(use_case)
    declaration = load_use_case(use_case)
    storage = Storage.from_settings(settings)
    config = load_monitor_config(overrides, use_case=declaration)
    days = monitored_days(storage, declaration, end_day, window_days)
    window = f"{days[0].isoformat()}..{days[-1].isoformat()}"
    registered = champion_version(client, name)
    if registered is None:
        summary = {
            "action": "quiet",
            "reason": f"no champion of {name} yet: nothing to monitor",
            "window": window,
        }
        log.info("%s", summary["reason"])
        return summary

    champion = load_champion(client, registered, storage)
    land_labels(storage, declaration, now.date())  # labels delivered late or corrected since the last look
    sized = size_window(storage, declaration, champion, days, config)
    if not sized.ready:
        summary = {"action": "quiet", "reason": sized.describe(), "window": window}
        log.info("Not checked: %s", summary["reason"])
        return summary
    if sized.widened:
        log.info("Window widened by rows: %s", sized.describe())
    days = list(sized.days)
    window = f"{days[0].isoformat()}..{days[-1].isoformat()}"
    result = check_evidence(storage, declaration, champion, days, now=now, config=config)
    history = load_history(storage, declaration.dataset)
    evidence = replace(result.evidence, change_seen_from=change_seen_from(history, champion.version))
    decision = decide(evidence, config)
    outcome = guard(
        decision,
        now=now,
        history=history,
        training_active=training_active,
        dry_run=dry_run,
        config=config,
        champion_version=champion.version,
        window_end=days[-1].isoformat(),
    )
    log.info("Monitoring decision for %s: %s — %s", window, outcome.action, outcome.reason)
    summary = _record(
        storage,
        client,
        declaration,
        replace(result, evidence=evidence),
        champion_version=champion.version,
        days=days,
        now=now,
        outcome=outcome,
        decision=decision,
        policy=policy_record(config, declaration, overrides),
        dry_run=dry_run,
    )
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def size_window(
    storage: Storage, use_case: UseCase, champion: MonitoredChampion, days: Sequence[date], config: Any
) -> Any:
    """Return the days a check covers: ``days``, widened back day by day until ``drift_min_rows`` rows.

    Never into the champion's training days, at most ``drift_max_days`` days (``monitoring.window``).
    """
    import io

    import pyarrow.parquet as pq

    from mlloop.monitoring.window import drift_window
    from mlloop.storage import partition_key
    from mlloop.training.snapshot import snapshot_keys

    manifest = storage.read_json(snapshot_keys(champion.snapshot_digest)[1])
    available = sorted(
        d for d in storage.iter_partitions("validated", use_case.dataset) if d <= str(days[-1])
    )
    day_rows = {}
    for day in available[-(config.drift_max_days + len(days)) :]:
        keys = [
            k
            for k in storage.list(partition_key("validated", use_case.dataset, day))
            if k.endswith(".parquet")
        ]
        rows = sum(pq.ParquetFile(io.BytesIO(storage.read_bytes(k))).metadata.num_rows for k in keys)
        day_rows[date.fromisoformat(day)] = rows
    champion_days = [date.fromisoformat(d) for d in manifest["days"]]
    return drift_window(
        day_rows,
        end_day=days[-1],
        days=len(days),
        min_rows=config.drift_min_rows,
        max_days=config.drift_max_days,
        champion_days=champion_days,
        # Days asked for by name are checked even when the champion learned them (a person asked).
        include_champion_days=any(day in champion_days for day in days),
    )


def load_champion(client: Any, registered: Any, storage: Storage) -> MonitoredChampion:
    """Load a registered champion: its model, its holdout rebuilt with training's split, its top features.

    The holdout is the one its run was judged on: its snapshot, labelled rows, split by time with the
    fractions logged as the run's parameters (``training.fit.load_training_data``).
    """
    from mlloop.training.fit import TrainConfig, load_training_data
    from mlloop.training.model_io import IMPORTANCE_ARTIFACT, load_model

    run = client.get_run(registered.run_id)
    digest = registered.tags[SNAPSHOT_DIGEST_TAG]
    defaults = TrainConfig(snapshot=digest)
    params = run.data.params
    split = replace(
        defaults,
        validation_fraction=float(params.get("validation_fraction", defaults.validation_fraction)),
        holdout_fraction=float(params.get("holdout_fraction", defaults.holdout_fraction)),
    )
    model = load_model(f"models:/{registered.name}/{registered.version}")
    holdout_matrix, holdout_labels = load_training_data(storage, split).parts["holdout"]
    try:
        ranked = json.loads(Path(client.download_artifacts(run.info.run_id, IMPORTANCE_ARTIFACT)).read_text())
        top = list(ranked["importance"])
    except Exception as exc:  # an older model without importance.json: the top-k rule sees none
        log.warning(
            "No %s in the champion's run (%s): the top-k feature rule is skipped", IMPORTANCE_ARTIFACT, exc
        )
        top = []
    return MonitoredChampion(
        version=str(registered.version),
        model=model,
        snapshot_digest=digest,
        top_features=top,
        holdout_labels=holdout_labels,
        holdout_scores=model.scores(holdout_matrix),
        train_from=run.data.tags.get(TRAIN_FROM_TAG) or None,
    )


def check_evidence(
    storage: Storage,
    use_case: UseCase,
    champion: MonitoredChampion,
    days: Sequence[date],
    *,
    now: datetime,
    config: MonitorConfig,
    reports: bool = True,
) -> CheckResult:
    """Gather one window's evidence against ``champion``: drift, prediction drift, decay and base rate.

    Reads storage only (the snapshots, the inference log, the labels): no MLflow, no Airflow. Prediction
    drift and performance are judged on what production saw: the champion's answers in the inference log
    when it holds at least ``min_labelled_rows`` of them for the window (and enough labelled ones for
    performance); otherwise on the window's batch re-scored by the champion. Labels count as known at the
    start of ``now``'s UTC day, as for the window's snapshot. ``reports=False`` (an offline replay) skips
    the HTML reports, the data-quality checks and the label-free estimate, which feed the record and
    findings but no retraining rule, and takes the drift verdicts from Evidently's stat tests without
    building its Report (``drift_verdicts``: the full-data verdicts ``check_drift`` returns, with exact
    scores, as the calibration computes them).
    """
    import numpy as np
    import pandas as pd

    from mlloop.features.build import model_matrix
    from mlloop.features.spec import feature_columns
    from mlloop.training.snapshot import load_snapshot
    from mlloop.training.windows import snapshot_days

    reference, ref_manifest = load_snapshot(storage, champion.snapshot_digest)
    current_manifest = snapshot_days(storage, use_case, list(days), as_of=now, validate=False)
    current, _ = load_snapshot(storage, current_manifest.digest)
    window = f"{days[0].isoformat()}..{days[-1].isoformat()}"
    log.info(
        "Monitoring v%s: reference %s (%d rows) vs %s (%d rows)",
        champion.version,
        ref_manifest.digest[:12],
        len(reference),
        window,
        len(current),
    )
    columns = [c for c in feature_columns(use_case.features) if c not in use_case.drift_exclude]
    categorical = [c for c in columns if c in use_case.features.categorical]
    numeric = [c for c in columns if c not in use_case.features.categorical]
    served = _champion_answers(storage, use_case, days, champion.version, now)
    html_dir = Path(tempfile.mkdtemp(prefix="mlloop-monitor-")) if reports else None
    drift = _drift(reference, current, numeric, categorical, html_dir, "data_drift.html")
    spec, model = ref_manifest.spec(), champion.model
    ref_scores = model.scores(model_matrix(reference, spec, ref_manifest.feature_columns))
    target, when = use_case.target_column, use_case.time_column
    task = task_spec(use_case.task)
    scores_served = len(served) >= config.min_labelled_rows
    labelled = served[served[target].notna()]
    served_labels = task.labels(labelled[target], where=f"the served rows' {target}")
    labels_served = (
        scores_served
        and len(served_labels) >= config.min_labelled_rows
        and task.counted(served_labels) >= config.min_labelled_positives
    )
    # The window is re-scored only when a check falls back to it (served answers too few).
    cur_scores = (
        None if labels_served else model.scores(model_matrix(current, spec, ref_manifest.feature_columns))
    )
    window_scores = served["score"].to_numpy(dtype=np.float64) if scores_served else cur_scores
    prediction = _drift(
        pd.DataFrame({"score": ref_scores}),
        pd.DataFrame({"score": window_scores}),
        ["score"],
        [],
        html_dir,
        "prediction_drift.html",
        sample_rows=None,  # exact, as the calibration's splits compute it
    )
    estimate, estimate_note = (
        _estimate(champion, window_scores, config, days[-1]) if reports else (None, "no estimate (replay)")
    )
    if not task.calibrated:
        estimate, estimate_note = None, NOT_BINARY
    thresholds = DriftThresholds(storage, use_case, champion, reference, config)
    top = [c for c in champion.top_features[: config.top_k_features] if c in columns]
    own = thresholds.own_spread(drift, current, numeric, categorical, top)
    if own is not None:  # each column against its own block-to-block spread: any column beyond it fires
        drifted, top_drifted = own.drifted, own.top_drifted
        drift_threshold, top_threshold = 0.0, (0.0 if top else None)
    else:
        drifted, top_drifted = drift.drifted_names, [c for c in top if c in drift.drifted_names]
        drift_threshold = thresholds.get(len(current), numeric, categorical)
        top_threshold = (
            thresholds.get(
                len(current), [c for c in top if c in numeric], [c for c in top if c in categorical]
            )
            if top
            else None
        )
    scores_frame = pd.DataFrame({"score": ref_scores, when: reference[when].to_numpy()})
    score_threshold = thresholds.get(len(window_scores), ["score"], [], frame=scores_frame, statistic="score")
    cutoff = labels_cutoff(now)
    if labels_served:
        labels, scores = served_labels, labelled["score"].to_numpy(dtype=np.float64)
        event_times = served[when]
    else:
        known = current[ref_manifest.label_known_column].astype(bool).to_numpy()
        labels = task.labels(current.loc[known, target], where=f"the window's {target}")
        scores = cur_scores[known]
        event_times = current[when]
    performance, band = _performance(labels, scores, champion, config, use_case.task)
    log.info(
        "Prediction drift on %s, performance on %s (%d of the champion's answers logged, %d labelled)",
        source_words("served" if scores_served else "batch"),
        source_words("served" if labels_served else "batch"),
        len(served),
        len(served_labels),
    )
    ages = (pd.Timestamp(cutoff) - pd.to_datetime(event_times, utc=True)).dt.total_seconds().to_numpy()
    base_rate = (
        _base_rate_reference(storage, use_case, reference, list(ref_manifest.days), cutoff, ages)
        if task.counts_positives
        else None  # label shift is a binary target's base rate: NOT_BINARY
    )
    # Without reports (an offline replay) the quality checks, which only feed the record, are left out.
    quality = (
        _quality(reference, current, numeric, categorical, use_case, html_dir) if html_dir else (None, [])
    )
    evidence = MonitorEvidence(
        drift_share=len(drifted) / len(columns),
        drifted_columns=drifted,
        top_features=list(champion.top_features),
        prediction_drift=thresholds.fires("score", prediction.columns[0].score),
        prediction_drift_score=prediction.columns[0].score,
        drift_threshold=drift_threshold,
        top_drift_share=len(top_drifted) / len(top) if top else None,
        top_drift_threshold=top_threshold,
        prediction_drift_threshold=score_threshold,
        drift_calibration=thresholds.notes,
        column_bounds=own.figures(own.columns) if own else {},
        top_column_bounds=own.figures(own.top) if own else {},
        estimated_performance=estimate.estimate if estimate else None,
        estimated_band=(estimate.lower, estimate.upper) if estimate else None,
        estimate_note=estimate_note,
        performance=performance,
        performance_band=band,
        labelled_rows=len(labels),
        labelled_positives=task.counted(labels),
        base_rate_reference=base_rate,
        monitored_days=[d.isoformat() for d in days],
        served_rows=len(served),
        prediction_source="served" if scores_served else "batch",
        scores_source="served" if labels_served else "batch",
        champion_days=list(ref_manifest.days),
        champion_train_from=champion.train_from,
        full_window_days=use_case.training.window_days,
    )
    return CheckResult(evidence, drift, prediction, quality, current_manifest.digest)


def _drift(
    reference: Any,
    current: Any,
    numeric: list[str],
    categorical: list[str],
    html_dir: Path | None,
    html_name: str,
    **options: Any,
) -> Any:
    """Return the drift verdicts of ``current`` against ``reference``, with Evidently's HTML report in
    ``html_dir`` (``check_drift``), or without a report when ``html_dir`` is None (``drift_verdicts``)."""
    from mlloop.monitoring.drift import check_drift, drift_verdicts

    if html_dir is None:
        return drift_verdicts(reference, current, numeric=numeric, categorical=categorical)
    return check_drift(
        reference,
        current,
        numeric=numeric,
        categorical=categorical,
        html_path=html_dir / html_name,
        **options,
    )


def _estimate(champion: MonitoredChampion, scores: Any, config: Any, day: date) -> tuple[Any, str]:
    """Return the monitored metric estimated from the champion's calibrated scores, and its note."""
    from mlloop.monitoring.estimate import estimate_performance

    calibration = getattr(champion.model, "calibration", None)
    if calibration is None or not calibration.fitted:
        return None, f"no label-free estimate: v{champion.version} has no score calibration (retrain it)"
    estimate = estimate_performance(
        scores, (config.performance_metric,), calibration=calibration, seed=day.toordinal()
    )
    return estimate.metrics[config.performance_metric], estimate.summary()


# Part of a stored calibration's key: change it when calibrate_drift's method changes, so a champion's
# thresholds are derived again rather than read back from the old method.
CALIBRATION_METHOD = "ranked-splits+block-bound"
COLUMN_BOUNDS_METHOD = "column-blocks-sqrt"


class DriftThresholds:
    """The champion's drift thresholds, calibrated on its own data and kept in storage per champion.

    ``monitoring.drift.calibrate_drift`` holds pseudo-windows of the monitored window's rows out of the
    champion's training data (or its scores on it) and checks them against the rest with the monitor's
    tests; a threshold depends only on the champion, the window's row count and the policy, so it is
    computed once and read back by later checks (``reports/monitoring/<dataset>/calibration/``).
    """

    def __init__(
        self, storage: Storage, use_case: UseCase, champion: MonitoredChampion, reference: Any, config: Any
    ) -> None:
        self.storage, self.use_case, self.champion = storage, use_case, champion
        self.reference, self.config = reference, config
        self.notes: list[str] = []
        self._higher: dict[str, bool] = {}
        self._values: dict[str, float] = {}

    def get(
        self,
        window_rows: int,
        numeric: Sequence[str],
        categorical: Sequence[str],
        *,
        frame: Any = None,
        statistic: str = "drift_share",
    ) -> float:
        """Return the threshold of ``statistic`` for a window of ``window_rows`` rows on these columns."""
        from mlloop.monitoring.drift import calibrate_drift

        config, time_column = self.config, self.use_case.time_column
        settings = {
            "method": CALIBRATION_METHOD,
            "champion": self.champion.version,
            "snapshot": self.champion.snapshot_digest,
            "statistic": statistic,
            "rows": window_rows,
            "numeric": list(numeric),
            "categorical": list(categorical),
            "false_alarm": config.drift_false_alarm_rate,
            "splits": config.drift_calibration_splits,
            "splits_by": config.drift_calibration_splits_by,
        }

        def calibrate() -> dict[str, Any]:
            calibration = calibrate_drift(
                self.reference if frame is None else frame,
                window_rows,
                numeric=numeric,
                categorical=categorical,
                statistic=statistic,
                splits=config.drift_calibration_splits,
                false_alarm=config.drift_false_alarm_rate,
                splits_by=config.drift_calibration_splits_by,
                time_column=time_column,
            )
            return {
                "threshold": calibration.threshold,
                "higher_is_drift": calibration.higher_is_drift,
                "note": calibration.describe(),
                "settings": settings,
                "calibration": calibration.to_dict(),
            }

        stored = self._stored(settings, calibrate)
        self._higher[statistic], self._values[statistic] = stored["higher_is_drift"], stored["threshold"]
        self.notes.append(stored["note"])
        return float(stored["threshold"])

    def own_spread(
        self, drift: Any, current: Any, numeric: Sequence[str], categorical: Sequence[str], top: Sequence[str]
    ) -> Any:
        """Return the window's columns judged against their own block-to-block spread (``OwnSpreadVerdict``).

        None when the reference holds too few blocks (or a column runs a p-value test): the ranked splits'
        share thresholds (``get``) judge instead, and the notes say why.
        """
        from mlloop.monitoring.drift import ColumnBounds, calibrate_column_bounds, judge_window

        settings = {
            "method": COLUMN_BOUNDS_METHOD,
            "champion": self.champion.version,
            "snapshot": self.champion.snapshot_digest,
            "rows": len(current),
            "numeric": list(numeric),
            "categorical": list(categorical),
        }

        def calibrate() -> dict[str, Any]:
            bounds = calibrate_column_bounds(
                self.reference,
                len(current),
                numeric=numeric,
                categorical=categorical,
                time_column=self.use_case.time_column,
            )
            return {"settings": settings, "bounds": bounds.to_dict()}

        bounds = ColumnBounds.from_dict(self._stored(settings, calibrate)["bounds"])
        rate = self.config.drift_false_alarm_rate
        if bounds.fallback:
            self.notes.append(
                f"{bounds.describe(rate, len(bounds.methods))}; the ranked splits judge the share"
            )
            return None
        self.notes.append(bounds.describe(rate, len(bounds.methods)))
        return judge_window(bounds, drift, rate, top=top, reference=self.reference, current=current)

    def _stored(self, settings: dict[str, Any], calibrate: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Return what is stored under ``settings``' digest; compute and store it the first time."""
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
        key = f"{REPORTS_AREA}/{self.use_case.dataset}/calibration/{digest}.json"
        if self.storage.exists(key):
            return dict(self.storage.read_json(key))
        stored = calibrate()
        self.storage.write_json(key, stored)
        return stored

    def fires(self, statistic: str, value: float) -> bool:
        """Return whether ``value`` is beyond the calibrated threshold of ``statistic`` (``get`` first)."""
        threshold = self._values[statistic]
        return value > threshold if self._higher[statistic] else value < threshold


def _performance(
    labels: Any, scores: Any, champion: MonitoredChampion, config: MonitorConfig, task: str = "binary"
) -> tuple[float | None, Any]:
    """Return the monitored metric on the window's labelled rows and the champion's band at its counts.

    (None, None) while the window lacks a class (binary) or a second target value (regression): the
    metric is undefined or says nothing. A regression band resamples the holdout at the window's rows.
    """
    from mlloop.monitoring.performance import performance_value, reference_band, regression_band

    spec = task_spec(task)
    if not spec.judgeable(labels):
        return None, None
    if not spec.counts_positives:
        band = regression_band(
            config.performance_metric,
            champion.holdout_labels,
            champion.holdout_scores,
            window_rows=len(labels),
            resamples=config.bootstrap_resamples,
            seed=config.seed,
        )
        return performance_value(config.performance_metric, labels, scores), band
    positives = int(labels.sum())
    band = reference_band(
        config.performance_metric,
        champion.holdout_labels,
        champion.holdout_scores,
        window_positives=positives,
        window_negatives=len(labels) - positives,
        resamples=config.bootstrap_resamples,
        seed=config.seed,
    )
    return performance_value(config.performance_metric, labels, scores), band


def _base_rate_reference(
    storage: Storage, use_case: UseCase, reference: Any, days: list[str], cutoff: datetime, ages: Any
) -> Any:
    """Return the champion's days' base rate weighted to the window's label maturity (None: no labels).

    The labels of those days as known at ``cutoff`` (the latest correction of each), with each one's
    delay from its event; ``ages`` are the window rows' times from their event to ``cutoff``.
    """
    import pandas as pd

    from mlloop.monitoring.performance import maturity_matched_base_rate

    known = read_known_labels(storage, use_case, days, cutoff)
    if known is None:
        return None
    key, target, when = use_case.key_column, use_case.target_column, use_case.time_column
    rows = reference[[key, when]].merge(known[[key, target, LABEL_TIME_COLUMN]], on=key, how="inner")
    delays = pd.to_datetime(rows[LABEL_TIME_COLUMN], utc=True) - pd.to_datetime(rows[when], utc=True)
    return maturity_matched_base_rate(
        rows[target].to_numpy(dtype="float64"), delays.dt.total_seconds().to_numpy(), ages
    )


def _champion_answers(
    storage: Storage, use_case: UseCase, days: list[date], version: str, now: datetime
) -> Any:
    """Return the champion ``version``'s logged answers for ``days``, labels known at the start of now's day.

    The same label cut-off as the window's snapshot (``snapshot_days``), so both judge the same labels.
    """
    from mlloop.serving.inference_log import labelled_answers

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
    result: CheckResult,
    *,
    champion_version: str,
    days: list[date],
    now: datetime,
    outcome: GuardOutcome,
    decision: MonitorDecision,
    policy: dict[str, Any],
    dry_run: bool,
) -> dict[str, Any]:
    """Write the outcome JSON and the HTML reports to storage and to MLflow (check run and timeline)."""
    drift, prediction, quality = result.drift, result.prediction, result.quality
    window = f"{days[0].isoformat()}..{days[-1].isoformat()}"
    check_id = f"{now.astimezone(UTC):%Y%m%dT%H%M%S}-{days[-1].isoformat()}"
    prefix = f"{REPORTS_AREA}/{use_case.dataset}/{check_id}"
    html = {}
    for label, report in (
        ("data_drift", drift),
        ("prediction_drift", prediction),
        ("data_quality", quality[0]),
    ):
        if report.report_path:
            key = f"{prefix}/{label}.html"
            storage.write_bytes(key, Path(report.report_path).read_bytes())
            html[label] = storage.uri(key)
    record = {
        "checked_at": now.astimezone(UTC).isoformat(),
        "action": outcome.action,
        "reason": outcome.reason,
        "window": window,
        "end_day": days[-1].isoformat(),
        "window_days": len(days),
        "champion_version": champion_version,
        "current_snapshot": result.current_snapshot,
        "dry_run": dry_run,
        "policy": policy,
        "decision": decision.to_dict(),
        "evidence": asdict(result.evidence),
        "data_drift": drift.to_dict(),
        "prediction_drift": prediction.to_dict(),
        "data_quality": quality[0].to_dict(),
        "quality_findings": quality[1],
        "reports": html,
    }
    from mlloop.registry.champion import experiment_id as get_experiment_id

    experiment_id = get_experiment_id(client, MONITORING_EXPERIMENT)
    tags = {
        MODEL_VERSION_TAG: champion_version,
        WINDOW_TAG: window,
        MONITOR_ACTION_TAG: outcome.action,
        MONITOR_REASON_TAG: outcome.reason[:4900],
        MONITOR_POLICY_VERSION_TAG: policy["version"],
        MONITOR_POLICY_FINGERPRINT_TAG: policy["fingerprint"],
    }
    run = client.create_run(
        experiment_id, run_name=f"{outcome.action} {window} v{champion_version}", tags=tags
    )
    run_id = run.info.run_id
    figures = check_figures(decision, result.evidence, outcome.action, champion_version)
    _log_figures(client, run_id, figures, days[-1])
    _log_figures(client, timeline_run_id(client, experiment_id, use_case.name), figures, days[-1])
    client.log_dict(run_id, policy["effective"], "monitoring/policy.json")
    record["mlflow_run_id"] = run_id
    client.log_dict(run_id, record, "monitoring/decision.json")
    for report in (drift, prediction, quality[0]):
        if report.report_path:
            client.log_artifact(run_id, report.report_path, "monitoring")
    client.set_terminated(run_id)
    key = f"{decisions_prefix(use_case.dataset)}/{check_id}.json"
    storage.write_json(key, record)
    summary_keys = ("action", "reason", "window", "end_day", "window_days", "champion_version", "reports")
    generic = check_figures(
        decision, result.evidence, outcome.action, champion_version, metric_key="performance"
    )
    return {k: record[k] for k in summary_keys} | {
        "use_case": use_case.name,
        # What MLflow got, plus the monitored metric's figures under names every use case shares
        # (``performance``, ``performance_interval_low``...), for one dashboard panel across use cases.
        "figures": figures | generic,
        "current_snapshot": result.current_snapshot,
        "record": storage.uri(key),
        "report_run": run_id,
        "experiment_id": experiment_id,
        "drift_share": drift.drift_share,
        "fired_rules": [r.rule for r in decision.rules if r.fired and r.retrains],
        "findings": decision.findings,
        "train_from": decision.train_from,
        "policy_version": policy["version"],
        "quality_findings": quality[1],
    }


def check_figures(
    decision: MonitorDecision,
    evidence: MonitorEvidence,
    action: str,
    champion_version: str,
    *,
    metric_key: str | None = None,
) -> dict[str, float]:
    """Return one check's figures as MLflow metrics: metric and band, base rates, drift, decision (0/1).

    Drift figures come with their calibrated thresholds. The monitored metric's figures are keyed by
    ``metric_key`` (default: the metric's own name, e.g. ``roc_auc``, ``roc_auc_interval_low``). Figures a
    check could not measure are left out (the chart shows a gap, not a zero).
    """
    rules = {rule.rule: rule for rule in decision.rules}
    figures: dict[str, Any] = {
        "drift_share": evidence.drift_share,
        "drift_threshold": evidence.drift_threshold,
        "top_drift_share": evidence.top_drift_share,
        "top_drift_threshold": evidence.top_drift_threshold,
        "prediction_drift_score": evidence.prediction_drift_score,
        "prediction_drift_threshold": evidence.prediction_drift_threshold,
        "labelled_rows": evidence.labelled_rows,
        "labelled_positives": evidence.labelled_positives,
        "decision_fire": float(decision.fire),
        "retrain_triggered": float(action == "trigger"),
        "champion_version": float(champion_version) if champion_version.isdigit() else None,
    }
    decay = rules["performance_decay"]
    if decay.figures.get("metric"):
        metric, numbers = metric_key or decay.figures["metric"], decay.figures
        low, high = numbers["interval"]
        figures |= {
            metric: numbers["estimate"],
            f"{metric}_interval_low": low,
            f"{metric}_interval_high": high,
            f"{metric}_expected": numbers["expected"],
            f"{metric}_band_edge": numbers["band_edge"],
            f"{metric}_fires_beyond": numbers["fires_beyond"],
            "positives_needed": numbers["positives_needed"],
        }
    figures["performance_decay"] = float(decay.fired)
    shift = rules["label_shift"]
    if shift.figures.get("state") == "judged":
        low, high = shift.figures["interval"]
        figures |= {
            "base_rate": shift.figures["base_rate"],
            "base_rate_interval_low": low,
            "base_rate_interval_high": high,
            "base_rate_expected": shift.figures["reference_rate"],
        }
    figures["label_shift"] = float(shift.fired)
    estimated = rules["performance_estimate"].figures
    if "estimated" in estimated:
        figures |= {
            "estimated_performance": estimated["estimated"],
            "estimated_band_low": estimated["band"][0],
            "estimated_band_high": estimated["band"][1],
        }
    return {
        key: float(value)
        for key, value in figures.items()
        if value is not None and math.isfinite(float(value))
    }


def timeline_run_id(client: Any, experiment_id: str, use_case_name: str) -> str:
    """Return the run holding every check's figures of ``use_case_name`` (created by the first check).

    One run per use case, across champions, so that each figure is one line over the monitored days.
    """
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TIMELINE_TAG}` = '{use_case_name}'",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"timeline {use_case_name}",
        tags={TIMELINE_TAG: use_case_name, USE_CASE_TAG: use_case_name},
    )
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def day_step(day: date) -> int:
    """Return the MLflow step of a monitored day: days since 1970-01-01, so steps are evenly spaced days."""
    return (day - date(1970, 1, 1)).days


def _log_figures(client: Any, run_id: str, figures: Mapping[str, float], day: date) -> None:
    """Log ``figures`` to ``run_id`` at ``day`` (step: the day number; timestamp: its midnight UTC)."""
    from mlflow.entities import Metric

    stamp = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    step = day_step(day)
    client.log_batch(run_id, metrics=[Metric(key, value, stamp, step) for key, value in figures.items()])
