"""SQLite connection arguments for the embedded Airflow metadata DB (imported by Airflow by path).

Five processes (API server, scheduler, DAG processor, triggerer, task runners) share one SQLite file.
With the driver's default 5 s busy timeout a burst of writes made the scheduler die on "database is
locked"; waiting longer (together with WAL journaling, set by ``services.init_airflow``) avoids that.
"""

from typing import Any

BUSY_TIMEOUT_S = 60

CONNECT_ARGS: dict[str, Any] = {"timeout": BUSY_TIMEOUT_S}
CONNECT_ARGS_ASYNC: dict[str, Any] = {"timeout": BUSY_TIMEOUT_S}
