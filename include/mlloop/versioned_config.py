"""Versioned YAML settings (gate thresholds, monitoring rules) with per-run overrides, checked by pydantic."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def load_versioned_config(
    model: type[ConfigT], path: Path, overrides: Mapping[str, Any] | None, *, what: str
) -> ConfigT:
    """Return ``model`` read from the YAML at ``path`` with ``overrides`` applied on top.

    Raises:
        ValueError: for an override key that is not a setting (naming the valid ones), or a value the
            setting does not accept (naming the setting, the value and the bound).
    """
    defaults = yaml.safe_load(path.read_text())
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(model.model_fields))
    if unknown:
        raise ValueError(
            f"unknown {what} setting(s) {unknown} in the overrides; valid settings are "
            f"{sorted(model.model_fields)} (defaults in {path})"
        )
    try:
        return model.model_validate({**defaults, **overrides})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc']))}={error.get('input')!r}: {error['msg']}"
            for error in exc.errors()
        )
        raise ValueError(
            f"invalid {what} config ({path.name} with overrides {overrides}): {problems}"
        ) from exc
