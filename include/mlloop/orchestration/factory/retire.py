"""The ``retire_<use case>`` DAG: decommission the use case (manual, a dry run unless told to apply)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, dag, task

from mlloop.orchestration.names import dag_names
from mlloop.orchestration.params import dag_arguments
from mlloop.registry.champion import airflow_actor
from mlloop.registry.runner import registered_model_name
from mlloop.usecase import UseCase


def _doc(use_case: UseCase) -> str:
    """Return the DAG's page text in the declaration's own nouns."""
    names = dag_names(use_case.name)
    others = ", ".join(f"`{d}`" for d in names.dags if d != names.retire)
    model = registered_model_name(use_case)
    return f"""
### Retire `{use_case.name}` (decommission the use case)

**Dry run by default**: the run lists what it would change and changes nothing. Trigger with *apply* on
to do it (docs/lifecycle.md, "Decommissioning a use case"):

1. pauses {others} through the Airflow REST API (not this DAG: it must finish its own run);
2. tags `{model}` `mlloop.retired` with the time, who triggered this run and the *reason*, so the scoring
   service answers **410 Gone** on `/predict/{use_case.name}` with that message;
3. removes every alias of `{model}` (`champion`, `previous`);
4. archives every version (`mlloop.lifecycle=archived`, model artifacts deleted; metadata, metrics, runs
   and reports kept per the retention policy); a version tagged `mlloop.legal_hold=true` is kept whole;
5. records the decision in the `mlloop-audit` MLflow experiment (action `retire`).

Running it again changes nothing. Needs `MLLOOP_AIRFLOW_PASSWORD` (and `MLLOOP_AIRFLOW_API_URL`,
`MLLOOP_AIRFLOW_API_USER` outside the local stack) in the workers' environment. Same as
`mlloop use-cases retire {use_case.name} --reason ... [--apply]`.
"""


def build_retire_dag(use_case: UseCase) -> DAG:
    """Return ``retire_<use case>``: pause the other DAGs, unalias, archive, tag and audit (dry run first)."""
    name = use_case.name

    @dag(
        dag_id=dag_names(name).retire,
        schedule=None,
        **dag_arguments(name, "lifecycle", "retire", doc_md=_doc(use_case)),
        params={
            "reason": Param(
                "use case decommissioned",
                type="string",
                minLength=3,
                title="Reason",
                description="Why the use case is retired (on the model, in the 410 answer and the audit).",
            ),
            "apply": Param(
                False,
                type="boolean",
                title="Apply",
                description="Off (default): list what would change, change nothing. On: retire it.",
            ),
        },
    )
    def retire() -> None:
        """Retire the use case, or list what retiring it would change."""

        @task
        def retire_use_case(params: dict[str, Any], dag_run=None) -> dict[str, Any]:
            """Pause the other DAGs, tag the model, remove its aliases, archive its versions, audit it."""
            from mlloop.lifecycle.retire import retire

            return retire(name, airflow_actor(dag_run), str(params["reason"]), bool(params["apply"]))

        retire_use_case()

    return retire()
