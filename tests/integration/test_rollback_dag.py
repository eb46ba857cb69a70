"""The rollback_<use case> DAG run for real (dag.test) against a real MLflow server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlloop.registry import CHAMPION, PREVIOUS, audit_log, promote

_dates = iter(range(10_000))


@pytest.fixture(scope="module")
def rollback_dag(load_dag):
    return load_dag("rollback_card_fraud")


@pytest.fixture
def configured(registry_env: str) -> str:
    return registry_env


def _run(dag, **conf):
    logical = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(days=next(_dates))
    dag_run = dag.test(logical_date=logical, run_conf={"reason": "test rollback", **conf})
    return dag_run, {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_rollback_to_previous_then_back(rollback_dag, configured: str, client, new_version) -> None:
    name = configured
    v1, v2 = new_version(name, "a").version, new_version(name, "b").version
    promote(client, name, v1, actor="test", reason="first", gate_report="r1")
    promote(client, name, v2, actor="test", reason="second", gate_report="r2")
    dag_run, states = _run(rollback_dag)
    assert str(dag_run.state) == "success", states
    assert client.get_model_version_by_alias(name, CHAMPION).version == v1
    assert client.get_model_version_by_alias(name, PREVIOUS).version == v2
    last = audit_log(client, name)[-1]
    assert (last.action, last.to_version, last.reason) == ("rollback", v1, "test rollback")
    assert last.actor.startswith("airflow:")
    dag_run, states = _run(rollback_dag)  # undo the rollback: previous is now v2
    assert str(dag_run.state) == "success", states
    assert client.get_model_version_by_alias(name, CHAMPION).version == v2


def test_rollback_refuses_an_unpromoted_version_unless_forced(
    rollback_dag, configured: str, client, new_version
) -> None:
    name = configured
    v1, v2 = new_version(name, "a").version, new_version(name, "b").version
    promote(client, name, v1, actor="test", reason="first", gate_report="r1")
    dag_run, states = _run(rollback_dag, version=int(v2))
    assert str(dag_run.state) == "failed"
    assert states["resolve_target"] == "failed"
    assert client.get_model_version_by_alias(name, CHAMPION).version == v1
    dag_run, states = _run(rollback_dag, version=int(v2), force=True)
    assert str(dag_run.state) == "success", states
    assert client.get_model_version_by_alias(name, CHAMPION).version == v2
