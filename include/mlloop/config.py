"""One typed settings object, read from ``MLLOOP_*`` environment variables with safe local defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_PREFIX = "MLLOOP_"


class Settings(BaseSettings):
    """Platform settings; every field maps to ``MLLOOP_<FIELD>`` (e.g. ``MLLOOP_DATA_ROOT``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    data_root: str = Field(
        default=str(REPO_ROOT / "data"),
        description="Storage root: a local folder or s3://bucket/prefix.",
    )
    storage_conn_id: str | None = Field(
        default=None,
        description="Airflow connection (aws type) used for an s3:// data root; None uses the AWS env/chain.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint (MinIO, moto); None for AWS itself."
    )
    s3_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds the S3 client waits to open a connection to the endpoint."
    )
    s3_read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds the S3 client waits for the endpoint's next bytes before an attempt fails "
        "(per socket read, not per object: a large transfer is not cut by it).",
    )
    s3_max_attempts: int = Field(
        default=3,
        ge=1,
        description="Attempts per S3 call, the first included (botocore 'standard' retries with backoff). "
        "With the timeouts this bounds how long a hung endpoint holds a task before it fails.",
    )
    usecases_dir: str | None = Field(
        default=None,
        description="Folder of use-case declarations, one <name>.yaml each; None: the packaged "
        "include/mlloop/usecases/. Their GX suites stay in expectations/.",
    )
    use_cases: str | None = Field(
        default=None,
        description="Comma-separated names of the declared use cases to enable "
        "(e.g. 'card_fraud,flight_delay'); "
        "None or blank enables every declaration in the use-case folder.",
    )
    expectations_dir: str | None = Field(
        default=None,
        description="Folder of the GX suites the declarations name (<suite>.json); None: the repository's "
        "expectations/. Set it beside MLLOOP_USECASES_DIR when a deployment keeps its own declarations.",
    )
    use_case: str = Field(
        default="card_fraud",
        description="Default use case of the commands that act on one (e.g. demo, simulate, train): a "
        "declared name or a path to a YAML declaration.",
    )
    mlflow_tracking_uri: str = Field(default="http://127.0.0.1:5000")
    model_name: str | None = Field(
        default=None,
        description="Registered model name of the default use case (MLLOOP_USE_CASE) only; None takes its "
        "declaration's model_name. Other use cases always register their declaration's.",
    )
    training_backend: Literal["local", "kubernetes"] = Field(
        default="local",
        description="Default train_model backend; 'kubernetes' also adds the KubernetesPodOperator branch "
        "(settings MLLOOP_K8S_*), so deployments without a cluster never import the provider.",
    )
    mlflow_ui_url: str | None = Field(
        default=None,
        description="MLflow address users open (extra links in Airflow); None uses mlflow_tracking_uri.",
    )
    pii_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for PII tokenisation. Unset: read from the Airflow connection pii_conn_id.",
    )
    pii_conn_id: str = Field(
        default="mlloop_pii", description="Airflow connection whose password is the PII HMAC key."
    )
    airflow_db_url: SecretStr | None = Field(
        default=None,
        description="Airflow metadata DB URL for housekeeping's `airflow db clean` inside a task, where "
        "Airflow 3 hides its own; None: the process's AIRFLOW__DATABASE__SQL_ALCHEMY_CONN (a shell).",
    )
    airflow_api_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Airflow API server through which `mlloop use-cases retire` pauses DAGs.",
    )
    airflow_api_user: str = Field(default="admin", description="Airflow user those API calls log in as.")
    airflow_password: SecretStr | None = Field(
        default=None,
        description="That user's password (the local stack generates it into .env); None: retiring a use "
        "case cannot pause its DAGs and says so.",
    )
    clock_shift_days: int = Field(
        default=0,
        description="Whole days added to wall time wherever the platform asks what time it is "
        "(mlloop.clock): pins demos, tests and replays to a calendar day. 0 in production.",
    )
    # Monitoring thresholds and guards are versioned in include/mlloop/monitoring/monitor_defaults.yaml.
    monitor_schedule: str = Field(
        default="@daily",
        description="Schedule of monitor_drift: a cron expression or preset (e.g. '0 6 * * *', '@hourly').",
    )
    serving_host: str = Field(default="127.0.0.1", description="Address the scoring service binds.")
    serving_port: int = Field(default=8000, ge=1, le=65535, description="Port of the scoring service.")
    serving_alias: str = Field(default="champion", description="Registry alias the scoring service follows.")
    serving_poll_seconds: float = Field(
        default=5.0, gt=0, description="How often the scoring service checks the alias for a new version."
    )
    serving_max_rows: int = Field(default=1000, ge=1, description="Most rows one /predict request may hold.")
    serving_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest /predict body in bytes; larger ones get 413."
    )
    serving_auth: Literal["auto", "required", "off"] = Field(
        default="auto",
        description="API keys on /predict and /metrics: 'required'; 'off'; 'auto' requires them when "
        "MLLOOP_SERVING_API_KEYS_FILE is set or the service binds beyond loopback (the compose stack).",
    )
    serving_api_keys_file: str | None = Field(
        default=None,
        description="JSON file of the clients, their allowed use cases and their keys' SHA-256 hashes "
        "(written by `mlloop api-key issue`; reloaded when it changes).",
    )
    snapshot_chunk_rows: int = Field(
        default=2_000_000,
        ge=1,
        description="Rows (window plus history context) above which a snapshot is built in entity parts of "
        "about this many rows: peak memory follows this, not the window. Same snapshot bytes either way.",
    )
    inference_flush_rows: int = Field(
        default=5000, ge=1, description="The inference log writes a partition file once this many rows wait."
    )
    inference_flush_seconds: float = Field(
        default=10.0, gt=0, description="... or once the oldest waiting row is this many seconds old."
    )
    inference_wal_sync: Literal["interval", "batch", "off"] = Field(
        default="interval",
        description="The inference log's write-ahead file: every answered row is written to it before the "
        "answer is sent (a killed process loses nothing) and fsynced every MLLOOP_INFERENCE_WAL_SYNC_MS "
        "('interval', group commit) or before each answered batch ('batch'); 'off': rows wait in memory "
        "only, a crash loses them.",
    )
    inference_wal_sync_ms: float = Field(
        default=5.0, gt=0, description="How often 'interval' fsyncs the write-ahead file, in milliseconds."
    )
    inference_wal_dir: str | None = Field(
        default=None,
        description="Local folder of the write-ahead files, one subfolder per dataset; None: "
        "<data root>/_wal/inference for a local data root, ~/.local/state/mlloop/inference-wal for S3.",
    )
    # Promotion-gate thresholds are versioned in include/mlloop/promotion/gate_defaults.yaml (per-run
    # overrides go through train_model's Params), so they are not repeated here.


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once from the environment)."""
    return Settings()
