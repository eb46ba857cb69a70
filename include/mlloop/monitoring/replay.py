"""Replay monitoring decisions offline: what the monitor DAG runs, on generated days, without a stack.

For an anchor day (the platform's "today"), ``replay_demo`` lands the demo's days into a storage (generator,
raw suite, publish: the ingestion code), snapshots the champion's window with the labels known at the
anchor, trains the champion with the project's trainer, and checks each monitored day as the monitor DAG
does (``monitoring.runner.check_evidence``, ``decide``, ``guard``). No Airflow, no MLflow server: what
differs from the running stack is only where the model and the records live. Used by the test that the
demo's story holds on any date and by ``bench/monitor_calibration.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from mlloop.monitoring.runner import MonitoredChampion
from mlloop.storage import Storage, partition_key
from mlloop.usecase import UseCase

log = logging.getLogger("mlloop.monitoring.replay")


@dataclass
class ReplayCheck:
    """One monitored day: what the monitor decided and why."""

    day: str
    scenario: str
    action: str
    reason: str
    fired_rules: list[str] = field(default_factory=list)  # rules that fired and would retrain
    findings: list[str] = field(default_factory=list)  # rules that fired as findings only
    evidence: dict[str, Any] = field(default_factory=dict)
    unconfirmed: str = ""  # why a fire on prediction drift alone waits for the next check ("": it does not)

    @property
    def retrains(self) -> bool:
        """Return whether the decision asks for a retrain (before the cooldown and budget guards)."""
        return bool(self.fired_rules) and not self.unconfirmed


def land_days(
    storage: Storage, use_case: UseCase, days: Sequence[tuple[date, str]], rows: int | None = None
) -> list[str]:
    """Land, validate and publish each (day, scenario) not yet validated; return the days that passed.

    A day the raw suite rejects is quarantined (as in ``ingest_<use case>``) and left out.
    """
    from mlloop.ingestion.batches import (
        BatchRejectedError,
        land_batch,
        publish_validated,
        validate_landed_batch,
    )

    passed = []
    for day, scenario in days:
        if storage.list(partition_key("validated", use_case.dataset, day)):
            passed.append(day.isoformat())
            continue
        batch = land_batch(storage, use_case, day, rows=rows, scenario=scenario)
        try:
            validate_landed_batch(storage, use_case, batch)
        except BatchRejectedError:
            continue
        publish_validated(storage, use_case, batch, b"replay-pii-key-0123456789abcdef")
        passed.append(day.isoformat())
    return passed


def train_champion(
    storage: Storage, use_case: UseCase, days: Sequence[str], anchor: date, *, seed: int = 42
) -> MonitoredChampion:
    """Snapshot ``days`` with the labels known on ``anchor`` and train the champion as the train DAG does."""
    from mlloop.training.fit import TrainConfig, fit_model, load_training_data
    from mlloop.training.windows import snapshot_days

    manifest = snapshot_days(
        storage,
        use_case,
        [date.fromisoformat(d) for d in days],
        as_of=datetime.combine(anchor, time(12), tzinfo=UTC),  # snapshot_days applies the cut-off
    )
    config = TrainConfig(snapshot=manifest.digest, seed=seed)
    data = load_training_data(storage, config, task=use_case.task)
    fitted = fit_model(data, config, "cpu")
    x_holdout, y_holdout = data.parts["holdout"]
    ranked = sorted(fitted.importance, key=lambda c: fitted.importance[c], reverse=True)
    return MonitoredChampion(
        version="1",
        model=fitted.model,
        snapshot_digest=manifest.digest,
        top_features=ranked,
        holdout_labels=y_holdout,
        holdout_scores=fitted.model.scores(x_holdout),
    )


def demo_anchor_days(anchor: date) -> tuple[list[tuple[date, str]], list[tuple[date, str]]]:
    """Return the demo's (day, scenario) pairs for ``anchor``: the ingested days (its week of history
    first), then the monitored ones."""
    from mlloop.ops.demo import demo_days, history_days, monitor_days

    ingested = [(date.fromisoformat(d), s) for d, s in history_days(anchor) + demo_days(anchor)]
    monitored = [(date.fromisoformat(d), s) for d, s in monitor_days(anchor)]
    return ingested, monitored


def anchors(first: date, count: int, step_days: int) -> list[date]:
    """Return ``count`` anchor days from ``first``, ``step_days`` apart."""
    return [first + timedelta(days=i * step_days) for i in range(count)]


def check_days(
    storage: Storage,
    use_case: UseCase,
    champion: MonitoredChampion,
    monitored: Sequence[tuple[date, str]],
    checked_at: Sequence[datetime],
    *,
    overrides: Mapping[str, Any] | None = None,
) -> list[ReplayCheck]:
    """Check each monitored day alone against ``champion``, in order, as ``monitor_<use case>`` would.

    Each day is checked at its time in ``checked_at`` (which labels are known), with the guard's memory
    of the checks before it; ``fired_rules`` are the decision's retraining rules, before the guard.
    """
    from mlloop.monitoring.decision import (
        TriggerRecord,
        change_seen_from,
        decide,
        guard,
        load_monitor_config,
        unconfirmed,
    )
    from mlloop.monitoring.runner import check_evidence, size_window

    config = load_monitor_config(overrides, use_case=use_case)
    history: list[TriggerRecord] = []
    checks = []
    for (day, scenario), now in zip(monitored, checked_at, strict=True):
        sized = size_window(storage, use_case, champion, [day], config)
        if not sized.ready:
            checks.append(ReplayCheck(day.isoformat(), scenario, "quiet", sized.describe()))
            continue
        days = list(sized.days)
        result = check_evidence(storage, use_case, champion, days, now=now, config=config, reports=False)
        evidence = replace(result.evidence, change_seen_from=change_seen_from(history, champion.version))
        decision = decide(evidence, config)
        window_end = days[-1].isoformat()
        waiting = unconfirmed(decision, history, champion.version, config, window_end)
        outcome = guard(
            decision,
            now=now,
            history=history,
            training_active=False,
            dry_run=False,
            config=config,
            champion_version=champion.version,
            window_end=window_end,
        )
        fired = decision.retraining_rules
        history.append(
            TriggerRecord(
                now,
                outcome.action,
                outcome.reason,
                champion.version,
                decision.train_from,
                tuple(fired),
                window_end,
            )
        )
        log.info("Checked %s (%s) on %s: %s: %s", day, scenario, now, outcome.action, outcome.reason[:200])
        checks.append(
            ReplayCheck(
                day.isoformat(),
                scenario,
                outcome.action,
                outcome.reason,
                fired,
                decision.findings,
                asdict(evidence),
                waiting or "",
            )
        )
    return checks


def replay_demo(
    storage: Storage,
    use_case: UseCase,
    anchor: date,
    *,
    rows: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[ReplayCheck]:
    """Replay the demo with ``anchor`` as today: land its days, train the champion, check each monitored day.

    As in ``make demo``: the champion learns the clean days of its default window (the newest validated
    days up to ``label_maturity_days`` before the anchor), then each monitored day is checked alone, in
    order, on the anchor.
    """
    ingested, monitored = demo_anchor_days(anchor)
    window_end = (anchor - timedelta(days=use_case.label_maturity_days)).isoformat()
    validated = [d for d in land_days(storage, use_case, ingested, rows) if d <= window_end]
    champion = train_champion(storage, use_case, validated[-use_case.training.window_days :], anchor)
    land_days(storage, use_case, monitored, rows)
    noon = datetime.combine(anchor, time(12), tzinfo=UTC)
    checked_at = [noon + timedelta(minutes=10 * i) for i in range(len(monitored))]
    return check_days(storage, use_case, champion, monitored, checked_at, overrides=overrides)
