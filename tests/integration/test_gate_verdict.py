"""A gate that cannot decide leaves no unverdicted version: it is tagged error and can never be promoted."""

from __future__ import annotations

import pytest

from mlloop.registry import PromotionError, champion_version
from mlloop.registry.tags import GATE_ERROR_TAG, GATE_VERDICT_TAG
from mlloop.training.pipeline import gate_challenger, promote_or_reject


@pytest.fixture
def registered(client, new_version, registry_env: str, data_root) -> dict:
    """A freshly registered version as the training task returns it (its snapshot does not exist)."""
    version = new_version(registry_env, "dag-run-1")
    return {
        "model_name": registry_env,
        "version": version.version,
        "run_id": version.run_id,
        "snapshot": "0" * 64,
    }


@pytest.mark.parametrize(
    ("overrides", "cause"),
    [
        ({"min_pr_auc": 0.1}, "unknown gate setting(s) ['min_pr_auc']"),  # a stale run override
        ({"slice_columns": ["merchant_id"]}, "gate.slice_columns (after overrides) ['merchant_id']"),
        (None, "snapshot"),  # the holdout cannot be loaded
    ],
)
def test_gate_error_tags_the_version_and_promotion_refuses_it(
    client, registered: dict, overrides: dict | None, cause: str
) -> None:
    name, version = registered["model_name"], registered["version"]
    with pytest.raises(Exception) as raised:
        gate_challenger(registered, overrides, use_case="card_fraud")

    tags = client.get_model_version(name, version).tags
    assert tags[GATE_VERDICT_TAG] == "error"
    assert tags[GATE_ERROR_TAG].startswith("the gate could not decide: ")
    assert cause in tags[GATE_ERROR_TAG] and cause in str(raised.value)

    claimed = {"promote": True, "summary": "forged", "report": "runs:/x/gate/gate_report.md"}
    with pytest.raises(PromotionError, match=r"gate verdict 'error', not 'passed'"):
        promote_or_reject(registered, claimed, actor="test", promote=True, use_case="card_fraud")
    assert champion_version(client, name) is None


def test_a_version_never_gated_cannot_be_promoted(client, registered: dict) -> None:
    claimed = {"promote": True, "summary": "forged", "report": "runs:/x/gate/gate_report.md"}
    with pytest.raises(PromotionError, match=r"gate verdict '\(none\)'.*never gated"):
        promote_or_reject(registered, claimed, actor="test", promote=True, use_case="card_fraud")
    assert champion_version(client, registered["model_name"]) is None
