"""Who did what: the audit's actor of an Airflow run names the run, who triggered it and who reviewed it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.utils.types import DagRunType

from mlloop.registry.champion import NO_REVIEWER, airflow_actor, hitl_reviewer


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


def test_a_reviewed_run_names_its_reviewer_too() -> None:
    dag_run = SimpleNamespace(run_id="r1", run_type=DagRunType.MANUAL, triggering_user_name="alice")
    assert airflow_actor(dag_run, "bob") == "airflow:r1 by alice, reviewed by bob"
    assert airflow_actor(dag_run, None) == "airflow:r1 by alice"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"responded_by_user": {"id": "7", "name": "bob"}}, "bob"),
        ({"responded_by_user": {"id": "7", "name": ""}}, "7"),
        ({"responded_by_user": None}, NO_REVIEWER),  # the response timeout applied the default
        ({}, NO_REVIEWER),
    ],
)
def test_the_reviewer_is_the_hitl_responder(event, expected) -> None:
    assert hitl_reviewer(event) == expected
