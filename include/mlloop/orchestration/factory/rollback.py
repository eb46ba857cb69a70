"""The ``rollback_<use case>`` DAG: move the champion alias back, with an audit record."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, dag, task

from mlloop.orchestration.assets import use_case_assets
from mlloop.orchestration.links import ModelVersionLink, with_links
from mlloop.orchestration.names import dag_names
from mlloop.orchestration.params import dag_arguments
from mlloop.orchestration.payloads import ChampionMoved
from mlloop.registry.champion import airflow_actor
from mlloop.registry.runner import registered_model_name
from mlloop.usecase import UseCase


def _doc(use_case: UseCase) -> str:
    """Return the DAG's page text in the declaration's own nouns."""
    names = dag_names(use_case.name)
    return f"""
### Roll back the served `{registered_model_name(use_case)}` ({use_case.name})

Moves the `champion` alias of the registered model back to an earlier version, and records who did it
and why in the `mlloop-audit` MLflow experiment. The version that was champion becomes `previous`, so a
rollback can itself be undone by running this DAG again with no version.

- **version**: the version to serve. Empty: the version holding the `previous` alias.
- **force**: roll back to a version that never passed the promotion gate (refused otherwise).
- **reason**: why; kept in the audit record.

Manual only. Emits the `{names.champion_asset}` Asset; the scoring service follows the alias, so serving
changes without a deploy.
"""


def build_rollback_dag(use_case: UseCase) -> DAG:
    """Return ``rollback_<use case>``: move the champion alias back, with an audit record."""
    name = use_case.name
    champion = use_case_assets(name).champion

    @dag(
        dag_id=dag_names(name).rollback,
        schedule=None,
        **dag_arguments(name, "registry", "rollback", doc_md=_doc(use_case)),
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
    def rollback() -> None:
        """Move the champion alias back, with an audit record."""

        @task
        def resolve_target(params: dict[str, Any]) -> str:
            """Fix the version to roll back to (so a retry of the next task cannot flip twice)."""
            from mlloop.registry.runner import rollback_target

            return rollback_target(params.get("version"), force=bool(params.get("force")), use_case=name)

        @task(outlets=[champion])
        def move_champion_back(
            version: str, params: dict[str, Any], dag_run=None, outlet_events=None
        ) -> dict[str, Any]:
            """Point champion at the resolved version and record the rollback (no-op when already there)."""
            from mlloop.registry.runner import rollback_champion

            actor = airflow_actor(dag_run)
            record = rollback_champion(
                version,
                force=bool(params.get("force")),
                reason=str(params["reason"]),
                actor=actor,
                use_case=name,
            )
            outlet_events[champion].extra = ChampionMoved.from_record(record, rollback=True).to_extra()
            return record

        with_links(move_champion_back(resolve_target()), ModelVersionLink())

    return rollback()
