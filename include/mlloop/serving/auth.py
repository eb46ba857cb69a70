"""API keys of the scoring service: per client, several at once (rotation), stored as SHA-256 hashes only.

A key reads ``mlk_<key id>_<secret>`` (32 random bytes): the id finds the stored hash, the secret's
entropy makes a plain SHA-256 as safe as a slow password hash while costing a microsecond per request.
The keys file (``MLLOOP_SERVING_API_KEYS_FILE``, JSON, written by ``mlloop api-key``) maps each client to
the use cases it may score (``"*"``: all) and its keys' hashes; the service reloads it when it changes,
so issuing or revoking a key needs no restart. A key is printed once, when issued, and never logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlloop.config import Settings

log = logging.getLogger(__name__)
PREFIX = "mlk"
ALL_USE_CASES = "*"
_RELOAD_SECONDS = 1.0
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class AuthConfigError(ValueError):
    """Raised when the service must authenticate but cannot (no keys file, or an unreadable one)."""


@dataclass(frozen=True)
class Client:
    """A caller of the service: its name and the use cases it may score."""

    name: str
    use_cases: frozenset[str]

    def may_score(self, use_case: str) -> bool:
        """Return whether this client may call ``POST /predict/<use_case>``."""
        return ALL_USE_CASES in self.use_cases or use_case in self.use_cases


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _read(path: Path) -> dict[str, Any]:
    """Return the keys file's content (empty when it does not exist yet)."""
    if not path.exists():
        return {"clients": {}}
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AuthConfigError(f"the API keys file {path} cannot be read ({exc}); rewrite it with "
                              "`mlloop api-key issue` or restore it from a backup") from exc  # fmt: skip
    if not isinstance(content, dict) or not isinstance(content.get("clients"), dict):
        raise AuthConfigError(f"the API keys file {path} has no 'clients' object; write it with "
                              "`mlloop api-key issue`")  # fmt: skip
    return content


def _write(path: Path, content: dict[str, Any]) -> None:
    """Replace the keys file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(content, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def issue_key(
    path: Path, client: str, use_cases: list[str], now: dt.datetime, *, metrics_only: bool = False
) -> tuple[str, str]:
    """Add a key for ``client``; return (key id, key). Older keys stay valid (rotation).

    ``use_cases`` replaces the client's allowed use cases; empty keeps them (a new client must name them,
    or be ``metrics_only``: allowed on no use case, on ``/metrics`` only, as Prometheus is).
    """
    if not _CLIENT_NAME.fullmatch(client):
        raise ValueError(f"client name {client!r}: start with a letter or digit, then letters, digits, . _ -")
    content = _read(path)
    entry = content["clients"].setdefault(client, {"use_cases": [], "keys": []})
    if use_cases or metrics_only:
        entry["use_cases"] = sorted(set(use_cases))
    elif not entry["use_cases"]:
        raise ValueError(f"client {client!r} is new: name the use cases it may score (--use-case <name>, "
                         f"or --use-case '{ALL_USE_CASES}' for all; --metrics-only for none)")  # fmt: skip
    key_id = secrets.token_hex(4)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    entry["keys"].append({"id": key_id, "sha256": _digest(key), "created": now.isoformat()})
    _write(path, content)
    return key_id, key


def revoke_key(path: Path, client: str, key_id: str) -> None:
    """Remove one key of ``client``; raises KeyError naming the ids it has when there is no such key."""
    content = _read(path)
    keys = content["clients"].get(client, {}).get("keys", [])
    kept = [k for k in keys if k["id"] != key_id]
    if len(kept) == len(keys):
        raise KeyError(f"client {client!r} has no key {key_id!r}; its keys: {[k['id'] for k in keys]}")
    content["clients"][client]["keys"] = kept
    _write(path, content)


def list_keys(path: Path) -> list[dict[str, Any]]:
    """Return one line per key: client, key id, created, allowed use cases (never a hash)."""
    return [
        {"client": name, "id": k["id"], "created": k.get("created"), "use_cases": entry["use_cases"]}
        for name, entry in sorted(_read(path)["clients"].items())
        for k in entry["keys"]
    ]


class ApiKeys:
    """The keys file as the service checks it: key id -> (hash, client); reloaded when it changes."""

    def __init__(self, path: Path) -> None:
        """Load ``path``; until it exists every key is refused. Raises AuthConfigError when unreadable."""
        self.path = path
        if not path.is_file():
            log.warning(
                "The API keys file %s (MLLOOP_SERVING_API_KEYS_FILE) does not exist yet: every request is "
                "refused until a key is issued with `mlloop api-key --file %s issue --client <name> "
                "--use-case <use case>` (it is read within a second)", path, path,
            )  # fmt: skip
        self._lock = threading.Lock()
        self._checked = 0.0
        self._mtime = -1.0
        self._by_id: dict[str, tuple[str, Client]] = {}
        self._reload()

    def _reload(self) -> None:
        """Read the file again if it changed (a broken rewrite keeps the keys loaded before)."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._by_id, self._mtime = {}, -1.0  # removed: nobody is let in
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime  # a broken version is reported once, not at every check
        by_id: dict[str, tuple[str, Client]] = {}
        for name, entry in _read(self.path)["clients"].items():
            client = Client(name, frozenset(entry.get("use_cases", [])))
            for key in entry.get("keys", []):
                by_id[key["id"]] = (key["sha256"], client)
        self._by_id = by_id

    def authenticate(self, key: str | None) -> Client | None:
        """Return the client whose key this is, or None (no key, unknown id, wrong secret)."""
        now = time.monotonic()
        if now - self._checked >= _RELOAD_SECONDS:
            with self._lock:
                self._checked = now
                try:
                    self._reload()
                except (OSError, AuthConfigError) as exc:  # the next check tries again
                    log.warning("API keys not reloaded, the keys loaded before stay valid: %s", exc)
        if not key:
            return None
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        found = self._by_id.get(parts[1])
        if found is None or not hmac.compare_digest(found[0], _digest(key)):
            return None
        return found[1]


def presented_key(headers: Any) -> str | None:
    """Return the key a request presents: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    value = headers.get("authorization")
    if value:
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return headers.get("x-api-key")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_api_keys(settings: Settings) -> ApiKeys | None:
    """Return the keys the service checks, or None when it serves without authentication.

    ``MLLOOP_SERVING_AUTH``: ``required``; ``off``; ``auto`` (default) requires keys when a keys file is
    set or when the service binds an address other than loopback (the compose stack binds 0.0.0.0).

    Raises:
        AuthConfigError: when keys are required and no keys file is set, or it cannot be read.
    """
    mode, path = settings.serving_auth, settings.serving_api_keys_file
    if mode == "off":
        return None
    if path is None:
        if mode == "auto" and _is_loopback(settings.serving_host):
            return None
        why = "MLLOOP_SERVING_AUTH=required" if mode == "required" else (
            f"the service binds {settings.serving_host}, beyond this host")  # fmt: skip
        raise AuthConfigError(
            f"the scoring service must authenticate its callers ({why}) but MLLOOP_SERVING_API_KEYS_FILE is "
            "not set: issue a key with `mlloop api-key issue --client <name> --file <path>` and set "
            "MLLOOP_SERVING_API_KEYS_FILE=<path> (or MLLOOP_SERVING_AUTH=off to serve without keys)"
        )
    return ApiKeys(Path(path).expanduser())
