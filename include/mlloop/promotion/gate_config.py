"""The gate's policy: its settings, the package defaults, and the one merge every caller uses.

Effective config = ``gate_defaults.yaml``, then the use case's ``gate:`` section, then per-run
overrides (``load_gate_config``). Light to import (pydantic and YAML, no numpy or pandas): the use-case
declaration checks its ``gate:`` section with ``check_gate_section`` when it loads, at DAG parse.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlloop.features.spec import FeatureSpec
from mlloop.versioned_config import load_versioned_config

if TYPE_CHECKING:
    from mlloop.usecase import UseCase

GATE_DEFAULTS_PATH = Path(__file__).with_name("gate_defaults.yaml")
Metric = Literal["pr_auc", "roc_auc"]


class GateConfigSource(BaseModel):
    """Where an effective gate config came from: the defaults, then which layers overrode which keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: str = Field(description="The defaults file (its version is the config's version).")
    use_case: str | None = Field(default=None, description="The use case whose declaration was applied.")
    use_case_overrides: tuple[str, ...] = Field(default=(), description="Keys its gate: section set.")
    run_overrides: tuple[str, ...] = Field(default=(), description="Keys the run's overrides set.")

    def describe(self) -> str:
        """Return one line saying which layers set which keys, for reports and logs."""
        declared = ", ".join(self.use_case_overrides) or "nothing"
        run = ", ".join(self.run_overrides) or "nothing"
        layers = [self.defaults]
        if self.use_case is not None:
            layers.append(f"use case {self.use_case}'s gate: section sets {declared}")
        layers.append(f"run overrides set {run}")
        return "; ".join(layers)


class GateConfig(BaseModel):
    """The gate's settings. Defaults live in ``gate_defaults.yaml``; decisions record ``version``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1, description="Version of the defaults, recorded in decisions.")
    metric: Metric = Field(description="Metric of the champion comparisons: pr_auc or roc_auc.")
    min_roc_auc: float = Field(
        ge=0.5, lt=1, description="Floor on the lower end of the challenger's ROC-AUC interval (0.5: none)."
    )
    min_pr_auc_lift: float = Field(
        ge=1, description="Floor on the lower end of the PR-AUC / no-skill PR-AUC interval (1: none)."
    )
    fixed_precision: float = Field(gt=0, le=1, description="Precision the served threshold is chosen at.")
    non_inferiority_margin: float = Field(ge=0, le=1, description="Tolerated loss against the champion.")
    bootstrap_resamples: int = Field(
        ge=100, le=100_000, description="Bootstrap resamples and no-skill draws."
    )
    confidence: float = Field(gt=0.5, lt=1, description="Two-sided confidence of every interval.")
    seed: int = Field(ge=0, description="Seed of the resampling and the no-skill draws.")
    slice_columns: tuple[str, ...] = Field(description="Holdout columns whose values are checked slices.")
    min_slice_rows: int = Field(ge=1, description="Smaller slices are skipped as too noisy.")
    min_slice_positives: int = Field(ge=1, description="Slices with fewer positives are skipped.")
    slice_margin: float = Field(ge=0, le=1, description="Tolerated loss on any one slice.")
    max_batch_latency_ms_per_1k_rows: float = Field(gt=0, description="Batch-scoring latency budget.")
    max_model_size_mb: float = Field(gt=0, description="Serialised model size budget.")
    cost_false_negative: float = Field(ge=0, description="Cost of a missed positive (reported only).")
    cost_false_positive: float = Field(ge=0, description="Cost of a false alarm (reported only).")
    source: GateConfigSource | None = Field(
        default=None, description="Set by load_gate_config (not a setting): which layers set which keys."
    )


# Keys a use case's gate: section and a run's overrides may set: the version belongs to the defaults
# file and the source is recorded, not chosen.
GATE_SETTINGS = tuple(key for key in GateConfig.model_fields if key not in ("version", "source"))


def load_gate_config(
    overrides: Mapping[str, Any] | None = None, *, use_case: UseCase | None = None
) -> GateConfig:
    """Return the effective gate config: defaults, then ``use_case``'s ``gate:`` section, then ``overrides``.

    The gate, training (its logged operating point) and every other caller use this one merge.

    Raises:
        ValueError: for a key that is not a gate setting (naming the valid ones), a value the setting
            does not accept (naming the setting, the value and the bound), or slice columns the use
            case's holdout does not have (naming the valid ones).
    """
    declared = dict(use_case.gate) if use_case is not None else {}
    run = dict(overrides or {})
    _check_keys(run, "the run's gate overrides")
    config = load_versioned_config(GateConfig, GATE_DEFAULTS_PATH, {**declared, **run}, what="gate")
    if use_case is not None:
        _check_slice_columns(config.slice_columns, use_case.features, "gate.slice_columns (after overrides)")
    source = GateConfigSource(
        defaults=f"{GATE_DEFAULTS_PATH.name} version {config.version}",
        use_case=use_case.name if use_case is not None else None,
        use_case_overrides=tuple(declared),
        run_overrides=tuple(run),
    )
    return config.model_copy(update={"source": source})


def check_gate_section(section: Mapping[str, Any], features: FeatureSpec | None) -> None:
    """Check a use case's ``gate:`` section: known keys, accepted values, slice columns its holdout has.

    ``features`` is the use case's feature spec (None when it failed its own validation: the slice
    columns are then not checked).

    Raises:
        ValueError: naming the ``gate.<key>`` that is wrong and what would be valid.
    """
    _check_keys(section, "the use case's gate: section")
    config = load_versioned_config(GateConfig, GATE_DEFAULTS_PATH, section, what="gate")
    if features is not None:
        _check_slice_columns(config.slice_columns, features, "gate.slice_columns")


def slice_column_choices(features: FeatureSpec) -> list[str]:
    """Return the holdout columns a use case may slice by: its categorical and calendar features.

    A snapshot's holdout holds the key, time, target and feature columns; raw columns (PII ones are
    tokenised) never reach it. Categorical features have a declared vocabulary and calendar parts a
    fixed range, so their slices are a known, finite set.
    """
    return [*features.categorical, *features.calendar]


def _check_keys(values: Mapping[str, Any], where: str) -> None:
    """Raise ValueError naming the keys of ``values`` that are not gate settings, and the valid ones."""
    unknown = sorted(set(values) - set(GATE_SETTINGS))
    if unknown:
        raise ValueError(
            f"unknown gate setting(s) {unknown} in {where}; valid settings are {sorted(GATE_SETTINGS)} "
            f"(defaults and their meaning in {GATE_DEFAULTS_PATH})"
        )


def _check_slice_columns(columns: tuple[str, ...], features: FeatureSpec, key: str) -> None:
    """Raise ValueError when a slice column is not a categorical or calendar feature of the use case."""
    valid = slice_column_choices(features)
    missing = [column for column in columns if column not in valid]
    if missing:
        raise ValueError(
            f"{key} {missing} are not columns the gate's holdout has as slices; slice columns must be "
            f"categorical or calendar features of this use case: {valid} (or [] for no slices)"
        )
