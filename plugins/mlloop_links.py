"""Airflow plugin: registers mlloop's operator extra links (MLflow run, gate report, model version).

The links themselves live in ``mlloop.orchestration.links`` (importable and tested without a plugin
manager); registering them here lists them under Admin > Plugins and lets the API server resolve them.
"""

from __future__ import annotations

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from mlloop.orchestration.links import ALL_LINKS


class MlloopLinksPlugin(AirflowPlugin):
    """Extra links from train, gate, promote/reject and monitoring tasks to MLflow."""

    name = "mlloop_links"
    operator_extra_links: ClassVar[list] = [link() for link in ALL_LINKS]
