"""Versioned YAML settings (gate thresholds, monitoring rules) with per-run overrides, checked by pydantic."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ConfigT = TypeVar("ConfigT", bound=BaseModel)
# libyaml's safe loader when PyYAML has it (same documents, several times faster; DAG parsing reads these).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load_yaml(text: str) -> Any:
    """Parse YAML with a safe loader (plain data only), libyaml's when available."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a SafeLoader, C or Python


def read_yaml(path: Path) -> Any:
    """Return the YAML document at ``path``, read once per version of the file (a fresh copy each call)."""
    stat = path.stat()
    return copy.deepcopy(_read_yaml(str(path), stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=64)
def _read_yaml(path: str, _mtime_ns: int, _size: int) -> Any:
    return safe_load_yaml(Path(path).read_text())


def load_versioned_config(
    model: type[ConfigT], path: Path, overrides: Mapping[str, Any] | None, *, what: str
) -> ConfigT:
    """Return ``model`` read from the YAML at ``path`` with ``overrides`` applied on top.

    Raises:
        ValueError: for an override key that is not a setting (naming the valid ones), or a value the
            setting does not accept (naming the setting, the value and the bound).
    """
    defaults = read_yaml(path)
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
