"""The scoring service's HTTP routes: ``POST /predict``, ``/health``, ``/ready``, ``/metrics``.

Handlers validate the body (pydantic, from the use case's contract), queue the rows for the service's
worker (``serving/service.py``) and answer what it scored; errors are answered with a status and a
message, never a stack trace or an input value.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from mlloop.serving.service import ApiError, Metrics, PendingRequest, Service

log = logging.getLogger("mlloop.serving")


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


def add_routes(app: FastAPI, service: Service) -> None:
    """Register the service's routes and its error handler on ``app``."""
    settings = service.settings
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
        await service.queue.put(PendingRequest(rows, future, uuid.uuid4().hex))
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
