"""Small pieces shared by DAG files: assets and run-time resolution (kept light for parse time).

Importing the package installs Airflow's connections as the platform's connection readers
(``orchestration.connections``): every DAG file and task reads credentials through Airflow.
"""

from mlloop.orchestration.connections import use_airflow_connections

use_airflow_connections()
