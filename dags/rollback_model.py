"""
### Roll back the served model

Moves the `champion` alias of the registered model back to an earlier version, and records who did it
and why in the `mlloop-audit` MLflow experiment. The version that was champion becomes `previous`, so a
rollback can itself be undone by running this DAG again with no version.

- **version**: the version to serve. Empty: the version holding the `previous` alias.
- **force**: roll back to a version that never passed the promotion gate (refused otherwise).
- **reason**: why; kept in the audit record.

Manual only. Emits the `champion_model` Asset; the scoring service follows the alias, so serving changes
without a deploy.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

from mlloop.orchestration.assets import CHAMPION_MODEL
from mlloop.orchestration.links import ModelVersionLink, with_links
from mlloop.orchestration.names import ROLLBACK_DAG
from mlloop.orchestration.params import DEFAULT_ARGS
from mlloop.orchestration.payloads import ChampionMoved


@dag(
    dag_id=ROLLBACK_DAG,
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mlloop", "registry", "rollback"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    params={
        "version": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Version",
            description="Model version to make champion. Empty: the 'previous' alias.",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force",
            description="Allow a version that never passed the promotion gate.",
        ),
        "reason": Param(
            "manual rollback",
            type="string",
            minLength=3,
            title="Reason",
            description="Why the champion is rolled back (kept in the audit record).",
        ),
    },
)
def rollback_model() -> None:
    """Move the champion alias back, with an audit record."""

    @task
    def resolve_target(params: dict[str, Any]) -> str:
        """Fix the version to roll back to (so a retry of the next task cannot flip twice)."""
        from mlloop.registry.runner import rollback_target

        return rollback_target(params.get("version"), force=bool(params.get("force")))

    @task(outlets=[CHAMPION_MODEL])
    def move_champion_back(
        version: str, params: dict[str, Any], dag_run=None, outlet_events=None
    ) -> dict[str, Any]:
        """Point champion at the resolved version and record the rollback (no-op when already there)."""
        from mlloop.registry.runner import rollback_champion

        actor = f"airflow:{dag_run.run_id}" if dag_run else "airflow"
        record = rollback_champion(
            version, force=bool(params.get("force")), reason=str(params["reason"]), actor=actor
        )
        outlet_events[CHAMPION_MODEL].extra = ChampionMoved.from_record(record, rollback=True).to_extra()
        return record

    with_links(move_champion_back(resolve_target()), ModelVersionLink())


rollback_model()
