"""The DAG factory: seven DAGs per declared use case, from the declarations alone, and a bad one isolated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlloop.orchestration.factory import INVALID_TAG
from mlloop.orchestration.names import dag_names

REPO_ROOT = Path(__file__).resolve().parents[2]
CARD_FRAUD = REPO_ROOT / "include" / "mlloop" / "usecases" / "card_fraud.yaml"


def _declare(folder: Path, name: str, **changes: object) -> Path:
    """Write a declaration ``name`` into ``folder``: card_fraud's content with ``changes`` applied."""
    declaration = yaml.safe_load(CARD_FRAUD.read_text())
    declaration.update(name=name, **changes)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(declaration, sort_keys=False))
    return path


@pytest.fixture
def usecases(tmp_path: Path, mlloop_env):
    """A fresh use-case folder (MLLOOP_USECASES_DIR) holding card_fraud and a second, file-fed use case."""
    folder = tmp_path / "usecases"
    folder.mkdir()
    _declare(folder, "card_fraud")
    _declare(
        folder,
        "card_fraud_eu",
        description="Card fraud of the EU issuer, delivered as files.",
        dataset="eu_payments",
        model_name="fraud-detector-eu",
        source={"kind": "files", "uri": str(tmp_path / "inbox")},
    )
    mlloop_env(usecases_dir=folder)
    return folder


def _bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags" / "use_cases.py"))


def test_each_declaration_gets_its_own_dags_and_assets(usecases: Path, airflow_db) -> None:
    bag = _bag()
    assert bag.import_errors == {}
    expected = {*dag_names("card_fraud").dags, *dag_names("card_fraud_eu").dags}
    assert set(bag.dag_ids) == expected

    eu = {dag_id: bag.get_dag(dag_id) for dag_id in dag_names("card_fraud_eu").dags}
    assert all("card_fraud_eu" in dag.tags for dag in eu.values())
    ingest, train = eu["ingest_card_fraud_eu"], eu["train_card_fraud_eu"]
    # A files source has no generator knobs in its form; its page speaks of its own dataset and model.
    assert set(ingest.params.keys()) == {"day", "start_training"}
    assert "raw/eu_payments/" in ingest.doc_md and "raw/transactions" not in ingest.doc_md
    assert "fraud-detector-eu" in train.doc_md
    # A files source waits for a late delivery (rescheduling, not holding a worker); a generator has none.
    waiting = ingest.get_task("wait_for_delivery")
    assert waiting.downstream_task_ids == {"land"} and waiting.mode == "reschedule"
    assert waiting.timeout == 7 * 3600 and "wait_for_delivery" in ingest.doc_md  # 6 h declared, 1 h backstop
    assert "wait_for_delivery" not in bag.get_dag("ingest_card_fraud").task_ids
    assert set(bag.get_dag("ingest_card_fraud").params.keys()) == {
        "day",
        "scenario",
        "rows",
        "start_training",
    }

    # The Assets are per use case: one's validated batch never schedules the other's training.
    (published,) = ingest.get_task("publish").outlets
    assert published.name == "validated_card_fraud_eu"
    assert {a.name for a in train.timetable.asset_condition.objects} == {
        "validated_card_fraud_eu",
        "retrain_requested_card_fraud_eu",
    }
    assert [a.name for a in train.get_task("promote").outlets] == ["champion_model_card_fraud_eu"]
    monitor = eu["monitor_card_fraud_eu"]
    assert [a.name for a in monitor.get_task("request_retrain").outlets] == [
        "retrain_requested_card_fraud_eu"
    ]


def test_mlloop_use_cases_enables_a_subset(usecases: Path, mlloop_env, airflow_db) -> None:
    mlloop_env(use_cases="card_fraud_eu")
    bag = _bag()
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == set(dag_names("card_fraud_eu").dags)


def test_an_invalid_declaration_shows_its_error_and_the_others_load(
    usecases: Path, mlloop_env, airflow_db
) -> None:
    _declare(usecases, "broken", key_column="no_such_column", dataset="broken_rows", model_name="broken")
    bag = _bag()
    assert bag.import_errors == {}
    assert set(dag_names("card_fraud").dags) <= set(bag.dag_ids)
    for dag_id in dag_names("broken").dags:
        dag = bag.get_dag(dag_id)
        assert INVALID_TAG in dag.tags and dag.schedule is None
        assert "broken.yaml" in dag.doc_md and "key_column" in dag.doc_md
        assert [t.task_id for t in dag.tasks] == ["declaration_error"]


def test_the_model_name_override_renames_the_default_use_case_only(
    usecases: Path, mlloop_env, airflow_db
) -> None:
    from mlloop.registry.runner import registered_model_name
    from mlloop.usecase import load_use_case

    mlloop_env(model_name="fraud-detector-staging")
    bag = _bag()
    assert bag.import_errors == {}
    assert registered_model_name(load_use_case("card_fraud")) == "fraud-detector-staging"
    assert registered_model_name(load_use_case("card_fraud_eu")) == "fraud-detector-eu"
    assert "fraud-detector-eu" in bag.get_dag("train_card_fraud_eu").doc_md

    mlloop_env(model_name="fraud-detector-eu")  # the other use case's model: they would share it
    (error,) = _bag().import_errors.values()
    assert "MLLOOP_MODEL_NAME='fraud-detector-eu'" in error and "card_fraud_eu" in error


def test_a_second_use_case_on_the_same_dataset_is_refused(usecases: Path, airflow_db) -> None:
    _declare(usecases, "card_fraud_copy", model_name="fraud-detector-copy")  # dataset: transactions
    bag = _bag()
    assert set(dag_names("card_fraud").dags) <= set(bag.dag_ids)
    copy = bag.get_dag("train_card_fraud_copy")
    assert INVALID_TAG in copy.tags
    assert "dataset 'transactions' is already declared by use case 'card_fraud'" in copy.doc_md


def test_the_retire_dag_is_manual_and_a_dry_run_unless_apply_is_on(usecases: Path, airflow_db) -> None:
    bag = _bag()
    retire = bag.get_dag("retire_card_fraud_eu")
    assert retire.schedule is None and {"lifecycle", "retire", "card_fraud_eu"} <= set(retire.tags)
    assert retire.params["apply"] is False and len(retire.params["reason"]) >= 3
    assert [t.task_id for t in retire.tasks] == ["retire_use_case"]
    # Its page names the DAGs it pauses, never itself (its own run must finish), and the model it retires.
    others = [d for d in dag_names("card_fraud_eu").dags if d != "retire_card_fraud_eu"]
    assert all(f"`{d}`" in retire.doc_md for d in others) and "`retire_card_fraud_eu`" not in retire.doc_md
    assert "fraud-detector-eu" in retire.doc_md and "410 Gone" in retire.doc_md
