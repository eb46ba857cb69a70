"""Airflow Assets that connect the DAGs (light: imported by DAG files at parse time)."""

from airflow.sdk import Asset

# Emitted by ingest_transactions for every batch that passed its contract; train_model schedules on it.
VALIDATED_TRANSACTIONS = Asset(name="validated_transactions")

# Emitted by train_model (and rollback_model) when the champion alias moves; the event's extra names the
# model, the new champion version and the one it replaced.
CHAMPION_MODEL = Asset(name="champion_model")
