"""Airflow DAGs of every enabled mlloop use case: ingest_, train_, monitor_ and rollback_<use case>.

The DAGs are built from the use-case declarations by ``mlloop.orchestration.factory``; their pages
(doc_md) describe each one. Declare a use case (a YAML file and its suites) to get its DAGs: no code.
"""

from mlloop.orchestration.factory import build_dags

globals().update(build_dags())
