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
