"""The scoring service's process state: each use case's served model, how it follows the alias, its batcher.

One process serves every enabled use case (``ScoringService``); each use case is a ``UseCaseService``
with its own request contract, champion follower (a thread), scoring worker, history and inference log,
so a slow, missing or broken model of one use case never holds up another.

Concurrency model: request handlers (``serving/routes.py``) validate their body and queue the rows on
their use case's queue; that use case's worker takes everything queued at once (dynamic batching:
concurrent requests share one feature build and one model call), scores it with the model reference it
read at the start of the batch, answers each request, and appends the rows to the inference log. A new
champion is swapped in between batches, so no request is scored by two versions and none fails.
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
from mlloop.lifecycle.retire import Retirement, read_retirement
from mlloop.registry.champion import champion_version
from mlloop.serving.auth import ApiKeys
from mlloop.serving.inference_log import InferenceLog
from mlloop.serving.schema import RequestAdapters
from mlloop.serving.scorer import OnlineHistory, ServedModel, load_served_model, score_rows
from mlloop.storage import Storage
from mlloop.usecase import UseCase

log = logging.getLogger("mlloop.serving")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
# A regression's predicted values, in its target's unit (minutes, counts, amounts): symmetric steps of about
# 3x either side of zero, so one set of buckets shows the spread of any such target.
PREDICTION_BUCKETS = tuple(
    sorted({sign * base * 10**power for sign in (-1, 1) for power in range(5) for base in (1, 3)} | {0})
)
# The use_case label of requests naming no served use case: it cannot be a use-case name (those start with
# a letter), and the path's own text is never a label value (a client could create series without end).
UNKNOWN_USE_CASE = "_unknown"
NO_CHAMPION = "no champion yet"


class Metrics:
    """The service's Prometheus metrics, in a registry of their own, each labelled by use case."""

    def __init__(self) -> None:
        """Create the metrics."""
        self.registry = CollectorRegistry()
        r, uc = self.registry, ["use_case"]
        self.requests = Counter(
            "mlloop_requests", "Scoring requests by use case and HTTP status.", [*uc, "status"], registry=r
        )
        self.rows = Counter("mlloop_scored_rows", "Rows scored.", uc, registry=r)
        self.latency = Histogram(
            "mlloop_request_seconds", "Time to answer /predict.", uc, buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_rows = Histogram(
            "mlloop_batch_rows",
            "Rows per model call.",
            uc,
            buckets=(1, 2, 4, 8, 16, 32, 100, 1000),
            registry=r,
        )
        self.scores = Histogram(
            "mlloop_score", "Scores (probabilities) returned by binary use cases.", uc, buckets=SCORE_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.predictions = Histogram(
            "mlloop_prediction",
            "Values predicted by regression use cases, in the target's unit.",
            uc,
            buckets=PREDICTION_BUCKETS,
            registry=r,
        )
        self.errors = Counter("mlloop_errors", "Errors by use case and kind.", [*uc, "kind"], registry=r)
        self.model = Gauge("mlloop_model_version", "Version being served.", [*uc, "model"], registry=r)
        self.swaps = Counter("mlloop_model_swaps", "Champion versions swapped in.", uc, registry=r)
        self.log_pending = Gauge("mlloop_inference_log_pending_rows", "Rows not yet written.", uc, registry=r)
        self.log_written = Gauge("mlloop_inference_log_written_rows", "Rows written.", uc, registry=r)

    def for_use_case(self, name: str, calibrated: bool = True) -> UseCaseMetrics:
        """Return a served use case's metrics (the per-request series bound once, off the request path).

        ``calibrated``: its answers are probabilities (``mlloop_score``), else predicted values
        (``mlloop_prediction``).
        """
        return UseCaseMetrics(self, name, calibrated)

    def for_route(self, name: str) -> RouteMetrics:
        """Return the request and error counters of a route serving no model (unknown or unavailable)."""
        return RouteMetrics(self, name)


class RouteMetrics:
    """The requests and errors counted under one ``use_case`` label."""

    def __init__(self, metrics: Metrics, name: str) -> None:
        """Count under ``use_case=name``."""
        self.family, self.name = metrics, name

    def request(self, status: int) -> None:
        """Count one answered request with ``status``."""
        self.family.requests.labels(use_case=self.name, status=str(status)).inc()

    def error(self, kind: str) -> None:
        """Count one error of ``kind``."""
        self.family.errors.labels(use_case=self.name, kind=kind).inc()


class UseCaseMetrics(RouteMetrics):
    """One served use case's series of ``Metrics``."""

    def __init__(self, metrics: Metrics, name: str, calibrated: bool = True) -> None:
        """Bind the series every answered request touches."""
        super().__init__(metrics, name)
        self.answered = metrics.requests.labels(use_case=name, status="200")
        self.rows = metrics.rows.labels(use_case=name)
        self.latency = metrics.latency.labels(use_case=name)
        self.batch_rows = metrics.batch_rows.labels(use_case=name)
        self.scores = (metrics.scores if calibrated else metrics.predictions).labels(use_case=name)
        self.swaps = metrics.swaps.labels(use_case=name)
        self.log_pending = metrics.log_pending.labels(use_case=name)
        self.log_written = metrics.log_written.labels(use_case=name)

    def served(self, model: str, version: str) -> None:
        """Record the version of ``model`` now served."""
        self.family.model.labels(use_case=self.name, model=model).set(float(version))


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
class UseCaseService:
    """Everything the process holds for one use case: contract, current model, history, log, metrics."""

    settings: Settings
    use_case: UseCase
    adapters: RequestAdapters
    model_name: str
    metrics: UseCaseMetrics
    current: ServedModel | None = None
    history: OnlineHistory | None = None
    inference_log: InferenceLog | None = None
    pii_key: bytes | None = None
    queue: asyncio.Queue | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    last_check_error: str | None = None
    seed_history: bool = True
    retired: Retirement | None = None  # read from the model's tags when it has no champion

    @property
    def name(self) -> str:
        """Return the use case's name (its route is ``POST /predict/<name>``)."""
        return self.use_case.name

    def readiness(self) -> dict[str, Any]:
        """Return what ``/ready`` says of this use case: the served version, or why there is none."""
        current, retired = self.current, self.retired  # the follower thread may replace them
        if retired is not None:
            reason = retired.gone_message(self.name, self.model_name)
            return {"status": "retired", "model_name": self.model_name, "reason": reason}
        if current is not None:
            return {"status": "serving", "model_name": current.name, "model_version": current.version,
                    "threshold": current.threshold, "model_type": current.model_type}  # fmt: skip
        if self.last_check_error is None:
            return {"status": "loading", "model_name": self.model_name, "reason": "loading"}
        status = "no champion" if self.last_check_error == NO_CHAMPION else "registry error"
        return {"status": status, "model_name": self.model_name, "reason": self.last_check_error}

    def no_model_message(self) -> str:
        """Return the 503 detail of a request arriving before this use case has a model."""
        why = self.last_check_error or "the first check of the registry has not finished"
        return (
            f"no model loaded yet for use case {self.name!r} ({why}): the registry has no champion of "
            f"{self.model_name!r} loaded here; train and promote one (make demo, or its train DAG)"
        )

    def unavailable_error(self) -> ApiError:
        """Return the error of a request finding no model: 410 Gone when retired, else 503."""
        retired = self.retired
        if retired is not None:
            return ApiError(410, retired.gone_message(self.name, self.model_name))
        return ApiError(503, self.no_model_message())

    # -- model following ------------------------------------------------------------------------------
    def refresh(self, client: Any) -> bool:
        """Load the aliased version if it differs from the served one; return whether it swapped.

        With no version under the alias, a model tagged retired (``mlloop.lifecycle.retire``) stops being
        served: its route answers 410 Gone from then on.
        """
        aliased = champion_version(client, self.model_name, self.settings.serving_alias)
        if aliased is None:
            self.retired = read_retirement(client, self.model_name)
            if self.retired is not None:
                if self.current is not None:
                    log.info("%s was retired; no longer serving v%s", self.name, self.current.version)
                self.current, self.last_check_error = None, None
            elif self.current is None:
                self.last_check_error = NO_CHAMPION
            return False
        self.retired = None
        if self.current is not None and str(aliased.version) == self.current.version:
            return False
        served = load_served_model(
            client, self.model_name, self.settings.serving_alias, version=aliased, task=self.use_case.task
        )
        if self.history is None or not self.history.matches(served.spec):
            self.history = OnlineHistory.for_spec(served.spec)
            if self.history is not None and self.seed_history:
                self.history.seed(Storage.from_settings(self.settings), self.use_case)
        previous, self.current = self.current, served  # one reference: batches read it once
        self.last_check_error = None
        self.metrics.swaps.inc()
        self.metrics.served(self.model_name, served.version)
        log.info(
            "Serving %s with %s v%s%s",
            self.use_case.name,
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
                self.metrics.error("model_refresh")
                self.last_check_error = f"{type(exc).__name__}: {exc}"
                served = "still serving the loaded version" if self.current else "its route answers 503"
                log.warning("Checking the champion of %s failed (%s); %s", self.use_case.name, exc, served)

    # -- scoring --------------------------------------------------------------------------------------
    def score_batch(self, batch: list[PendingRequest]) -> list[dict[str, Any]]:
        """Score every queued request with one model reference; return one answer per request."""
        served = self.current
        if served is None:
            raise self.unavailable_error()
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
                answer = served.task.served_row(score, served.threshold)
                record = records[offset + i]
                predictions.append({key: record[key], **answer})
                flagged = answer.get("flagged")
                logged.append(self._log_row(record, score, flagged, served, pending.request_id, served_at))
            offset += len(pending.rows)
            # A regression answer carries the predicted value and no threshold (there is no decision).
            threshold = {"threshold": served.threshold} if served.task.calibrated else {}
            answers.append(
                {
                    "model_name": served.name,
                    "model_version": served.version,
                    **threshold,
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
        self, record: dict[str, Any], score: float, flagged: bool | None, served: ServedModel,
        request_id: str, served_at: dt.datetime,
    ) -> dict[str, Any]:  # fmt: skip
        """Return the inference-log row of one answer: the input (PII tokenised) and what was answered.

        ``score`` is the served number (a regression model's predicted value), so monitoring reads every
        task's answers from one column; ``flagged`` is None where there is no decision.
        """
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
                self.metrics.error("scoring")
                log.exception("Scoring a batch of %d rows of %s failed", rows, self.use_case.name)
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


@dataclass
class ScoringService:
    """The process: every enabled use case's ``UseCaseService``, those that failed to load, the default.

    ``unavailable`` maps a use case whose declaration does not load (or conflicts with another) to why;
    its route answers 503 with that reason while the others are served. ``default`` is the use case
    ``POST /predict`` serves (``MLLOOP_USE_CASE``); ``default_missing`` says why that alias serves none.
    """

    settings: Settings
    metrics: Metrics
    use_cases: dict[str, UseCaseService]
    unavailable: dict[str, str]
    default: str
    default_missing: str | None = None
    api_keys: ApiKeys | None = None

    @property
    def known(self) -> list[str]:
        """Return every enabled use case's name, served or not, sorted."""
        return sorted({*self.use_cases, *self.unavailable})

    def ready(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Return whether the process is ready (none still loading, one serving) and each use case's state."""
        states = {name: service.readiness() for name, service in self.use_cases.items()}
        for name, reason in self.unavailable.items():
            states[name] = {"status": "invalid declaration", "reason": reason}
        statuses = [state["status"] for state in states.values()]
        return "loading" not in statuses and "serving" in statuses, dict(sorted(states.items()))

    def stop(self) -> None:
        """Tell every champion follower to stop."""
        for service in self.use_cases.values():
            service.stop.set()
