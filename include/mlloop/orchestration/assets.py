"""The Airflow Assets that connect one use case's DAGs (light: imported by the DAG factory at parse time)."""

from __future__ import annotations

from dataclasses import dataclass

from airflow.sdk import Asset

from mlloop.orchestration.names import dag_names


@dataclass(frozen=True)
class UseCaseAssets:
    """One use case's Assets; two use cases never share one, so one's batch never trains the other."""

    # Emitted by ingest_<use case> for every batch that passed its contract; train_<use case> schedules on it.
    validated: Asset
    # Emitted by train_<use case> (and rollback_<use case>) when the champion alias moves; the event's extra
    # names the model, the new champion version and the one it replaced.
    champion: Asset
    # Emitted by monitor_<use case> when its rule fires and the guards let it through; train_<use case>
    # schedules on it too. The extra carries the reason, the monitored window and the monitoring record.
    retrain: Asset


def use_case_assets(use_case: str) -> UseCaseAssets:
    """Return the Assets of ``use_case``, named by ``names.dag_names``."""
    names = dag_names(use_case)
    return UseCaseAssets(
        validated=Asset(name=names.validated_asset),
        champion=Asset(name=names.champion_asset),
        retrain=Asset(name=names.retrain_asset),
    )
