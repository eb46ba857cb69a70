"""Load the data-contract suites kept as GX 1.x JSON under ``expectations/`` (never rebuilt in Python).

A deployment with its own use-case folder keeps its suites beside it: ``MLLOOP_EXPECTATIONS_DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlloop.config import get_settings

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuite

REPO_ROOT = Path(__file__).resolve().parents[3]
EXPECTATIONS_DIR = REPO_ROOT / "expectations"


def expectations_dir() -> Path:
    """Return the suites' folder: ``MLLOOP_EXPECTATIONS_DIR``, else the repository's ``expectations/``."""
    configured = get_settings().expectations_dir
    return Path(configured) if configured else EXPECTATIONS_DIR


def available_suites() -> list[str]:
    """Return the names of the suites in the suites' folder (file stems, sorted)."""
    return sorted(path.stem for path in expectations_dir().glob("*.json"))


def suite_path(name: str) -> Path:
    """Return the JSON file of suite ``name``.

    Raises:
        FileNotFoundError: naming the path looked for and the suites that exist.
    """
    folder = expectations_dir()
    path = folder / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"expectation suite {name!r}: {path} does not exist. Available suites in {folder} "
            "(MLLOOP_EXPECTATIONS_DIR): "
            f"{available_suites()}. Add {name}.json there or fix the suite name in the use-case declaration."
        )
    return path


def read_suite_json(name: str) -> dict[str, Any]:
    """Return the JSON dict of suite ``name``, checked to be a GX suite document with that name.

    Raises:
        FileNotFoundError: when the file does not exist (see ``suite_path``).
        ValueError: when the file is not valid JSON or not a suite named ``name``.
    """
    path = suite_path(name)
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"expectation suite {path} is not valid JSON: {exc}. Fix the file.") from exc
    if not isinstance(document, dict) or not isinstance(document.get("expectations"), list):
        raise ValueError(
            f"expectation suite {path} is not a GX suite document (needs 'name' and an 'expectations' list)."
        )
    if document.get("name") != name:
        raise ValueError(
            f"expectation suite {path} is named {document.get('name')!r}, not {name!r}; the file name "
            "and the suite's 'name' must match."
        )
    return document


def load_suite(name: str) -> ExpectationSuite:
    """Load suite ``name`` from ``expectations/<name>.json`` as a GX ``ExpectationSuite``.

    Raises:
        FileNotFoundError: naming the path looked for and the suites that exist.
        ValueError: when the file is not a valid suite, or an expectation in it is not valid for GX.
    """
    return build_suite(read_suite_json(name), str(suite_path(name)))


def build_suite(document: dict[str, Any], source: str) -> ExpectationSuite:
    """Build a GX ``ExpectationSuite`` from a suite document, refusing one GX would silently shrink.

    Raises:
        ValueError: naming ``source`` when an expectation in the document is not valid for GX.
    """
    from great_expectations.compatibility.pydantic import ValidationError
    from great_expectations.core import ExpectationSuite

    try:
        suite = ExpectationSuite(**document)
    except (ValidationError, TypeError) as exc:
        raise ValueError(
            f"expectation suite {source} has an expectation GX rejects: {exc}. Fix its kwargs."
        ) from exc
    # GX logs and drops an expectation whose configuration it rejects; a contract must not shrink silently.
    if len(suite.expectations) != len(document["expectations"]):
        kept = {exp.expectation_type for exp in suite.expectations}
        declared = [exp.get("type") for exp in document["expectations"]]
        raise ValueError(
            f"expectation suite {source}: GX accepted {len(suite.expectations)} of "
            f"{len(declared)} expectations (types kept: {sorted(kept)}); see the GX error logged above and "
            "fix the rejected expectation's kwargs."
        )
    return suite
