"""PII tokenisation: keyed, deterministic, raw values dropped; key resolution fails with the fix."""

from __future__ import annotations

import pandas as pd
import pytest

from mlloop.config import Settings
from mlloop.ingestion.pii import MissingPIIKeyError, resolve_pii_key, tokenise_frame

KEY = b"k" * 32


def test_tokenise_replaces_the_column_and_is_deterministic() -> None:
    frame = pd.DataFrame({"id": ["a", "b"], "card_number": ["4111111111111111", "5500000000000004"]})
    out = tokenise_frame(frame, ["card_number"], KEY)
    assert list(out.columns) == ["id", "card_number_token"]
    assert "4111111111111111" not in out.to_csv()
    assert out.equals(tokenise_frame(frame, ["card_number"], KEY))
    other = tokenise_frame(frame, ["card_number"], b"x" * 32)
    assert not out["card_number_token"].equals(other["card_number_token"])
    assert out["card_number_token"].str.fullmatch(r"[0-9a-f]{64}").all()


def test_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLLOOP_PII_KEY", "a-long-enough-secret-key")
    assert resolve_pii_key(Settings()) == b"a-long-enough-secret-key"


def test_missing_or_short_key_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLLOOP_PII_KEY", raising=False)
    monkeypatch.setenv("MLLOOP_PII_CONN_ID", "mlloop_pii_absent_in_tests")
    with pytest.raises(MissingPIIKeyError, match="MLLOOP_PII_KEY"):
        resolve_pii_key(Settings())
    monkeypatch.setenv("MLLOOP_PII_KEY", "short")
    with pytest.raises(MissingPIIKeyError, match="shorter than 16"):
        resolve_pii_key(Settings())


def test_key_from_the_hosts_connection_reader_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlloop import connections

    masked: list[str] = []
    before = connections.readers()
    connections.install(
        connections.ConnectionReaders(
            password={"pii_test": "a-long-enough-connection-key"}.get, mask=masked.append, host="Test"
        )
    )
    try:
        monkeypatch.delenv("MLLOOP_PII_KEY", raising=False)
        monkeypatch.setenv("MLLOOP_PII_CONN_ID", "pii_test")
        assert resolve_pii_key(Settings()) == b"a-long-enough-connection-key"
        assert masked == ["a-long-enough-connection-key"]
        monkeypatch.setenv("MLLOOP_PII_CONN_ID", "pii_absent")
        with pytest.raises(MissingPIIKeyError, match="create the Airflow connection 'pii_absent'"):
            resolve_pii_key(Settings())
    finally:
        connections.install(before)


def test_key_from_an_airflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlloop import connections
    from mlloop.orchestration.connections import use_airflow_connections

    before = connections.readers()
    use_airflow_connections()
    try:
        monkeypatch.delenv("MLLOOP_PII_KEY", raising=False)
        monkeypatch.setenv("MLLOOP_PII_CONN_ID", "mlloop_pii_test")
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLLOOP_PII_TEST", '{"conn_type": "generic", "password": "an-airflow-held-key-0123"}'
        )
        assert resolve_pii_key(Settings()) == b"an-airflow-held-key-0123"
    finally:
        connections.install(before)
