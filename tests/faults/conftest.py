"""Fault tests reuse the scoring service's test stack (``tests/serving/service_stack.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))

from service_stack import registry, start_service

__all__ = ["registry", "start_service"]
