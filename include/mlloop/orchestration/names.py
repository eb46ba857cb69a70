"""Names other parts rely on: each use case's DAG ids and Asset names (no Airflow import: ops/, tests).

The DAG factory (``orchestration/factory/``) builds six DAGs per declared use case from these names, and
everything that triggers, waits for or counts runs (``ops/``, the monitor's guard) asks for the same ones,
so a DAG id is spelled in one place.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DagNames:
    """The DAG ids and Asset names of one use case (``ingest_<name>`` and so on)."""

    use_case: str

    @property
    def ingest(self) -> str:
        """Land, validate and publish one day's batch."""
        return f"ingest_{self.use_case}"

    @property
    def train(self) -> str:
        """Snapshot, train, gate and promote."""
        return f"train_{self.use_case}"

    @property
    def monitor(self) -> str:
        """Drift and decay checks that can request a retrain."""
        return f"monitor_{self.use_case}"

    @property
    def rollback(self) -> str:
        """Move the champion alias back."""
        return f"rollback_{self.use_case}"

    @property
    def housekeeping(self) -> str:
        """Retention, version archival, MLflow and Airflow metadata cleanup."""
        return f"housekeeping_{self.use_case}"

    @property
    def erase(self) -> str:
        """Erase one data subject's rows from every zone (manual, a dry run by default)."""
        return f"erase_{self.use_case}"

    @property
    def retire(self) -> str:
        """Decommission the use case: pause the other DAGs, remove the aliases, archive the versions."""
        return f"retire_{self.use_case}"

    @property
    def dags(self) -> tuple[str, ...]:
        """All DAG ids, in the order the loop runs them, then housekeeping, erasure and retire last."""
        return (
            self.ingest, self.train, self.monitor, self.rollback, self.housekeeping, self.erase, self.retire,
        )  # fmt: skip

    @property
    def validated_asset(self) -> str:
        """Emitted for every batch that passed its contract; the train DAG schedules on it."""
        return f"validated_{self.use_case}"

    @property
    def champion_asset(self) -> str:
        """Emitted when the champion alias moves (promotion or rollback)."""
        return f"champion_model_{self.use_case}"

    @property
    def retrain_asset(self) -> str:
        """Emitted when monitoring requests a retrain; the train DAG schedules on it too."""
        return f"retrain_requested_{self.use_case}"


def dag_names(use_case: str) -> DagNames:
    """Return the DAG ids and Asset names of ``use_case`` (a declaration's ``name``)."""
    return DagNames(use_case)
