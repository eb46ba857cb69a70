"""The ``erase_<use case>`` DAG: erase one data subject's rows from every zone (a dry run by default)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, dag, task

from mlloop.orchestration.names import dag_names
from mlloop.orchestration.params import dag_arguments
from mlloop.registry.champion import airflow_actor
from mlloop.registry.runner import registered_model_name
from mlloop.usecase import UseCase


def _default_column(use_case: UseCase) -> str:
    """Return the column the form proposes: the first PII column, else the key column."""
    return use_case.pii_columns[0] if use_case.pii_columns else use_case.key_column


def _doc(use_case: UseCase) -> str:
    """Return the DAG's page text in the declaration's own nouns."""
    return f"""
### Right to erasure for `{use_case.name}` (one data subject, every zone)

Finds every row of one data subject of dataset `{use_case.dataset}`: the rows whose **column** holds the
**value** (for a PII column, {", ".join(f"`{c}`" for c in use_case.pii_columns) or "none declared"}, also its
HMAC token), and every row sharing a `{use_case.key_column}` with them (labels, snapshots). It searches
raw, quarantine, validated, labels, inference logs and snapshots (docs/lifecycle.md, "Right to erasure").

**Dry run is on by default**: the run's return value lists per object the rows that would go. With
*apply* on, each object is rewritten without them (content ids renamed, old objects removed), snapshots
that lost rows get a new digest, the versions of `{registered_model_name(use_case)}` trained on the old
one are tagged `mlloop.erasure_affected=<ledger id>`, and `ledger/erasure/{use_case.dataset}.jsonl` records
who, when, what and how many, never the value.

The value stays in this run's configuration in Airflow's metadata DB: delete the run (or let
`housekeeping_{use_case.name}`'s metadata cleanup remove it) once the erasure is applied.
"""


def build_erasure_dag(use_case: UseCase) -> DAG:
    """Return ``erase_<use case>``: plan, and with *apply* carry out, one data subject's erasure."""
    name = use_case.name

    @dag(
        dag_id=dag_names(name).erase,
        schedule=None,
        **dag_arguments(name, "lifecycle", "erasure", doc_md=_doc(use_case)),
        params={
            "column": Param(
                _default_column(use_case),
                type="string",
                enum=use_case.columns,
                title="Subject column",
                description="The declared column that identifies the data subject (e.g. the customer id).",
            ),
            "value": Param(
                type="string",
                minLength=1,
                title="Value",
                description="The subject's value in that column, in clear (its PII token is searched too).",
            ),
            "apply": Param(
                False,
                type="boolean",
                title="Apply",
                description="Off (default): a dry run that only counts. On: remove the rows and record it.",
            ),
        },
    )
    def erase() -> None:
        """Plan, and with apply carry out, the erasure of one data subject."""

        @task
        def erase_subject(params: dict[str, Any], dag_run=None) -> dict[str, Any]:
            """Count (dry run) or remove the subject's rows in every zone; return the plan or ledger entry."""
            from mlloop.clock import platform_time
            from mlloop.lifecycle.erasure import erase_subject as erase

            return erase(
                name,
                f"{params['column']}={params['value']}",
                apply=bool(params["apply"]),
                actor=airflow_actor(dag_run),
                at=platform_time(dag_run.run_after),
            )

        erase_subject()

    return erase()
