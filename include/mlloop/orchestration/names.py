"""Names other parts rely on: the DAG ids and the Asset names (no Airflow import: ops/ and tests use them).

Until the DAG factory lands, one set of DAGs serves the declared use case. Each DAG file passes its id
from here, and everything that triggers, waits for or counts runs (``ops/``, the monitor's guard) uses
the same constant.
"""

INGEST_DAG = "ingest_transactions"
TRAIN_DAG = "train_model"
MONITOR_DAG = "monitor_drift"
ROLLBACK_DAG = "rollback_model"

VALIDATED_TRANSACTIONS_ASSET = "validated_transactions"
CHAMPION_MODEL_ASSET = "champion_model"
RETRAIN_REQUESTED_ASSET = "retrain_requested"
