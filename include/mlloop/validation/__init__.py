"""Data contracts: GX 1.x suites kept as JSON in ``expectations/``, run on frames, reported readably.

Light to import (Great Expectations is imported on first use, inside the functions).
"""

import logging

from mlloop.validation.contract import contract_expectations, validate_delivery
from mlloop.validation.report import ExpectationFailure, ValidationReport
from mlloop.validation.runner import validate_frame
from mlloop.validation.suite import EXPECTATIONS_DIR, available_suites, load_suite

# GX logs its internals (decorator registration, metric registry) at INFO: in a task log that buries
# the validation summary, so only its warnings and errors are kept.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

__all__ = [
    "EXPECTATIONS_DIR",
    "ExpectationFailure",
    "ValidationReport",
    "available_suites",
    "contract_expectations",
    "load_suite",
    "validate_delivery",
    "validate_frame",
]
