"""mlloop: the work behind the Airflow DAGs (validation, features, training, registry, monitoring)."""

__version__ = "0.1.0"
