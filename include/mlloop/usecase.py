"""Load a use-case declaration (YAML): dataset, schema, key/time/target/PII columns, suites, features."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlloop.features.spec import FeatureSpec
from mlloop.monitoring.decision import check_monitor_section
from mlloop.promotion.gate_config import check_gate_section

USECASE_DIR = Path(__file__).resolve().parent / "usecases"
ColumnKind = Literal["string", "datetime", "float", "integer", "boolean"]


class SourceSpec(BaseModel):
    """Where a use case's daily batches come from."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["generator", "files"] = "generator"
    rows_per_day: int = Field(default=20_000, gt=0)
    seed: int = 42
    uri: str | None = None

    @model_validator(mode="after")
    def _files_need_uri(self) -> SourceSpec:
        if self.kind == "files" and not self.uri:
            raise ValueError("source.kind 'files' needs source.uri (a folder holding date=YYYY-MM-DD/)")
        return self


class TrainingPolicy(BaseModel):
    """How much data one training window takes and needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_days: int = Field(default=4, ge=1, le=90, description="Validated days in a default window.")
    # A window with fewer labels waits (a scheduled run skips saying so) instead of training a model the
    # gate cannot judge: the holdout is the window's last fifth, so 100 positives leave it ~20.
    min_rows: int = Field(default=1000, ge=1, description="Fewer labelled rows in the window: do not train.")
    min_positives: int = Field(
        default=100, ge=1, description="Fewer labelled positives in the window: do not train."
    )


class UseCase(BaseModel):
    """A declared use case; DAGs and include/ read this instead of hard-coding the domain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    dataset: str
    key_column: str
    time_column: str
    target_column: str
    pii_columns: list[str] = Field(default_factory=list)
    schema_: dict[str, ColumnKind] = Field(alias="schema")
    suites: dict[str, str]
    model_name: str
    features: FeatureSpec
    source: SourceSpec = Field(default_factory=SourceSpec)
    # Labels arrive late; a default training window ends this many days before the run so that most
    # of its labels are known (rows whose label is still unknown are left out of training).
    label_maturity_days: int = Field(default=0, ge=0)
    # Feature columns monitor_drift leaves out of the data-drift check (e.g. calendar features, which a
    # one-day window can never share with a multi-day reference).
    drift_exclude: list[str] = Field(default_factory=list)
    # Policy: this use case's training window, and its overrides of the package-wide gate and monitoring
    # defaults (promotion/gate_defaults.yaml, monitoring/monitor_defaults.yaml; same keys).
    training: TrainingPolicy = Field(default_factory=TrainingPolicy)
    gate: dict[str, Any] = Field(default_factory=dict)
    monitor: dict[str, Any] = Field(default_factory=dict)

    @field_validator("gate")
    @classmethod
    def _gate_section_valid(cls, gate: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        check_gate_section(gate, info.data.get("features"))
        return gate

    @field_validator("monitor")
    @classmethod
    def _monitor_section_valid(cls, monitor: dict[str, Any]) -> dict[str, Any]:
        check_monitor_section(monitor, where="this declaration")
        return monitor

    @model_validator(mode="after")
    def _columns_declared(self) -> UseCase:
        declared = set(self.schema_)
        for role in ("key_column", "time_column"):
            if getattr(self, role) not in declared:
                raise ValueError(f"{role} {getattr(self, role)!r} is not a column of schema")
        missing = [c for c in self.pii_columns if c not in declared]
        if missing:
            raise ValueError(f"pii_columns {missing} are not columns of schema")
        return self

    @model_validator(mode="after")
    def _features_read_declared_columns(self) -> UseCase:
        used = self.features.input_columns()
        unknown = [c for c in used if c not in self.schema_]
        if unknown:
            raise ValueError(f"features use columns {unknown} that are not columns of schema")
        pii = [c for c in used if c in self.pii_columns]
        if pii:
            raise ValueError(
                f"features use PII columns {pii}; they are tokenised before features are built, "
                "so a model must not depend on them. Remove them from features."
            )
        from mlloop.features.spec import feature_columns

        stray = [c for c in self.drift_exclude if c not in feature_columns(self.features)]
        if stray:
            raise ValueError(f"drift_exclude names {stray}, which are not feature columns of this use case")
        return self

    @property
    def columns(self) -> list[str]:
        """Return the declared column names in delivery order."""
        return list(self.schema_)


@lru_cache(maxsize=8)
def load_use_case(name_or_path: str) -> UseCase:
    """Load a use case by name (``include/mlloop/usecases/<name>.yaml``) or by YAML path.

    Raises:
        FileNotFoundError: naming the file looked for and the declarations that exist.
        ValueError: naming the file, each invalid key and what is wrong with it.
    """
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = USECASE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in USECASE_DIR.glob("*.yaml"))
        raise FileNotFoundError(
            f"use case {name_or_path!r}: {path} does not exist. Set MLLOOP_USE_CASE to one of {known} "
            "or to the path of a YAML declaration."
        )
    try:
        return UseCase.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or '(top level)'}: {error['msg']}" for error in exc.errors()
        )
        raise ValueError(f"use case declaration {path} is invalid: {problems}") from exc
