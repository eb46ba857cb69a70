"""The scoring service (FastAPI): the app factory and the service's lifecycle.

``create_app`` builds the service's state (``serving/service.py``) and its routes (``serving/routes.py``);
``run_service`` is the lifecycle around them: open the registry client and the inference log, start the
scoring worker and the thread that follows the champion alias, and close both on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from mlloop.config import Settings, get_settings
from mlloop.ingestion.pii import MissingPIIKeyError, resolve_pii_key
from mlloop.orchestration.connections import use_airflow_connections
from mlloop.registry.runner import registered_model_name, registry_client_and_model
from mlloop.serving.inference_log import InferenceLog
from mlloop.serving.routes import add_routes
from mlloop.serving.schema import RequestAdapters
from mlloop.serving.service import Service
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

log = logging.getLogger("mlloop.serving")


def create_app(
    settings: Settings | None = None, *, seed_history: bool = True, client: Any | None = None
) -> FastAPI:
    """Build the service app; on startup it loads the champion (if any) and starts following the alias."""
    use_airflow_connections()  # compose hands the service the data root's Airflow connection (AIRFLOW_CONN_*)
    settings = settings or get_settings()
    use_case = load_use_case(settings.use_case)
    model_name = registered_model_name(settings, use_case)
    service = Service(
        settings=settings,
        use_case=use_case,
        adapters=RequestAdapters(use_case, settings.serving_max_rows),
        model_name=model_name,
        seed_history=seed_history,
    )
    app = FastAPI(
        title="mlloop scoring service",
        description=f"Scores {use_case.dataset} with models:/{model_name}@{settings.serving_alias}.",
        lifespan=lambda app: run_service(service, client),
    )
    app.state.service = service
    add_routes(app, service)
    return app


@contextlib.asynccontextmanager
async def run_service(service: Service, client: Any | None = None) -> AsyncIterator[None]:
    """Run the service while the app lives: inference log, scoring worker, champion follower.

    ``client``: the MLflow client to follow the alias with (default: the configured registry's).
    """
    settings, use_case = service.settings, service.use_case
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
    follower = threading.Thread(target=service.follow, args=(client,), name="champion-follower", daemon=True)
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


def _pii_key(settings: Settings) -> bytes | None:
    """Return the PII key for tokenising logged PII columns (None: they are logged as null)."""
    try:
        return resolve_pii_key(settings)
    except MissingPIIKeyError as exc:
        log.warning("%s PII columns are logged as null.", exc)
        return None
