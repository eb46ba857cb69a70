"""What each Asset event carries: one typed builder and reader per Asset, used by emitter and reader alike.

An event's ``extra`` is a JSON object that Airflow stores and hands to the runs it starts. The DAG that
emits an Asset builds it with ``<Payload>(...).to_extra()``; whoever reads it (``train_<use case>`` deciding
whether and what to train, the tests) parses it with ``<Payload>.from_extra(extra)``. So a field is named
once, here. No Airflow import: ``include/`` code and tests read payloads without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidatedBatch:
    """Payload of ``validated_<use case>``: one batch that passed its contract (``ingest_<use case>``).

    ``start_training`` is the ingest run's Param: off, the ``train_<use case>`` run it starts skips.
    """

    day: str
    batch_id: str
    uri: str
    rows: int
    validation_report: str
    start_training: bool = True

    def to_extra(self) -> dict[str, Any]:
        """Return the event extra."""
        return asdict(self)

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> ValidatedBatch:
        """Read an event extra; a missing ``start_training`` means training (events before the Param)."""
        return cls(
            day=str(extra.get("day")),
            batch_id=str(extra.get("batch_id", "")),
            uri=str(extra.get("uri", "")),
            rows=int(extra.get("rows") or 0),
            validation_report=str(extra.get("validation_report", "")),
            start_training=bool(extra.get("start_training", True)),
        )


@dataclass(frozen=True)
class ChampionMoved:
    """Payload of ``champion_model_<use case>``: the champion alias moved (promotion or rollback).

    ``gate_report`` is set by a promotion, ``rollback`` by a rollback.
    """

    model: str
    version: str
    previous: str | None
    gate_report: str | None = None
    rollback: bool = False

    def to_extra(self) -> dict[str, Any]:
        """Return the event extra (without the field the other emitter sets)."""
        extra: dict[str, Any] = {"model": self.model, "version": self.version, "previous": self.previous}
        if self.gate_report is not None:
            extra["gate_report"] = self.gate_report
        if self.rollback:
            extra["rollback"] = True
        return extra

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], *, gate_report: str | None = None, rollback: bool = False
    ) -> ChampionMoved:
        """Build from an alias-move audit record (``to_version``, ``from_version``)."""
        return cls(
            model=record["model"],
            version=record["to_version"],
            previous=record["from_version"],
            gate_report=gate_report,
            rollback=rollback,
        )

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> ChampionMoved:
        """Read an event extra."""
        return cls(
            model=str(extra["model"]),
            version=str(extra["version"]),
            previous=extra.get("previous"),
            gate_report=extra.get("gate_report"),
            rollback=bool(extra.get("rollback", False)),
        )


@dataclass(frozen=True)
class RetrainRequest:
    """Payload of ``retrain_requested_<use case>``: monitoring asks the train DAG to retrain, and why.

    ``window`` is the monitored window (``first..last``), ``end_day`` the day the new training window
    ends at; ``train_from``, after a performance decay,
    the day the relationship changed (the window starts there).
    """

    reason: str
    window: str
    end_day: str
    train_from: str | None = None
    monitor_record: str | None = None
    report_run: str | None = None
    requested_at: str = ""

    def to_extra(self) -> dict[str, Any]:
        """Return the event extra."""
        return asdict(self)

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], now: datetime) -> RetrainRequest:
        """Build from a monitoring summary that decided to trigger, requested at ``now``."""
        return cls(
            reason=summary["reason"],
            window=str(summary["window"]),
            end_day=summary["end_day"],
            train_from=summary.get("train_from"),
            monitor_record=summary.get("record"),
            report_run=summary.get("report_run"),
            requested_at=now.astimezone(UTC).isoformat(),
        )

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> RetrainRequest:
        """Read an event extra."""
        return cls(
            reason=str(extra.get("reason", "")),
            window=str(extra.get("window", "")),
            end_day=str(extra.get("end_day")),
            train_from=extra.get("train_from"),
            monitor_record=extra.get("monitor_record"),
            report_run=extra.get("report_run"),
            requested_at=str(extra.get("requested_at", "")),
        )


@dataclass(frozen=True)
class TrainingTrigger:
    """What started a train DAG run: the retrain requests and validated batches among its events."""

    requests: tuple[RetrainRequest, ...] = ()
    batches: tuple[ValidatedBatch, ...] = ()

    @classmethod
    def from_extras(
        cls, requests: Iterable[Mapping[str, Any]], batches: Iterable[Mapping[str, Any]]
    ) -> TrainingTrigger:
        """Read the extras of the run's retrain-request and validated-batch events."""
        trigger = cls(
            requests=tuple(RetrainRequest.from_extra(extra) for extra in requests),
            batches=tuple(ValidatedBatch.from_extra(extra) for extra in batches),
        )
        if (request := trigger.request) is not None:
            log.info(
                "Retrain requested by monitoring for window %s: %s (record %s)",
                request.window,
                request.reason,
                request.monitor_record,
            )
        return trigger

    @property
    def request(self) -> RetrainRequest | None:
        """Return the newest retrain request (None when monitoring asked for none)."""
        return max(self.requests, key=lambda r: r.requested_at, default=None)

    def declined(self) -> str | None:
        """Return why training was declined: every batch that started the run came with start_training off.

        None (train) when any batch asks for training or when no batch started the run.
        """
        if not self.batches or any(batch.start_training for batch in self.batches):
            return None
        days = ", ".join(sorted(batch.day for batch in self.batches))
        return (
            f"the batch(es) that started this run ({days}) were ingested with start_training off; "
            "trigger this train DAG by hand (or let the monitor DAG request a retrain) to train on them"
        )

    def skip_reason(self, *, asset_triggered: bool) -> str | None:
        """Return why an Asset-started run skips, or None to train.

        A run started by hand always trains, and so does one that monitoring asked for: only batches that
        all declined training (ingested with start_training off) make a run skip.
        """
        if not asset_triggered or self.request is not None:
            return None
        return self.declined()
