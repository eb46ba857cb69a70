"""The scoring service's process state: the served model and how it follows the alias, and the batcher.

Concurrency model: request handlers (``serving/routes.py``) validate their body and queue the rows; one
scoring worker takes everything queued at once (dynamic batching: concurrent requests share one feature
build and one model call), scores it with the model reference it read at the start of the batch,
answers each request, and appends the rows to the inference log. A new champion is swapped in between
batches, so no request is scored by two versions and none fails.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlloop.config import Settings
from mlloop.ingestion.pii import token
from mlloop.registry.champion import champion_version
from mlloop.serving.inference_log import InferenceLog
from mlloop.serving.schema import RequestAdapters
from mlloop.serving.scorer import OnlineHistory, ServedModel, load_served_model, score_rows
from mlloop.storage import Storage
from mlloop.usecase import UseCase

log = logging.getLogger("mlloop.serving")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


class Metrics:
    """The service's Prometheus metrics, in a registry of their own."""

    def __init__(self) -> None:
        """Create the metrics."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mlloop_requests", "Scoring requests by HTTP status.", ["status"], registry=r)
        self.rows = Counter("mlloop_scored_rows", "Rows scored.", registry=r)
        self.latency = Histogram(
            "mlloop_request_seconds", "Time to answer /predict.", buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_rows = Histogram(
            "mlloop_batch_rows", "Rows per model call.", buckets=(1, 2, 4, 8, 16, 32, 100, 1000), registry=r
        )
        self.scores = Histogram("mlloop_score", "Scores returned.", buckets=SCORE_BUCKETS, registry=r)
        self.errors = Counter("mlloop_errors", "Errors by kind.", ["kind"], registry=r)
        self.model = Gauge("mlloop_model_version", "Version being served.", ["model"], registry=r)
        self.swaps = Counter("mlloop_model_swaps", "Champion versions swapped in.", registry=r)
        self.log_pending = Gauge("mlloop_inference_log_pending_rows", "Rows not yet written.", registry=r)
        self.log_written = Gauge("mlloop_inference_log_written_rows", "Rows written.", registry=r)


class ApiError(Exception):
    """An error answered with ``status`` and a message (never a stack trace)."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        """Keep the status, message and per-field errors."""
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


@dataclass
class PendingRequest:
    """Rows of one request waiting for the worker, and the future its handler awaits."""

    rows: list[Any]
    future: asyncio.Future
    request_id: str


@dataclass
class Service:
    """Everything one service process holds: contract, current model, history, log, metrics."""

    settings: Settings
    use_case: UseCase
    adapters: RequestAdapters
    model_name: str
    metrics: Metrics = field(default_factory=Metrics)
    current: ServedModel | None = None
    history: OnlineHistory | None = None
    inference_log: InferenceLog | None = None
    pii_key: bytes | None = None
    queue: asyncio.Queue | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    last_check_error: str | None = None
    seed_history: bool = True

    # -- model following ------------------------------------------------------------------------------
    def refresh(self, client: Any) -> bool:
        """Load the aliased version if it differs from the served one; return whether it swapped."""
        aliased = champion_version(client, self.model_name, self.settings.serving_alias)
        if aliased is None:
            if self.current is None:
                self.last_check_error = "no champion yet"
            return False
        if self.current is not None and str(aliased.version) == self.current.version:
            return False
        served = load_served_model(client, self.model_name, self.settings.serving_alias, version=aliased)
        if self.history is None or not self.history.matches(served.spec):
            self.history = OnlineHistory.for_spec(served.spec)
            if self.history is not None and self.seed_history:
                self.history.seed(Storage.from_settings(self.settings), self.use_case)
        previous, self.current = self.current, served  # one reference: batches read it once
        self.last_check_error = None
        self.metrics.swaps.inc()
        self.metrics.model.clear()
        self.metrics.model.labels(model=self.model_name).set(float(served.version))
        log.info(
            "Serving %s v%s%s",
            self.model_name,
            served.version,
            f" (was v{previous.version})" if previous else "",
        )
        return True

    def follow(self, client: Any) -> None:
        """Load the champion, then poll the alias until stopped (a thread); a failed check keeps the model.

        The first load happens here too, not before the server starts: with the registry down, the
        service still answers /health at once and /ready says why it is not ready, instead of hanging
        in the MLflow client's retries.
        """
        wait = 0.0
        while not self.stop.wait(wait):
            wait = self.settings.serving_poll_seconds
            try:
                if self.refresh(client):
                    # What the swap loaded lives until the next swap: keep it out of the collector's
                    # full passes, which otherwise stall requests for tens of milliseconds (unfreeze
                    # first, so that the replaced model's cycles are collected, not kept forever).
                    gc.unfreeze()
                    gc.collect()
                    gc.freeze()
            except Exception as exc:
                self.metrics.errors.labels(kind="model_refresh").inc()
                self.last_check_error = f"{type(exc).__name__}: {exc}"
                served = "still serving the loaded version" if self.current else "/ready answers 503"
                log.warning("Checking the champion failed (%s); %s", exc, served)

    # -- scoring --------------------------------------------------------------------------------------
    def score_batch(self, batch: list[PendingRequest]) -> list[dict[str, Any]]:
        """Score every queued request with one model reference; return one answer per request."""
        served = self.current
        if served is None:
            raise ApiError(503, "no model loaded yet: the registry has no champion; train and promote one")
        rows = [row for pending in batch for row in pending.rows]
        scores = score_rows(served, rows, self.use_case, self.history)
        self.metrics.batch_rows.observe(len(rows))
        answers, logged, offset = [], [], 0
        key = self.use_case.key_column
        served_at = dt.datetime.now(dt.UTC)
        records = [row.__dict__ for row in rows]  # validated values; _log_row copies before changing
        for pending in batch:
            part = scores[offset : offset + len(pending.rows)]
            predictions = []
            for i, score in enumerate(part.tolist()):
                flagged = score >= served.threshold
                record = records[offset + i]
                predictions.append({key: record[key], "score": score, "flagged": flagged})
                logged.append(self._log_row(record, score, flagged, served, pending.request_id, served_at))
            offset += len(pending.rows)
            answers.append(
                {
                    "model_name": served.name,
                    "model_version": served.version,
                    "threshold": served.threshold,
                    "predictions": predictions,
                }
            )
        for score in scores.tolist():
            self.metrics.scores.observe(score)
        self.metrics.rows.inc(len(rows))
        if self.inference_log is not None:
            self.inference_log.append(logged)
        return answers

    def _log_row(
        self, record: dict[str, Any], score: float, flagged: bool, served: ServedModel, request_id: str,
        served_at: dt.datetime,
    ) -> dict[str, Any]:  # fmt: skip
        """Return the inference-log row of one answer: the input (PII tokenised) and what was answered."""
        row = dict(record)
        for column in self.use_case.pii_columns:
            row[column] = None if self.pii_key is None else token(row.get(column), self.pii_key)
        row.update(
            score=score,
            flagged=flagged,
            model_name=served.name,
            model_version=served.version,
            request_id=request_id,
            served_at=served_at,
        )
        return row

    async def worker(self) -> None:
        """Take everything queued, score it in a thread, answer each request; until cancelled."""
        assert self.queue is not None
        max_rows = self.settings.serving_max_rows
        while True:
            batch = [await self.queue.get()]
            rows = len(batch[0].rows)
            while not self.queue.empty() and rows < max_rows:
                item = self.queue.get_nowait()
                batch.append(item)
                rows += len(item.rows)
            try:
                # On the event loop itself: a worker thread would fight the loop for the GIL on every
                # request (measured: 4x slower). Requests arriving meanwhile wait in the socket buffers
                # and form the next batch.
                answers = self.score_batch(batch)
            except ApiError as exc:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            except Exception as exc:
                self.metrics.errors.labels(kind="scoring").inc()
                log.exception("Scoring a batch of %d rows failed", rows)
                error = ApiError(
                    500, f"scoring failed ({type(exc).__name__}); the service log has the details"
                )
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            for pending, answer in zip(batch, answers, strict=True):
                if not pending.future.done():
                    pending.future.set_result(answer)
            await asyncio.sleep(0)  # let the handlers answer and read new requests
