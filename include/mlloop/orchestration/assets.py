"""Airflow Assets that connect the DAGs (light: imported by DAG files at parse time)."""

from airflow.sdk import Asset

from mlloop.orchestration.names import (
    CHAMPION_MODEL_ASSET,
    RETRAIN_REQUESTED_ASSET,
    VALIDATED_TRANSACTIONS_ASSET,
)

# Emitted by ingest_transactions for every batch that passed its contract; train_model schedules on it.
VALIDATED_TRANSACTIONS = Asset(name=VALIDATED_TRANSACTIONS_ASSET)

# Emitted by train_model (and rollback_model) when the champion alias moves; the event's extra names the
# model, the new champion version and the one it replaced.
CHAMPION_MODEL = Asset(name=CHAMPION_MODEL_ASSET)

# Emitted by monitor_drift when its rule fires and the guards let it through; train_model schedules on it
# too. The event's extra carries the reason, the monitored window (end_day) and the monitoring record.
RETRAIN_REQUESTED = Asset(name=RETRAIN_REQUESTED_ASSET)
