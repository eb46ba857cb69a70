"""Issue, list and revoke the scoring service's API keys: ``mlloop api-key issue|list|revoke``.

``issue`` prints the new key once (only its SHA-256 is stored); a client may hold several keys at once,
so a rotation is: issue a new key, switch the caller to it, revoke the old one. The service reloads the
keys file within a second of a change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlloop.clock import now
from mlloop.config import get_settings
from mlloop.serving.auth import AuthConfigError, issue_key, list_keys, revoke_key


def main(argv: list[str] | None = None) -> int:
    """Run one of issue / list / revoke on the keys file; return the exit code."""
    default = get_settings().serving_api_keys_file
    parser = argparse.ArgumentParser(prog="python -m mlloop.serving.keys_cli", description=__doc__)
    parser.add_argument("--file", type=Path, default=Path(default) if default else None,
                        help="the keys file (default: MLLOOP_SERVING_API_KEYS_FILE)")  # fmt: skip
    verbs = parser.add_subparsers(dest="verb", required=True)
    issue = verbs.add_parser("issue", help="add a key for a client and print it once")
    issue.add_argument("--client", required=True, help="who calls (e.g. checkout-service)")
    issue.add_argument("--use-case", action="append", default=[], dest="use_cases",
                       help="a use case it may score (repeat; '*': all; default: keep its own)")  # fmt: skip
    issue.add_argument("--metrics-only", action="store_true",
                       help="a client allowed on no use case, only /metrics (Prometheus)")  # fmt: skip
    verbs.add_parser("list", help="list clients and key ids (never a key or a hash)")
    revoke = verbs.add_parser("revoke", help="remove one key of a client")
    revoke.add_argument("--client", required=True)
    revoke.add_argument("--key-id", required=True, help="the id `issue` and `list` show")
    args = parser.parse_args(argv)
    if args.file is None:
        parser.error("no keys file: pass --file <path> or set MLLOOP_SERVING_API_KEYS_FILE")
    try:
        if args.verb == "issue":
            key_id, key = issue_key(
                args.file, args.client, args.use_cases, now(), metrics_only=args.metrics_only
            )
            print(key)
            print(f"issued key {key_id} for {args.client} in {args.file}: it is shown only now; the file "
                  "keeps its SHA-256", file=sys.stderr)  # fmt: skip
        elif args.verb == "list":
            for entry in list_keys(args.file):
                print(f"{entry['client']}\t{entry['id']}\t{entry['created']}\t{','.join(entry['use_cases'])}")
        else:
            revoke_key(args.file, args.client, args.key_id)
            print(f"revoked key {args.key_id} of {args.client}", file=sys.stderr)
    except (AuthConfigError, KeyError, ValueError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
