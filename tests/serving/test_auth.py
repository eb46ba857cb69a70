"""API keys on the scoring service: 401 without or with a wrong key, 403 off its use cases, rotation."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mlloop.config import Settings
from mlloop.serving.auth import ApiKeys, AuthConfigError, issue_key, load_api_keys, revoke_key
from mlloop.serving.client import request_rows
from mlloop.usecase import load_use_case

NOW = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


def _call(url: str, path: str, body: bytes | None = None, key: str | None = None,
          header: str = "Authorization") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers[header] = f"Bearer {key}" if header == "Authorization" else key
    request = urllib.request.Request(f"{url}{path}", data=body, headers=headers,
                                     method="POST" if body is not None else "GET")  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_keys_are_stored_hashed_and_checked_per_client_and_use_case(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first_id, first = issue_key(path, "checkout", ["card_fraud"], NOW)
    second_id, second = issue_key(path, "checkout", [], NOW)  # rotation: keeps its use cases
    _, other = issue_key(path, "reports", ["*"], NOW)
    stored = path.read_text()
    assert first not in stored and second not in stored and first.split("_", 2)[2] not in stored
    assert path.stat().st_mode & 0o077 == 0
    keys = ApiKeys(path)
    for key in (first, second):
        client = keys.authenticate(key)
        assert client is not None and client.name == "checkout"
        assert client.may_score("card_fraud") and not client.may_score("flight_delay")
    assert keys.authenticate(other).may_score("flight_delay")  # type: ignore[union-attr]
    wrong_secret = f"{first.rsplit('_', 1)[0]}_{'A' * 43}"
    for bad in (None, "", "mlk", first[:-1], wrong_secret, f"mlk_{second_id}_x", "Basic abc"):
        assert keys.authenticate(bad) is None, bad
    with pytest.raises(ValueError, match="is new: name the use cases"):
        issue_key(path, "newcomer", [], NOW)
    with pytest.raises(KeyError, match=first_id):
        revoke_key(path, "checkout", "00000000")


def test_auth_is_required_beyond_loopback_and_optional_on_it(tmp_path: Path) -> None:
    assert load_api_keys(Settings(serving_host="127.0.0.1")) is None
    with pytest.raises(AuthConfigError, match=r"binds 0\.0\.0\.0.*mlloop api-key issue"):
        load_api_keys(Settings(serving_host="0.0.0.0"))
    with pytest.raises(AuthConfigError, match="MLLOOP_SERVING_AUTH=required"):
        load_api_keys(Settings(serving_auth="required"))
    not_yet = load_api_keys(Settings(serving_api_keys_file=str(tmp_path / "later.json")))
    assert not_yet is not None and not_yet.authenticate("mlk_00000000_x") is None  # refuses all, no crash
    _, key = issue_key(tmp_path / "later.json", "prometheus", [], NOW, metrics_only=True)
    not_yet._checked = 0.0  # the next check reloads (it does within a second in the service)
    client = not_yet.authenticate(key)
    assert client is not None and not client.may_score("card_fraud")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(AuthConfigError, match="cannot be read"):
        load_api_keys(Settings(serving_api_keys_file=str(tmp_path / "broken.json")))
    assert load_api_keys(Settings(serving_host="0.0.0.0", serving_auth="off")) is None


@pytest.mark.slow
def test_the_service_refuses_without_a_key_and_serves_with_one(registry, start_service, tmp_path) -> None:
    keys_file = tmp_path / "keys.json"
    _, key = issue_key(keys_file, "checkout", ["card_fraud"], NOW)
    _, stranger = issue_key(keys_file, "flights-team", ["flight_delay"], NOW)
    service = start_service(serving_api_keys_file=str(keys_file))
    service.wait_ready()
    row = json.dumps(request_rows(registry.traffic.iloc[:1], load_use_case("card_fraud"))[0]).encode()

    status, headers, body = _call(service.url, "/predict/card_fraud", row)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer"), body
    assert "mlloop api-key issue" in json.loads(body)["detail"]
    assert _call(service.url, "/predict/card_fraud", row, key=key[:-2] + "xx")[0] == 401
    assert _call(service.url, "/predict/no_such_use_case", row)[0] == 401  # no name leaks to strangers
    status, _, body = _call(service.url, "/predict/card_fraud", row, key=stranger)
    assert status == 403 and "may not score use case 'card_fraud'" in json.loads(body)["detail"]
    assert _call(service.url, "/predict/card_fraud", row, key=key)[0] == 200
    assert _call(service.url, "/predict", row, key=key, header="X-API-Key")[0] == 200

    assert _call(service.url, "/health")[0] == 200
    assert _call(service.url, "/metrics")[0] == 401
    status, _, metrics = _call(service.url, "/metrics", key=stranger)
    assert status == 200 and b'mlloop_requests_total{status="401",use_case="card_fraud"} 2.0' in metrics

    # Rotation: a new key works within a reload, the revoked one stops working; no restart.
    new_id, new_key = issue_key(keys_file, "checkout", [], NOW)
    old_id = json.loads(keys_file.read_text())["clients"]["checkout"]["keys"][0]["id"]
    revoke_key(keys_file, "checkout", old_id)
    deadline = time.monotonic() + 15
    while _call(service.url, "/predict/card_fraud", row, key=key)[0] != 401:
        assert time.monotonic() < deadline, "the revoked key is still accepted"
        time.sleep(0.2)
    assert _call(service.url, "/predict/card_fraud", row, key=new_key)[0] == 200
    assert new_id != old_id
    service.stop()
    log = service.log_path.read_text()
    assert all(k.split("_", 2)[2] not in log for k in (key, stranger, new_key)), "a key was logged"


def test_the_cli_prints_a_key_once_and_lists_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    run = [sys.executable, "-m", "mlloop.cli", "api-key", "--file", str(path)]
    issued = subprocess.run([*run, "issue", "--client", "checkout", "--use-case", "card_fraud"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    key = issued.stdout.strip()
    assert key.startswith("mlk_") and "shown only now" in issued.stderr
    listed = subprocess.run([*run, "list"], capture_output=True, text=True, check=True).stdout
    assert listed.startswith("checkout\t") and key.split("_", 2)[2] not in listed
    assert ApiKeys(path).authenticate(key) is not None
