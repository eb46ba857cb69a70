"""Who did what: the audit's actor of an Airflow run names the run and the user who triggered it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.utils.types import DagRunType

from mlloop.registry.champion import airflow_actor


@pytest.mark.parametrize(
    ("run_type", "user", "expected"),
    [
        (DagRunType.MANUAL, "alice", "airflow:r1 by alice"),
        (DagRunType.SCHEDULED, None, "airflow:r1 by the scheduler"),
        (DagRunType.ASSET_TRIGGERED, None, "airflow:r1 by an Asset event"),
        ("backfill", None, "airflow:r1 by a backfill"),
        (DagRunType.MANUAL, None, "airflow:r1 by a manual run"),
    ],
)
def test_the_actor_names_the_run_and_who_or_what_started_it(run_type, user, expected) -> None:
    dag_run = SimpleNamespace(run_id="r1", run_type=run_type, triggering_user_name=user)
    assert airflow_actor(dag_run) == expected
