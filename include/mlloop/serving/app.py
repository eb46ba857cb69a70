"""The scoring service (FastAPI): ``POST /predict``, ``/health``, ``/ready``, ``/metrics``.

Concurrency model: request handlers validate their body (pydantic, from the use case's contract) and
queue the rows; one scoring worker takes everything queued at once (dynamic batching: concurrent
requests share one feature build and one model call), scores it in a thread with the model reference
it read at the start of the batch, answers each request, and appends the rows to the inference log.
A new champion is swapped in between batches, so no request is scored by two versions and none fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import ValidationError

from mlloop.config import Settings
from mlloop.ingestion.pii import token
from mlloop.serving.inference_log import InferenceLog
from mlloop.serving.schema import RequestAdapters
from mlloop.serving.scorer import OnlineHistory, ServedModel, load_served_model, score_rows
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
class _Pending:
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
        from mlloop.registry.champion import champion_version

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
                from mlloop.storage import Storage

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
    def score_batch(self, batch: list[_Pending]) -> list[dict[str, Any]]:
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


def _error_response(metrics: Metrics, status: int, message: str, errors: Any = None) -> Response:
    metrics.requests.labels(status=str(status)).inc()
    body: dict[str, Any] = {"detail": message}
    if errors:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _validation_errors(exc: ValidationError, batch: bool) -> tuple[str, list[dict[str, Any]]]:
    """Summarise pydantic errors without echoing input values (they may hold PII)."""
    errors = []
    for error in exc.errors(include_input=False, include_url=False)[:20]:
        loc = list(error["loc"])
        errors.append({"field": ".".join(str(p) for p in loc), "message": error["msg"]})
    first = errors[0] if errors else {"field": "", "message": "invalid body"}
    where = f" at {first['field']}" if first["field"] else ""
    shape = "a JSON array of transactions" if batch else "one JSON object per transaction"
    return f"invalid request{where}: {first['message']} (send {shape} with the documented fields)", errors


def create_app(
    settings: Settings | None = None, *, seed_history: bool = True, client: Any | None = None
) -> FastAPI:
    """Build the service app; on startup it loads the champion (if any) and starts following the alias."""
    from mlloop.config import get_settings
    from mlloop.registry.runner import registry_client_and_model
    from mlloop.usecase import load_use_case

    settings = settings or get_settings()
    use_case = load_use_case(settings.use_case)
    model_name = settings.model_name or use_case.model_name
    service = Service(
        settings=settings,
        use_case=use_case,
        adapters=RequestAdapters(use_case, settings.serving_max_rows),
        model_name=model_name,
    )
    service.seed_history = seed_history

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal client
        from mlloop.storage import Storage

        logging.getLogger("mlloop.features.build").setLevel(logging.WARNING)  # one line per batch is noise
        if client is None:
            client, _ = registry_client_and_model()
        storage = Storage.from_settings(settings)
        service.pii_key = _pii_key(settings)
        service.inference_log = InferenceLog(
            storage,
            use_case.dataset,
            use_case.time_column,
            flush_rows=settings.inference_flush_rows,
            flush_seconds=settings.inference_flush_seconds,
            spool_dir=Path(settings.data_root).parent / "inference-spool"
            if not settings.data_root.startswith("s3://")
            else None,
        )
        service.queue = asyncio.Queue()
        worker = asyncio.create_task(service.worker())
        follower = threading.Thread(
            target=service.follow, args=(client,), name="champion-follower", daemon=True
        )
        follower.start()
        try:
            yield
        finally:
            service.stop.set()
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            service.inference_log.close()
            log.info("Scoring service stopped")

    app = FastAPI(
        title="mlloop scoring service",
        description=f"Scores {use_case.dataset} with models:/{model_name}@{settings.serving_alias}.",
        lifespan=lifespan,
    )
    app.state.service = service
    metrics = service.metrics

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        """Score one transaction (a JSON object) or a batch (a JSON array)."""
        started = time.perf_counter()
        limit = settings.serving_max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error_response(metrics, 413, f"request body of {declared} bytes exceeds {limit} bytes; "
                                   f"send at most {settings.serving_max_rows} rows per request")  # fmt: skip
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return _error_response(metrics, 413, f"request body exceeds {limit} bytes; send at most "
                                       f"{settings.serving_max_rows} rows per request")  # fmt: skip
        try:
            rows, batch = service.adapters.parse(bytes(body))
        except ValidationError as exc:
            message, errors = _validation_errors(exc, body.lstrip()[:1] == b"[")
            return _error_response(metrics, 422, message, errors)
        if service.current is None:
            return _error_response(metrics, 503, "no model loaded yet: the registry has no champion; "
                                   "train and promote one (make demo)")  # fmt: skip
        future = asyncio.get_running_loop().create_future()
        assert service.queue is not None
        await service.queue.put(_Pending(rows, future, uuid.uuid4().hex))
        try:
            answer = await future
        except ApiError as exc:
            return _error_response(metrics, exc.status, exc.message)
        metrics.requests.labels(status="200").inc()
        metrics.latency.observe(time.perf_counter() - started)
        if not batch:
            answer = {**answer, "prediction": answer["predictions"][0]}
            del answer["predictions"]
        return Response(orjson.dumps(answer), media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        """Readiness: a model is loaded (503 naming why not otherwise)."""
        current = service.current
        if current is None:
            return JSONResponse(
                {"status": "not ready", "reason": service.last_check_error or "loading"}, status_code=503
            )
        return JSONResponse(
            {"status": "ready", "model_name": current.name, "model_version": current.version,
             "threshold": current.threshold, "model_type": current.model_type}
        )  # fmt: skip

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics."""
        if service.inference_log is not None:
            metrics.log_pending.set(service.inference_log.pending)
            metrics.log_written.set(service.inference_log.rows_written)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        """Answer 500 without a stack trace; the log has it."""
        metrics.errors.labels(kind="unhandled").inc()
        log.exception("Unhandled error on %s", request.url.path)
        return _error_response(metrics, 500, f"internal error ({type(exc).__name__}); see the service log")

    return app


def _pii_key(settings: Settings) -> bytes | None:
    """Return the PII key for tokenising logged PII columns (None: they are logged as null)."""
    from mlloop.ingestion.pii import MissingPIIKeyError, resolve_pii_key

    try:
        return resolve_pii_key(settings)
    except MissingPIIKeyError as exc:
        log.warning("%s PII columns are logged as null.", exc)
        return None
