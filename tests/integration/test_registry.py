"""Registry operations against a real MLflow tracking server: register once, promote, reject, roll back."""

from __future__ import annotations

import pytest

from mlloop.registry import (
    CHAMPION,
    PREVIOUS,
    PromotionError,
    audit_log,
    champion_version,
    promote,
    reject,
    rollback,
)


def test_register_is_idempotent_per_dag_run(client, new_version, model_name: str) -> None:
    first = new_version(model_name, "run-1")
    retried = new_version(model_name, "run-1")
    other = new_version(model_name, "run-2")
    assert first.version == retried.version == "1"
    assert other.version == "2"
    assert len(client.search_model_versions(f"name = '{model_name}'")) == 2


def test_promote_moves_aliases_and_audits(client, new_version, model_name: str) -> None:
    v1 = new_version(model_name, "a").version
    v2 = new_version(model_name, "b").version
    assert champion_version(client, model_name) is None
    promote(client, model_name, v1, actor="test", reason="first model", gate_report="r1.json")
    assert champion_version(client, model_name).version == v1
    assert champion_version(client, model_name, PREVIOUS) is None
    promote(client, model_name, v2, actor="test", reason="better", gate_report="r2.json")
    assert champion_version(client, model_name).version == v2
    assert champion_version(client, model_name, PREVIOUS).version == v1
    again = promote(client, model_name, v2, actor="test", reason="retry", gate_report="r2.json")
    assert again.action == "promote-noop"
    records = audit_log(client, model_name)
    assert [(r.action, r.from_version, r.to_version) for r in records] == [
        ("promote", None, v1),
        ("promote", v1, v2),
    ]
    assert records[1].evidence == "r2.json"
    assert client.get_model_version(model_name, v2).tags["mlloop.gate.decision"] == "promoted"


def test_rejected_version_is_tagged_and_never_champion(client, new_version, model_name: str) -> None:
    v1 = new_version(model_name, "a").version
    v2 = new_version(model_name, "b").version
    promote(client, model_name, v1, actor="test", reason="first", gate_report="r1")
    reject(client, model_name, v2, actor="test", reason="non_inferiority failed", gate_report="r2")
    tags = client.get_model_version(model_name, v2).tags
    assert tags["mlloop.gate.decision"] == "rejected"
    assert "non_inferiority" in tags["mlloop.gate.reason"]
    assert champion_version(client, model_name).version == v1
    with pytest.raises(PromotionError, match="never promoted"):
        rollback(client, model_name, v2, actor="test", reason="try")
    with pytest.raises(PromotionError, match="is the champion"):
        reject(client, model_name, v1, actor="test", reason="x", gate_report="r")


def test_rollback_to_previous_and_forced(client, new_version, model_name: str) -> None:
    v1 = new_version(model_name, "a").version
    v2 = new_version(model_name, "b").version
    v3 = new_version(model_name, "c").version
    with pytest.raises(PromotionError, match="no 'previous' alias"):
        rollback(client, model_name, actor="test", reason="nothing yet")
    promote(client, model_name, v1, actor="test", reason="first", gate_report="r1")
    promote(client, model_name, v2, actor="test", reason="second", gate_report="r2")
    record = rollback(client, model_name, actor="oncall", reason="v2 misbehaves")
    assert (record.action, record.from_version, record.to_version) == ("rollback", v2, v1)
    assert client.get_model_version_by_alias(model_name, CHAMPION).version == v1
    assert client.get_model_version_by_alias(model_name, PREVIOUS).version == v2
    forced = rollback(client, model_name, v3, actor="oncall", reason="hotfix", force=True)
    assert forced.to_version == v3 and forced.evidence == "forced=True"
    assert [r.action for r in audit_log(client, model_name)] == ["promote", "promote", "rollback", "rollback"]
