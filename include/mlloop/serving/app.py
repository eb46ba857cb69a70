"""The scoring service (FastAPI): the app factory and the service's lifecycle.

``create_app`` loads every enabled use case (``mlloop.usecase.enabled_use_cases``) into the service's
state (``serving/service.py``) and adds the routes (``serving/routes.py``); a declaration that does not
load is logged and answered 503 on its route, the others are served. ``run_service`` is the lifecycle:
per use case, open its inference log, start its scoring worker and the thread that follows its champion
alias; on shutdown stop them and flush every log.
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
from mlflow import MlflowClient

from mlloop.config import Settings, get_settings
from mlloop.ingestion.pii import MissingPIIKeyError, resolve_pii_key
from mlloop.orchestration.connections import use_airflow_connections
from mlloop.registry.runner import registered_model_name, use_configured_mlflow
from mlloop.serving.auth import load_api_keys
from mlloop.serving.inference_log import InferenceLog
from mlloop.serving.routes import add_routes
from mlloop.serving.schema import RequestAdapters
from mlloop.serving.service import Metrics, ScoringService, UseCaseService
from mlloop.serving.wal import WriteAheadLog
from mlloop.storage import Storage
from mlloop.tasks import task_spec
from mlloop.usecase import (
    DECLARATION_SUFFIXES,
    UseCase,
    declaration_path,
    enabled_use_cases,
    load_use_case,
    load_use_cases,
)

log = logging.getLogger("mlloop.serving")


def create_app(
    settings: Settings | None = None, *, seed_history: bool = True, client: Any | None = None
) -> FastAPI:
    """Build the service app; on startup each use case loads its champion (if any) and follows the alias.

    ``client``: the MLflow client every use case follows its alias with (default: one per use case, for
    the configured registry).
    """
    use_airflow_connections()  # compose hands the service the data root's Airflow connection (AIRFLOW_CONN_*)
    settings = settings or get_settings()
    service = build_service(settings, seed_history=seed_history)
    served = ", ".join(
        f"{u.name} (models:/{u.model_name}@{settings.serving_alias})" for u in service.use_cases.values()
    )
    app = FastAPI(
        title="mlloop scoring service",
        description=f"POST /predict/<use_case> scores one enabled use case: {served or 'none loaded'}. "
        f"POST /predict is the alias of the default use case, {service.default}.",
        lifespan=lambda app: run_service(service, client),
    )
    app.state.service = service
    add_routes(app, service)
    return app


def build_service(settings: Settings, *, seed_history: bool = True) -> ScoringService:
    """Load each enabled use case's declaration and request contract; record those that fail, and why.

    Raises:
        FileNotFoundError / ValueError: when the use-case folder or ``MLLOOP_USE_CASES`` is wrong (then
            nothing can be served), or when ``MLLOOP_USE_CASE`` is a file declaring a name the folder
            also declares.
    """
    declared, unavailable, default = _declarations(settings)
    metrics = Metrics()
    use_cases: dict[str, UseCaseService] = {}
    for name, use_case in declared.items():
        try:
            adapters = RequestAdapters(use_case, settings.serving_max_rows)
        except (ValueError, OSError) as exc:
            unavailable[name] = f"its request contract cannot be built from its schema and raw suite: {exc}"
            continue
        use_cases[name] = UseCaseService(
            settings=settings,
            use_case=use_case,
            adapters=adapters,
            model_name=registered_model_name(use_case, settings),
            metrics=metrics.for_use_case(name, calibrated=task_spec(use_case.task).calibrated),
            seed_history=seed_history,
        )
    for name, reason in unavailable.items():
        log.error("Use case %s is not served (POST /predict/%s answers 503): %s", name, name, reason)
    missing = None
    if default not in use_cases and default not in unavailable:
        missing = (
            f"POST /predict is the alias of the default use case MLLOOP_USE_CASE={settings.use_case!r}, "
            f"which is not enabled here (MLLOOP_USE_CASES={settings.use_cases!r}); send "
            f"POST /predict/<use_case> to one of {sorted({*use_cases, *unavailable})}"
        )
    log.info("Serving use cases %s; POST /predict serves %s", sorted(use_cases), default)
    api_keys = load_api_keys(settings)
    if api_keys is not None:
        log.info("API keys required on /predict and /metrics (keys file %s)", api_keys.path)
    return ScoringService(settings, metrics, use_cases, unavailable, default, missing, api_keys)


def _declarations(settings: Settings) -> tuple[dict[str, UseCase], dict[str, str], str]:
    """Return the loaded use cases (the default first), why the others are unavailable, the default's name."""
    names = enabled_use_cases()
    default = settings.use_case
    loaded: dict[str, UseCase] = {}
    unavailable: dict[str, str] = {}
    if Path(default).suffix in DECLARATION_SUFFIXES:  # a declaration file outside the folder: served too
        try:
            path = declaration_path(default)
            use_case = load_use_case(str(path))
        except (ValueError, OSError) as exc:
            default = Path(default).stem
            unavailable[default] = str(exc)
        else:
            default = use_case.name
            if default in names and declaration_path(default) != path:
                raise ValueError(
                    f"MLLOOP_USE_CASE={settings.use_case!r} declares use case {default!r}, which the "
                    f"use-case folder declares too ({declaration_path(default)}); set "
                    f"MLLOOP_USE_CASE={default} or rename one of them."
                )
            loaded[default] = use_case
    # The default first: in a conflict (two use cases declaring one dataset or model) it keeps its own.
    loaded, errors = load_use_cases(
        sorted((n for n in names if n not in unavailable), key=lambda n: n != default), loaded
    )
    unavailable.update(errors)
    return loaded, unavailable, default


@contextlib.asynccontextmanager
async def run_service(service: ScoringService, client: Any | None = None) -> AsyncIterator[None]:
    """Run every use case while the app lives: its inference log, scoring worker and champion follower.

    ``client``: the MLflow client to follow the aliases with (default: one per use case, configured).
    """
    settings = service.settings
    logging.getLogger("mlloop.features.build").setLevel(logging.WARNING)  # one line per batch is noise
    storage = Storage.from_settings(settings)
    pii_key = _pii_key(settings) if service.use_cases else None
    spool_root = None if settings.data_root.startswith("s3://") else Path(settings.data_root).parent
    workers = []
    for use_case in service.use_cases.values():
        dataset = use_case.use_case.dataset
        use_case.pii_key = pii_key
        use_case.inference_log = InferenceLog(
            storage,
            dataset,
            use_case.use_case.time_column,
            flush_rows=settings.inference_flush_rows,
            flush_seconds=settings.inference_flush_seconds,
            spool_dir=spool_root / "inference-spool" / dataset if spool_root is not None else None,
            wal=open_wal(settings, dataset),
        )
        use_case.queue = asyncio.Queue()
        workers.append(asyncio.create_task(use_case.worker(), name=f"scoring-{use_case.name}"))
        follower = threading.Thread(
            target=use_case.follow,
            args=(client if client is not None else _registry_client(),),
            name=f"champion-follower-{use_case.name}",
            daemon=True,
        )
        follower.start()
    try:
        yield
    finally:
        service.stop()
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        for use_case in service.use_cases.values():
            if use_case.inference_log is not None:
                use_case.inference_log.close()
        log.info("Scoring service stopped")


def wal_folder(settings: Settings, dataset: str) -> Path:
    """Return the local folder of ``dataset``'s inference write-ahead files (``MLLOOP_INFERENCE_WAL_DIR``)."""
    if settings.inference_wal_dir:
        root = Path(settings.inference_wal_dir).expanduser()
    elif settings.data_root.startswith("s3://"):
        root = Path.home() / ".local" / "state" / "mlloop" / "inference-wal"
    else:
        root = Path(settings.data_root.removeprefix("file://")).expanduser() / "_wal" / "inference"
    return root / dataset


def open_wal(settings: Settings, dataset: str) -> WriteAheadLog | None:
    """Open ``dataset``'s write-ahead log as the settings say (None: ``MLLOOP_INFERENCE_WAL_SYNC=off``)."""
    if settings.inference_wal_sync == "off":
        return None
    return WriteAheadLog(
        wal_folder(settings, dataset), settings.inference_wal_sync, settings.inference_wal_sync_ms / 1000
    )


def _registry_client() -> MlflowClient:
    """Return a client of the configured registry (one per follower thread: they poll concurrently)."""
    uri = use_configured_mlflow()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _pii_key(settings: Settings) -> bytes | None:
    """Return the PII key for tokenising logged PII columns (None: they are logged as null)."""
    try:
        return resolve_pii_key(settings)
    except MissingPIIKeyError as exc:
        log.warning("%s PII columns are logged as null.", exc)
        return None
