"""The gate's policy per use case: one merge of defaults, declaration and run; errors at load time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlloop.features.spec import feature_columns
from mlloop.promotion import (
    GATE_DEFAULTS_PATH,
    ScoredModel,
    evaluate_gate,
    load_gate_config,
    slice_column_choices,
)
from mlloop.usecase import USECASE_DIR, load_use_case


def declaration_with_gate(tmp_path: Path, gate: dict) -> Path:
    """Write card_fraud's declaration with ``gate`` as its gate: section; return the file."""
    declaration = yaml.safe_load((USECASE_DIR / "card_fraud.yaml").read_text())
    path = tmp_path / "fraud_variant.yaml"
    path.write_text(yaml.safe_dump({**declaration, "gate": gate}))
    return path


def test_effective_config_is_defaults_then_declaration_then_run() -> None:
    use_case = load_use_case("card_fraud")
    defaults = load_gate_config()
    declared = load_gate_config(use_case=use_case)
    run = load_gate_config({"confidence": 0.99, "slice_columns": ["channel"]}, use_case=use_case)

    assert defaults.slice_columns == ()  # the package default: no slices
    assert declared.slice_columns == ("channel", "merchant_category", "country")
    assert run.slice_columns == ("channel",) and run.confidence == 0.99
    assert run.fixed_precision == use_case.gate["fixed_precision"]
    assert run.non_inferiority_margin == defaults.non_inferiority_margin
    assert run.source is not None
    assert run.source.use_case == "card_fraud"
    assert run.source.use_case_overrides == ("fixed_precision", "slice_columns")
    assert run.source.run_overrides == ("confidence", "slice_columns")
    assert defaults.source is not None and defaults.source.use_case is None


def test_gate_report_records_the_effective_config_and_its_sources() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(3000) < 0.05).astype(int)
    holdout = pd.DataFrame({"is_fraud": labels, "channel": rng.choice(["online", "atm"], labels.size)})
    config = load_gate_config({"slice_columns": ["channel"]}, use_case=load_use_case("card_fraud"))
    scores = labels + rng.normal(scale=0.8, size=labels.size)
    model = ScoredModel("fraud-detector/1", scores, batch_latency_ms_per_1k_rows=1.0, size_mb=1.0)
    decision = evaluate_gate(model, None, holdout, target_column="is_fraud", config=config)

    recorded = json.loads(json.dumps(decision.to_json()))["config"]
    assert recorded["version"] == decision.config_version == config.version
    assert recorded["source"]["use_case"] == "card_fraud"
    assert recorded["source"]["use_case_overrides"] == ["fixed_precision", "slice_columns"]
    assert recorded["slice_columns"] == ["channel"]
    assert (
        f"Effective config: {GATE_DEFAULTS_PATH.name} version {config.version}; use case card_fraud's gate: "
        "section sets fixed_precision, slice_columns; run overrides set slice_columns."
    ) in decision.to_markdown()


def test_slice_choices_are_columns_every_snapshot_holds() -> None:
    spec = load_use_case("card_fraud").features
    choices = slice_column_choices(spec)
    assert {"channel", "merchant_category", "country", "hour_of_day"} <= set(choices)
    assert set(choices) <= set(feature_columns(spec))  # a snapshot holds key, time, target and these
    assert "card_number" not in choices  # PII is tokenised, never a feature


def test_declared_slice_column_the_holdout_lacks_fails_when_the_declaration_loads(tmp_path: Path) -> None:
    path = declaration_with_gate(tmp_path, {"slice_columns": ["channel", "card_number"]})
    with pytest.raises(ValueError, match=r"gate\.slice_columns \['card_number'\]") as raised:
        load_use_case(str(path))
    message = str(raised.value)
    assert str(path) in message
    assert "'merchant_category'" in message and "'hour_of_day'" in message  # the valid columns


@pytest.mark.parametrize(
    ("gate", "expected"),
    [
        ({"min_pr_auc": 0.15}, r"unknown gate setting\(s\) \['min_pr_auc'\].*min_pr_auc_lift"),
        ({"version": "7"}, r"unknown gate setting\(s\) \['version'\]"),
        ({"min_roc_auc": 0.45}, r"min_roc_auc=0\.45: Input should be greater than or equal to 0\.5"),
        ({"min_pr_auc_lift": 0.9}, r"min_pr_auc_lift=0\.9"),
    ],
)
def test_invalid_gate_section_fails_when_the_declaration_loads(
    tmp_path: Path, gate: dict, expected: str
) -> None:
    path = declaration_with_gate(tmp_path, gate)
    with pytest.raises(ValueError, match=expected) as raised:
        load_use_case(str(path))
    assert str(path) in str(raised.value) and "gate" in str(raised.value)


def test_run_override_of_a_slice_column_the_holdout_lacks_is_refused_before_scoring() -> None:
    with pytest.raises(ValueError, match=r"gate\.slice_columns \(after overrides\) \['merchant_id'\]"):
        load_gate_config({"slice_columns": ["merchant_id"]}, use_case=load_use_case("card_fraud"))


def test_declarations_load_without_numpy_or_pandas() -> None:
    """usecase.py is imported at DAG parse: validating the gate section must stay light."""
    probe = (
        "import sys; from mlloop.usecase import load_use_case; load_use_case('card_fraud'); "
        "from mlloop.promotion import load_gate_config; load_gate_config(); "
        "print([m for m in ('numpy', 'pandas') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
