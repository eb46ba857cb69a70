"""A monitor check's figures as StatsD gauges, where Prometheus scrapes them and Grafana draws them.

Airflow's task runner sets up its StatsD client in every task process from ``[metrics]`` (``statsd_on``,
``statsd_host``, ``statsd_port``, ``statsd_prefix``); each figure goes out through it as the gauge
``mlloop.monitor.<use_case>.<figure>``. With the ``airflow`` prefix, statsd-exporter receives
``airflow.mlloop.monitor.<use_case>.<figure>`` and ``docker/prometheus/statsd-mapping.yml`` makes it
``mlloop_monitor_<figure>{use_case="<use_case>"}``. Plain StatsD has no tags, hence the use case in the name.
The figures are already in MLflow and storage when they are exported, so a StatsD that is off or
unreachable is logged, never a failed task (a retry would run the whole check again).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping

from airflow.sdk.configuration import conf
from airflow.sdk.observability import stats

log = logging.getLogger("mlloop.orchestration.metrics")

MONITOR_STAT_PREFIX = "mlloop.monitor"
# A use case is one dot-separated part of the name (a label value: dashes may stay); a figure becomes part
# of a Prometheus metric name, so only letters, digits and underscores.
_NOT_IN_USE_CASE = re.compile(r"[^A-Za-z0-9_-]")
_NOT_IN_FIGURE = re.compile(r"[^A-Za-z0-9_]")


def monitor_stat_name(use_case: str, figure: str) -> str:
    """Return the StatsD name of one figure, ``mlloop.monitor.<use_case>.<figure>``, each part sanitised."""
    return f"{MONITOR_STAT_PREFIX}.{_NOT_IN_USE_CASE.sub('_', use_case)}.{_NOT_IN_FIGURE.sub('_', figure)}"


def export_monitor_figures(use_case: str, figures: Mapping[str, float]) -> int:
    """Send each finite figure of ``use_case`` as a StatsD gauge; return how many were sent.

    Nothing is sent (0) while ``[metrics] statsd_on`` is off; non-finite figures are left out. StatsD is
    UDP, fire and forget: a gauge handed to the client counts as sent, whether a server listens or not.
    """
    finite = {
        monitor_stat_name(use_case, figure): float(value)
        for figure, value in figures.items()
        if isinstance(value, int | float) and math.isfinite(value)
    }
    if not conf.getboolean("metrics", "statsd_on", fallback=False):
        log.info("StatsD is off ([metrics] statsd_on): %d monitoring figures not exported", len(finite))
        return 0
    sent = 0
    for name, value in finite.items():
        try:
            stats.gauge(name, value)
        except Exception:  # a StatsD client or its config broken: the figures are recorded, go on
            log.warning(
                "StatsD gauge %s not sent; the rest of %s's figures skipped", name, use_case, exc_info=True
            )
            break
        sent += 1
    log.info(
        "Exported %d of %d monitoring figures of %s to StatsD (%s): %s",
        sent,
        len(figures),
        use_case,
        MONITOR_STAT_PREFIX,
        ", ".join(f"{name.rsplit('.', 1)[1]}={value:.6g}" for name, value in list(finite.items())[:sent]),
    )
    return sent
