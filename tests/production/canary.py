"""Canary secrets for the production-stack tests: distinctive values that must never leak anywhere.

Each test places these where a real deployment keeps its secrets (S3 keys, MLflow credentials, Airflow
connection passwords, the PII HMAC key) and then greps everything the platform wrote - task logs, XComs,
MLflow params/tags/artifacts, inference-log rows, result JSON - with :func:`find_canaries`.
"""

from __future__ import annotations

import base64
import urllib.parse

S3_SECRET_KEY = "canary-s3-secret-7f3a9c1e5b2d4086"
MLFLOW_PASSWORD = "canary-mlflow-pw-c41d8e2b9a7f6053"
AIRFLOW_CONN_PASSWORD = "canary-airflow-conn-pw-5e9b3d7a1c2f8064"
PII_KEY = "canary-pii-key-9a2c6e4f8b1d3075"

CANARIES: dict[str, str] = {
    "S3_SECRET_KEY": S3_SECRET_KEY,
    "MLFLOW_PASSWORD": MLFLOW_PASSWORD,
    "AIRFLOW_CONN_PASSWORD": AIRFLOW_CONN_PASSWORD,
    "PII_KEY": PII_KEY,
}


def _base64_cores(secret: str) -> set[str]:
    """Return the base64 substrings any encoding of a text containing ``secret`` must hold (3 alignments)."""
    raw = secret.encode()
    cores = set()
    for offset in range(3):
        data = b"\0" * offset + raw
        # Skip the first 4-char group when it mixes in bytes before the secret; drop a trailing partial group.
        start = 4 if offset else 0
        end = 4 * (len(data) // 3)
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            cores.add(encode(data)[start:end].decode())
    return cores


def _forms(secret: str) -> set[str]:
    """Return the plain, url-encoded and base64 forms of a secret as they would appear in text."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    forms |= _base64_cores(secret)
    return {form for form in forms if len(form) >= 12}


_FORMS: dict[str, set[str]] = {name: _forms(value) for name, value in CANARIES.items()}


def find_canaries(text: str) -> list[str]:
    """Return the names of the canaries (``S3_SECRET_KEY``, ...) occurring in ``text`` in any known form."""
    return sorted(name for name, forms in _FORMS.items() if any(form in text for form in forms))
