"""``python -m mlloop.lifecycle.erasure_cli`` (``mlloop erase``): one data subject's erasure from a shell."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mlloop.config import get_settings
from mlloop.ingestion.pii import MissingPIIKeyError
from mlloop.lifecycle.erasure import ErasureRequestError, erase_subject
from mlloop.registry.champion import cli_actor


def main(argv: list[str] | None = None) -> int:
    """Plan (and with ``--apply`` carry out) one subject's erasure; print the summary as JSON."""
    parser = argparse.ArgumentParser(prog="python -m mlloop.lifecycle.erasure_cli", description=__doc__)
    parser.add_argument(
        "--use-case", default=get_settings().use_case, help="declared use case (MLLOOP_USE_CASE)"
    )
    parser.add_argument(
        "--subject",
        required=True,
        metavar="COLUMN=VALUE",
        help="a declared column and the subject's value in it; COLUMN=- reads the value from stdin "
        "(kept out of the shell history and the process list)",
    )
    parser.add_argument("--apply", action="store_true", help="remove the rows (default: dry run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    subject = args.subject
    if subject.endswith("=-"):
        subject = subject[:-1] + sys.stdin.readline().strip()
    try:
        result = erase_subject(args.use_case, subject, apply=args.apply, actor=cli_actor())
    except (FileNotFoundError, ErasureRequestError, MissingPIIKeyError) as exc:
        print(f"erase: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
