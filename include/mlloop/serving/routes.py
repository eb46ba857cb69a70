"""The scoring service's HTTP routes: ``POST /predict/{use_case}``, ``POST /predict``, ``/health``,
``/ready``, ``/metrics``.

When API keys are required (``serving/auth.py``) ``/predict`` answers 401 without a valid key and 403 to
a client not allowed on that use case, before anything else (an unknown caller learns no use-case name);
``/metrics`` takes any client's key; ``/health`` and ``/ready`` stay open for probes.

Handlers find the use case (404 naming the known ones when there is none of that name; 503 when its
declaration does not load), validate the body (pydantic, from the use case's contract), queue the rows
for that use case's worker (``serving/service.py``) and answer what it scored; errors are answered with
a status and a message, never a stack trace or an input value. ``POST /predict`` is the alias of the
default use case (``MLLOOP_USE_CASE``), kept for the callers written when the service served one.
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

from mlloop.lifecycle.retire import Retirement
from mlloop.serving.auth import presented_key
from mlloop.serving.service import (
    UNKNOWN_USE_CASE,
    ApiError,
    PendingRequest,
    RouteMetrics,
    ScoringService,
    UseCaseService,
)

log = logging.getLogger("mlloop.serving")


def _error_response(
    metrics: RouteMetrics, status: int, message: str, errors: Any = None, **fields: Any
) -> Response:
    metrics.request(status)
    body: dict[str, Any] = {"detail": message, **fields}
    if errors:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _gone(use_case: UseCaseService, retired: Retirement) -> Response:
    """Answer 410 Gone for a retired use case: the message and the retirement (when, by whom, why)."""
    message = retired.gone_message(use_case.name, use_case.model_name)
    fields = {**retired.__dict__, "use_case": use_case.name}
    return _error_response(use_case.metrics, 410, message, retired=fields)


def _validation_errors(exc: ValidationError, batch: bool, use_case: str) -> tuple[str, list[dict[str, Any]]]:
    """Summarise pydantic errors without echoing input values (they may hold PII)."""
    errors = []
    for error in exc.errors(include_input=False, include_url=False)[:20]:
        loc = list(error["loc"])
        errors.append({"field": ".".join(str(p) for p in loc), "message": error["msg"]})
    first = errors[0] if errors else {"field": "", "message": "invalid body"}
    where = f" at {first['field']}" if first["field"] else ""
    shape = "a JSON array of rows" if batch else "one JSON object per row"
    return (
        f"invalid request{where}: {first['message']} (send {shape} with the fields of use case {use_case!r}; "
        "/docs lists them)",
        errors,
    )


def add_routes(app: FastAPI, service: ScoringService) -> None:
    """Register the service's routes and its error handler on ``app``."""
    settings = service.settings
    unknown = service.metrics.for_route(UNKNOWN_USE_CASE)
    unavailable = {name: service.metrics.for_route(name) for name in service.unavailable}

    async def score(request: Request, use_case: UseCaseService) -> Response:
        """Read, validate and score one request body for ``use_case``."""
        started = time.perf_counter()
        metrics = use_case.metrics
        if (retired := use_case.retired) is not None:
            return _gone(use_case, retired)
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
            rows, batch = use_case.adapters.parse(bytes(body))
        except ValidationError as exc:
            message, errors = _validation_errors(exc, body.lstrip()[:1] == b"[", use_case.name)
            return _error_response(metrics, 422, message, errors)
        if use_case.current is None:
            if (retired := use_case.retired) is not None:
                return _gone(use_case, retired)
            return _error_response(metrics, 503, use_case.no_model_message())
        future = asyncio.get_running_loop().create_future()
        assert use_case.queue is not None
        await use_case.queue.put(PendingRequest(rows, future, uuid.uuid4().hex))
        try:
            answer = await future
        except ApiError as exc:
            return _error_response(metrics, exc.status, exc.message)
        metrics.answered.inc()
        metrics.latency.observe(time.perf_counter() - started)
        if not batch:
            answer = {**answer, "prediction": answer["predictions"][0]}
            del answer["predictions"]
        return Response(orjson.dumps(answer), media_type="application/json")

    def denied(request: Request, metrics: RouteMetrics | None, use_case: str | None) -> Response | None:
        """Return the 401/403 answer when API keys are required and the request's does not allow it."""
        if service.api_keys is None:
            return None
        client = service.api_keys.authenticate(presented_key(request.headers))
        if client is None:
            status, message = 401, ("missing or invalid API key: send `Authorization: Bearer <key>` "
                                    "(a key is issued with `mlloop api-key issue`)")  # fmt: skip
        elif use_case is not None and not client.may_score(use_case):
            status, message = 403, (f"client {client.name!r} may not score use case {use_case!r}: add it "
                                    f"with `mlloop api-key issue --client {client.name} --use-case "
                                    f"{use_case}` (and its other use cases)")  # fmt: skip
        else:
            return None
        if metrics is not None:
            metrics.error("unauthenticated" if status == 401 else "forbidden")
            response = _error_response(metrics, status, message)
        else:
            response = Response(orjson.dumps({"detail": message}), status, media_type="application/json")
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="mlloop-scoring"'
        return response

    def not_served(name: str) -> Response:
        """Answer a use case that is not served: 503 when enabled but unavailable, 404 when unknown."""
        if name in service.unavailable:
            return _error_response(unavailable[name], 503, f"use case {name!r} is not served: its "
                                   f"declaration does not load: {service.unavailable[name]}")  # fmt: skip
        return _error_response(unknown, 404, f"unknown use case {name!r}; this service serves "
                               f"{service.known}: POST /predict/<use_case>")  # fmt: skip

    @app.post("/predict/{use_case}")
    async def predict(use_case: str, request: Request) -> Response:
        """Score one row (a JSON object) or a batch (a JSON array) of ``use_case``."""
        served = service.use_cases.get(use_case)
        metrics = served.metrics if served is not None else unavailable.get(use_case, unknown)
        if (refused := denied(request, metrics, use_case)) is not None:
            return refused
        if served is None:
            return not_served(use_case)
        return await score(request, served)

    @app.post("/predict")
    async def predict_default(request: Request) -> Response:
        """Alias of ``POST /predict/<default use case>`` (``MLLOOP_USE_CASE``)."""
        served = service.use_cases.get(service.default)
        metrics = served.metrics if served is not None else unavailable.get(service.default, unknown)
        if (refused := denied(request, metrics, service.default)) is not None:
            return refused
        if served is None:
            if service.default_missing is not None:
                return _error_response(unknown, 404, service.default_missing)
            return not_served(service.default)
        return await score(request, served)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        """Readiness: each use case's served version or why not; 200 once none is loading and one serves.

        The default use case's model is repeated at the top level (``model_name``, ``model_version``,
        ``threshold``, ``model_type``), as the service answered when it served one use case.
        """
        is_ready, states = service.ready()
        body: dict[str, Any] = {
            "status": "ready" if is_ready else "not ready",
            "default_use_case": service.default,
        }
        default = states.get(service.default, {})
        if default.get("status") == "serving":
            body.update({k: v for k, v in default.items() if k != "status"})
        if not is_ready:
            body["reason"] = _not_ready_reason(states)
        body["use_cases"] = states
        return JSONResponse(body, status_code=200 if is_ready else 503)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics (any client's key when keys are required)."""
        if (refused := denied(request, None, None)) is not None:
            return refused
        for use_case in service.use_cases.values():
            if use_case.inference_log is not None:
                use_case.metrics.log_pending.set(use_case.inference_log.pending)
                use_case.metrics.log_written.set(use_case.inference_log.rows_written)
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        """Answer 500 without a stack trace; the log has it."""
        name = request.path_params.get("use_case", service.default)
        metrics = service.use_cases[name].metrics if name in service.use_cases else unknown
        metrics.error("unhandled")
        log.exception("Unhandled error on %s", request.url.path)
        return _error_response(metrics, 500, f"internal error ({type(exc).__name__}); see the service log")


def _not_ready_reason(states: dict[str, dict[str, Any]]) -> str:
    """Return why the service is not ready: "loading" while any use case loads, else each one's reason."""
    if not states:
        return "no use case is enabled"
    if any(state["status"] == "loading" for state in states.values()):
        return "loading"
    return "; ".join(f"{name}: {state.get('reason', state['status'])}" for name, state in states.items())
