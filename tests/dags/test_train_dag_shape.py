"""The shape of train_<use case>: backends, the approval branch, the champion Asset and the MLflow links."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.providers.standard.operators.hitl import HITLBranchOperator

from mlloop.orchestration.assets import use_case_assets
from mlloop.orchestration.links import GateReportLink, MlflowRunLink, ModelVersionLink


def _links(task) -> list[str]:
    return sorted(link.name for link in task.operator_extra_links)


def test_local_deployment_has_no_kubernetes_branch(load_dag, mlloop_env) -> None:
    mlloop_env(training_backend="local")
    dag = load_dag("train_card_fraud")
    assert "train_kubernetes" not in dag.task_ids and "choose_backend" not in dag.task_ids
    assert dag.params.get_param("backend").schema["enum"] == ["local"]
    assert dag.get_task("gate").upstream_task_ids == {"train_local", "snapshot"}


def test_kubernetes_deployment_offers_both_backends(load_dag, mlloop_env) -> None:
    mlloop_env(training_backend="kubernetes")
    dag = load_dag("train_card_fraud")
    assert dag.params["backend"] == "kubernetes"
    assert dag.params.get_param("backend").schema["enum"] == ["local", "kubernetes"]
    assert dag.get_task("choose_backend").downstream_task_ids == {"train_local", "train_kubernetes"}
    trained = dag.get_task("trained")
    assert trained.upstream_task_ids == {"train_local", "train_kubernetes"}
    assert trained.trigger_rule == "none_failed_min_one_success"
    assert dag.get_task("gate").upstream_task_ids == {"trained", "snapshot"}


def test_review_branches_to_promote_or_reject_and_only_promote_emits_the_asset(load_dag, mlloop_env) -> None:
    mlloop_env(training_backend="local")
    dag = load_dag("train_card_fraud")
    review = dag.get_task("review")
    assert isinstance(review, HITLBranchOperator)
    assert review.options_mapping == {"Promote": "promote", "Reject": "reject"}
    assert review.defaults == ["Reject"], "an unanswered review must not promote"
    assert dag.get_task("decide").downstream_task_ids == {"review", "promote", "reject"}
    for task_id in ("promote", "reject"):
        assert dag.get_task(task_id).trigger_rule == "none_failed_min_one_success"
    assert dag.get_task("promote").outlets == [use_case_assets("card_fraud").champion]
    assert dag.get_task("reject").outlets == []
    assert dag.params["approval_required"] is False


def test_the_review_records_who_answered_before_it_branches(load_dag, mlloop_env, monkeypatch) -> None:
    mlloop_env(training_backend="local")
    review = load_dag("train_card_fraud").get_task("review")
    monkeypatch.setattr(HITLBranchOperator, "execute_complete", lambda self, context, event: ["reject"])
    pushed = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value}))
    event = {"chosen_options": ["Reject"], "responded_by_user": {"id": "bob", "name": "bob"}}
    assert review.execute_complete({"ti": ti}, event) == ["reject"]
    assert pushed == {"reviewer": "bob"}
    review.execute_complete({"ti": ti}, {"chosen_options": ["Reject"], "responded_by_user": None})
    assert pushed["reviewer"].startswith("nobody")  # the response timeout's default, not a person


def test_tasks_carry_their_mlflow_links(load_dag, mlloop_env) -> None:
    mlloop_env(training_backend="local")
    dag = load_dag("train_card_fraud")
    assert _links(dag.get_task("train_local")) == ["MLflow run"]
    assert _links(dag.get_task("gate")) == ["Gate report"]
    assert _links(dag.get_task("promote")) == _links(dag.get_task("reject")) == ["Model version"]
    assert _links(load_dag("rollback_card_fraud").get_task("move_champion_back")) == ["Model version"]


class _FinishedTask(SimpleNamespace):
    """What a link sees on the worker: the finishing task instance, whose xcom_pull returns its result."""

    def xcom_pull(self, task_ids: str):
        assert task_ids == self.task_id
        return self.result


@pytest.mark.parametrize(
    ("link", "result", "expected"),
    [
        (MlflowRunLink(), {"run_id": "ab12"}, "http://mlflow.example:5000/#/runs/ab12"),
        (
            GateReportLink(),
            {"report": "runs:/ab12/gate/gate_report.md", "experiment_id": "7"},
            "http://mlflow.example:5000/#/experiments/7/runs/ab12/artifactPath/gate/gate_report.md",
        ),
        (
            ModelVersionLink(),
            {"model": "fraud detector", "to_version": "3"},
            "http://mlflow.example:5000/#/models/fraud%20detector/versions/3",
        ),
        (MlflowRunLink(), None, ""),
    ],
)
def test_links_point_at_the_mlflow_ui(link, result, expected, mlloop_env) -> None:
    mlloop_env(mlflow_tracking_uri="http://mlflow.internal:5000", mlflow_ui_url="http://mlflow.example:5000/")
    assert link.get_link(None, ti_key=_FinishedTask(task_id="t", result=result)) == expected


def test_links_are_empty_for_a_non_http_tracking_uri(mlloop_env) -> None:
    mlloop_env(mlflow_tracking_uri="sqlite:///mlflow.db")
    assert MlflowRunLink().get_link(None, ti_key=_FinishedTask(task_id="t", result={"run_id": "x"})) == ""
