"""The DAG factory: six DAGs per enabled use-case declaration (called by ``dags/use_cases.py``).

Each declaration in the use-case folder (``MLLOOP_USECASES_DIR``, default ``include/mlloop/usecases``;
``MLLOOP_USE_CASES`` selects some) gets ``ingest_<name>``, ``train_<name>``, ``monitor_<name>``,
``rollback_<name>``, ``housekeeping_<name>``, ``erase_<name>`` and ``retire_<name>``, tagged with the
name, with their own Assets, Params and pages written from the declaration. Adding a use case is adding a
declaration and its suites: no code.

Airflow records import errors per file, not per DAG (apache/airflow discussion #70119), so one bad
declaration cannot be an import error without hiding every other use case's DAGs. Instead its DAG
ids still appear, tagged ``invalid-declaration``, unscheduled, with the error (file, key, fix) as their
page, and a run fails with the same message; the other use cases load as usual.
"""

from __future__ import annotations

import logging
import re

from airflow.sdk import DAG, dag, task

from mlloop.config import get_settings
from mlloop.orchestration.factory.erasure import build_erasure_dag
from mlloop.orchestration.factory.housekeeping import build_housekeeping_dag
from mlloop.orchestration.factory.ingest import build_ingest_dag
from mlloop.orchestration.factory.monitor import build_monitor_dag
from mlloop.orchestration.factory.retire import build_retire_dag
from mlloop.orchestration.factory.rollback import build_rollback_dag
from mlloop.orchestration.factory.train import build_train_dag
from mlloop.orchestration.names import dag_names
from mlloop.orchestration.params import dag_arguments
from mlloop.usecase import UseCase, enabled_use_cases, load_use_cases

log = logging.getLogger(__name__)

INVALID_TAG = "invalid-declaration"


def build_use_case_dags(use_case: UseCase) -> list[DAG]:
    """Return the DAGs of one valid declaration."""
    return [
        build_ingest_dag(use_case),
        build_train_dag(use_case),
        build_monitor_dag(use_case),
        build_rollback_dag(use_case),
        build_housekeeping_dag(use_case),
        build_erasure_dag(use_case),
        build_retire_dag(use_case),
    ]


def invalid_declaration_dags(name: str, error: str) -> list[DAG]:
    """Return stand-ins for the DAGs of a declaration that does not load: its error is their page and run."""
    page = (
        f"### Use case `{name}`: its declaration is invalid\n\n"
        f"These DAGs run nothing until the declaration loads again:\n\n```\n{error}\n```\n\n"
        "Fix the declaration (check it with `mlloop use-cases check`); the DAGs come back on the next parse."
    )
    built = []
    for dag_id in dag_names(re.sub(r"[^A-Za-z0-9_]", "_", name)).dags:  # a file stem may not fit an id

        @dag(
            dag_id=dag_id,
            schedule=None,
            **dag_arguments(name, INVALID_TAG, doc_md=page, retries=0),
        )
        def invalid() -> None:
            """Fail with the declaration's error."""

            @task
            def declaration_error() -> None:
                """Fail naming the declaration's file, key and fix."""
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(f"use case {name!r} has an invalid declaration: {error}")

            declaration_error()

        built.append(invalid())
    return built


def build_dags() -> dict[str, DAG]:
    """Return every enabled use case's DAGs by id; a declaration that fails to load gets stand-ins.

    Raises:
        ValueError: when ``MLLOOP_USE_CASES`` names an undeclared use case, or when ``MLLOOP_MODEL_NAME``
            (which renames the default use case's model) is another enabled use case's model_name. A use
            case whose dataset or model_name an earlier one declares gets stand-ins, like an invalid one.
    """
    names = enabled_use_cases()
    loaded, errors = load_use_cases(names)
    settings = get_settings()
    clash = [n for n, u in loaded.items() if n != settings.use_case and u.model_name == settings.model_name]
    if settings.model_name and clash:
        raise ValueError(
            f"MLLOOP_MODEL_NAME={settings.model_name!r} renames the model of the default use case "
            f"{settings.use_case!r}, but use case {clash[0]!r} registers that name too; choose another name "
            "or unset MLLOOP_MODEL_NAME"
        )
    dags: dict[str, DAG] = {}
    for name in names:
        if name in errors:
            log.error("Use case %s: declaration invalid, its DAGs show the error: %s", name, errors[name])
            built = invalid_declaration_dags(name, errors[name])
        else:
            built = build_use_case_dags(loaded[name])
        dags.update((d.dag_id, d) for d in built)
    return dags
