"""Airflow Assets that connect the DAGs (light: imported by DAG files at parse time)."""

from airflow.sdk import Asset

# Emitted by ingest_transactions for every batch that passed its contract; train_model schedules on it.
VALIDATED_TRANSACTIONS = Asset(name="validated_transactions")
