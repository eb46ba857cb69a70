"""PII tokenisation with a keyed HMAC; the key comes from the environment or a connection (Airflow's)."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from mlloop.connections import readers

if TYPE_CHECKING:
    import pandas as pd

    from mlloop.config import Settings

MIN_KEY_BYTES = 16


class MissingPIIKeyError(RuntimeError):
    """Raised when no PII tokenisation key is configured."""


def resolve_pii_key(settings: Settings) -> bytes:
    """Return the HMAC key: ``MLLOOP_PII_KEY`` if set, else the password of the Airflow connection.

    Raises:
        MissingPIIKeyError: when neither is set, or the key is shorter than 16 bytes.
    """
    key: str | None = settings.pii_key.get_secret_value() if settings.pii_key else None
    source = "MLLOOP_PII_KEY"
    if not key:
        key = _connection_password(settings.pii_conn_id)
        source = f"{readers().host} connection {settings.pii_conn_id!r}"
    if not key:
        raise MissingPIIKeyError(
            f"No PII tokenisation key: set MLLOOP_PII_KEY or create the Airflow connection "
            f"{settings.pii_conn_id!r} with the key as its password (`make up` writes a random one to .env "
            "for the local default)."
        )
    if len(key.encode()) < MIN_KEY_BYTES:
        raise MissingPIIKeyError(
            f"The PII key from {source} is shorter than {MIN_KEY_BYTES} bytes; use a longer one."
        )
    _mask(key)
    return key.encode()


def _connection_password(conn_id: str) -> str | None:
    """Read a connection's password through the host's reader (Airflow's); None when there is none."""
    read = readers().password
    return read(conn_id) if read else None


def _mask(secret: str) -> None:
    """Register the key with the host's log masker (Airflow's) so it can never appear in a task log."""
    mask = readers().mask
    if mask:
        mask(secret)


def token(value: object, key: bytes) -> str | None:
    """Return the hex HMAC-SHA256 of one value (None for a null); same key and value, same token."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()


def tokenise_column(values: pd.Series, key: bytes) -> pd.Series:
    """Return the hex HMAC-SHA256 of each value (nulls stay null); same key and value, same token."""
    import pandas as pd

    return pd.Series([token(v, key) for v in values], index=values.index, dtype="object", name=values.name)


def tokenise_frame(frame: pd.DataFrame, pii_columns: list[str], key: bytes) -> pd.DataFrame:
    """Replace each PII column ``c`` with ``c_token`` in place of it; the raw values are dropped."""
    out = frame.copy()
    for column in pii_columns:
        position = out.columns.get_loc(column)
        tokens = tokenise_column(out.pop(column), key)
        out.insert(position, f"{column}_token", tokens)
    return out
