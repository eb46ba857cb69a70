"""A monitor check's figures reach Grafana: StatsD gauges through Airflow's own client, mapped by
docker/prometheus/statsd-mapping.yml to the metrics the dashboard's monitoring row queries.

A UDP socket on 127.0.0.1 stands in for statsd-exporter. Airflow's stats module is set up as its task
runner sets it up in every task process (``stats.initialize`` with the factory ``[metrics]`` selects), from
``AIRFLOW__METRICS__*`` variables. The figures come from ``check_figures`` on decisions of every monitored
metric, so a figure added there without a mapping or a panel fails here.
"""

from __future__ import annotations

import json
import logging
import math
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any, get_args

import pytest
from airflow.sdk.observability import stats
from airflow.sdk.observability.metrics import stats_utils
from test_deploy_material import (
    DASHBOARD,
    monitoring_panels,
    queried_metrics,
    statsd_metric,
)
from test_monitor_decision import band, evidence

from mlloop.monitoring.decision import (
    GuardOutcome,
    MonitorEvidence,
    PerformanceBand,
    PerformanceMetric,
    decide,
    load_monitor_config,
)
from mlloop.monitoring.runner import check_figures
from mlloop.orchestration.metrics import export_monitor_figures, monitor_stat_name

PREFIX = "airflow"
GENERIC = "performance"


def _set_up_stats(monkeypatch: pytest.MonkeyPatch, **metrics: str) -> None:
    """Set ``[metrics]`` options through the environment and initialise stats as the task runner does."""
    for option, value in metrics.items():
        monkeypatch.setenv(f"AIRFLOW__METRICS__{option.upper()}", value)
    stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=True)


@pytest.fixture
def statsd_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 that Airflow's StatsD client sends to (prefix ``airflow``)."""
    try:
        import statsd  # noqa: F401  (Airflow's StatsD factory imports it; without it, stats go nowhere)
    except ImportError:
        pytest.fail("the statsd package is missing: requirements.txt pins it (Airflow's statsd extra)")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.5)
    _set_up_stats(
        monkeypatch,
        statsd_on="True",
        statsd_host="127.0.0.1",
        statsd_port=str(server.getsockname()[1]),
        statsd_prefix=PREFIX,
    )
    try:
        yield server
    finally:
        server.close()
        for option in (
            "STATSD_ON",
            "STATSD_HOST",
            "STATSD_PORT",
            "STATSD_PREFIX",
            "STATSD_CUSTOM_CLIENT_PATH",
        ):
            monkeypatch.delenv(f"AIRFLOW__METRICS__{option}", raising=False)
        stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=True)


def _received(server: socket.socket) -> list[tuple[str, str]]:
    """Return every (name, value|type) line that arrived, in order (a packet may hold several)."""
    lines = []
    while True:
        try:
            packet = server.recv(65536).decode("ascii")
        except TimeoutError:
            return lines
        for line in packet.splitlines():
            name, value = line.split(":", 1)
            lines.append((name, value))


def _gauges(server: socket.socket) -> dict[str, float]:
    """Return each gauge's last value (StatsD sets a negative gauge as 0, then the negative value)."""
    gauges = {}
    for name, value in _received(server):
        number, kind = value.split("|")
        assert kind == "g", (name, value)
        gauges[name] = float(number)
    return gauges


# -- figures of real decisions -------------------------------------------------------------------------
def _band(metric: str) -> PerformanceBand:
    """A reference of ``metric`` shaped like test_monitor_decision's ROC-AUC band, at the metric's scale."""
    value, no_skill = {
        "roc_auc": (0.95, 0.5),
        "pr_auc_lift": (30.0, 1.0),
        "log_loss": (0.05, 0.07),
        "rmse": (5.0, 12.0),  # a regression champion: minutes of error, against predicting the mean
        "mae": (4.0, 9.0),
    }[metric]
    return band(
        metric=metric,
        higher_is_better=metric not in ("log_loss", "rmse", "mae"),
        holdout_value=value,
        holdout_se=0.007 * value,
        expected=value,
        window_se=0.007 * value,
        no_skill=no_skill,
    )


def _evidence(metric: str) -> MonitorEvidence:
    """A window where every check ran: drift, prediction drift, realised and estimated metric, base rate."""
    value = _band(metric).holdout_value
    return evidence(
        drift_share=0.12,
        drifted_columns=["amount"],
        prediction_drift_score=0.04,
        drift_threshold=0.3,
        prediction_drift_threshold=0.1,
        top_drift_share=0.5,
        top_drift_threshold=0.5,
        estimated_performance=value,
        estimated_band=(0.98 * value, 1.02 * value),
        estimate_note="estimated from calibrated scores",
        performance=0.99 * value,
        performance_band=_band(metric),
    )


def _decision(metric: str):
    config = load_monitor_config({"performance_metric": metric})
    return decide(_evidence(metric), config)


METRICS = get_args(PerformanceMetric)


def _all_figures() -> dict[str, float]:
    """Every figure check_figures can produce: each monitored metric's names and the generic ones."""
    figures: dict[str, float] = {}
    for metric in METRICS:
        decision, evidence = _decision(metric), _evidence(metric)
        figures |= check_figures(decision, evidence, "trigger", "7")
        figures |= check_figures(decision, evidence, "trigger", "7", metric_key=GENERIC)
    return figures


def _generic_figures() -> set[str]:
    return set(check_figures(_decision("roc_auc"), _evidence("roc_auc"), "quiet", "7", metric_key=GENERIC))


@pytest.mark.parametrize("metric", METRICS)
def test_check_figures_carry_thresholds_and_the_metric_under_its_own_and_generic_names(metric: str) -> None:
    decision, evidence = _decision(metric), _evidence(metric)
    named = check_figures(decision, evidence, "trigger", "7")
    generic = check_figures(decision, evidence, "trigger", "7", metric_key=GENERIC)
    assert named["drift_threshold"] == 0.3 and named["prediction_drift_threshold"] == 0.1
    assert named["top_drift_share"] == 0.5 and named["top_drift_threshold"] == 0.5
    suffixes = ("", "_interval_low", "_interval_high", "_expected", "_band_edge", "_fires_beyond")
    for suffix in suffixes:
        assert generic[GENERIC + suffix] == named[metric + suffix], suffix
        assert metric + suffix not in generic
    shared = set(named) - {metric + s for s in suffixes}
    assert {k: generic[k] for k in shared} == {k: named[k] for k in shared}
    assert named[metric] == pytest.approx(0.99 * _band(metric).holdout_value)
    # An uncalibrated threshold is no figure (a gap in the chart, never a zero).
    uncalibrated = replace(evidence, drift_threshold=None)
    assert "drift_threshold" not in check_figures(decision, uncalibrated, "quiet", "7")


# -- StatsD --------------------------------------------------------------------------------------------
def test_figures_go_out_as_gauges_named_by_use_case(statsd_server: socket.socket) -> None:
    figures = {
        "drift_share": 0.12,
        "drift_threshold": 0.3,
        "roc_auc": 0.91,
        "performance_band_edge": -0.02,
        "label_shift": 0.0,
        "labelled_rows": 20_000,
        "not_measured": math.nan,
        "unbounded": math.inf,
    }
    sent = export_monitor_figures("card_fraud", figures)
    lines = _received(statsd_server)
    assert ("airflow.mlloop.monitor.card_fraud.drift_share", "0.12|g") in lines
    gauges = {}
    for name, value in lines:
        gauges[name] = float(value.removesuffix("|g"))
    assert sent == 6
    assert gauges == {
        "airflow.mlloop.monitor.card_fraud.drift_share": 0.12,
        "airflow.mlloop.monitor.card_fraud.drift_threshold": 0.3,
        "airflow.mlloop.monitor.card_fraud.roc_auc": 0.91,
        "airflow.mlloop.monitor.card_fraud.performance_band_edge": -0.02,
        "airflow.mlloop.monitor.card_fraud.label_shift": 0.0,
        "airflow.mlloop.monitor.card_fraud.labelled_rows": 20_000.0,
    }


def test_names_are_sanitised_to_one_name_part_each(statsd_server: socket.socket) -> None:
    assert export_monitor_figures("card fraud.eu", {"roc auc/x": 0.5, "drift-share": 0.1}) == 2
    gauges = _gauges(statsd_server)
    assert set(gauges) == {
        "airflow.mlloop.monitor.card_fraud_eu.roc_auc_x",
        "airflow.mlloop.monitor.card_fraud_eu.drift_share",
    }
    assert statsd_metric("airflow.mlloop.monitor.card_fraud_eu.roc_auc_x") == (
        "mlloop_monitor_roc_auc_x",
        {"use_case": "card_fraud_eu"},
    )
    assert monitor_stat_name("loan-default", "roc_auc") == "mlloop.monitor.loan-default.roc_auc"


def test_statsd_off_sends_nothing_and_does_not_raise(
    statsd_server: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_up_stats(monkeypatch, statsd_on="False")
    assert export_monitor_figures("card_fraud", {"drift_share": 0.12}) == 0
    assert _received(statsd_server) == []


def test_unreachable_or_broken_statsd_never_fails_the_task(
    statsd_server: socket.socket, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Nobody listens on the port: UDP is fire and forget.
    statsd_server.close()
    assert export_monitor_figures("card_fraud", {"drift_share": 0.12, "roc_auc": 0.9}) == 2
    # A host that does not resolve: Airflow falls back to no stats.
    _set_up_stats(monkeypatch, statsd_host="statsd-exporter.invalid")
    assert export_monitor_figures("card_fraud", {"drift_share": 0.12}) == 1
    # A client Airflow refuses (not a statsd.StatsClient): logged, nothing sent, the task goes on.
    _set_up_stats(monkeypatch, statsd_host="127.0.0.1", statsd_custom_client_path="collections.OrderedDict")
    with caplog.at_level(logging.WARNING, logger="mlloop.orchestration.metrics"):
        assert export_monitor_figures("card_fraud", {"drift_share": 0.12}) == 0
    assert "not sent" in caplog.text


def test_every_figure_reaches_a_metric_of_the_monitoring_row(statsd_server: socket.socket) -> None:
    figures = _all_figures()
    assert export_monitor_figures("card_fraud", figures) == len(figures)
    gauges = _gauges(statsd_server)
    assert len(gauges) == len(figures)
    exported = {}
    for name, value in gauges.items():
        mapped = statsd_metric(name)
        assert mapped is not None, f"{name} maps to no Prometheus metric in statsd-mapping.yml"
        metric, labels = mapped
        assert labels == {"use_case": "card_fraud"}, name
        exported[metric] = value
    assert set(exported) == {f"mlloop_monitor_{name}" for name in figures}
    generic = {f"mlloop_monitor_{name}" for name in _generic_figures()}
    panels = monitoring_panels()
    drawn = set().union(*(queried_metrics(panel) for panel in panels))
    # A panel for every figure; none for a name only one metric has (roc_auc...): those vary per use case.
    assert generic - drawn == set(), "figures no monitoring panel draws"
    assert drawn - generic == set(), "monitoring panels query what check_figures does not produce"
    for panel in panels:
        assert panel["description"].strip(), panel["title"]
        for target in panel["targets"]:
            assert 'use_case=~"$use_case"' in target["expr"], (panel["title"], target["expr"])
            assert "{{use_case}}" in target["legendFormat"], (panel["title"], target["legendFormat"])
    (variable,) = json.loads(DASHBOARD.read_text())["templating"]["list"]
    assert variable["name"] == "use_case"
    assert queried_metrics({"targets": [{"expr": variable["definition"]}]}) <= generic


# -- the check task's summary --------------------------------------------------------------------------
def test_record_returns_the_figures_for_export_as_json(tmp_path) -> None:
    """``_record`` on a real MLflow store: the summary (an XCom) carries the use case and its figures."""
    from mlflow import MlflowClient

    from mlloop.monitoring.drift import DriftResult
    from mlloop.monitoring.quality import QualityResult
    from mlloop.monitoring.runner import MONITORING_EXPERIMENT, CheckResult, _record
    from mlloop.storage import Storage
    from mlloop.usecase import load_use_case

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    # Artifacts under tmp_path too (a SQLite store would put them in ./mlruns).
    client.create_experiment(MONITORING_EXPERIMENT, artifact_location=(tmp_path / "artifacts").as_uri())
    drift = DriftResult(
        columns=[],
        drift_share=0.12,
        drifted_columns=1,
        rows_reference=100,
        rows_current=100,
        method_note="",
        seconds=0.0,
    )
    result = CheckResult(
        evidence=_evidence("roc_auc"),
        drift=drift,
        prediction=drift,
        quality=(QualityResult(rows=100, columns=[], seconds=0.0), []),
        current_snapshot="0" * 64,
    )
    use_case = load_use_case("card_fraud")
    policy: dict[str, Any] = {"version": "test", "fingerprint": "f", "effective": {}}
    summary = _record(
        Storage(str(tmp_path / "data")),
        client,
        use_case,
        result,
        champion_version="3",
        days=[date(2030, 1, 2)],
        now=datetime(2030, 1, 3, 6, tzinfo=UTC),
        outcome=GuardOutcome("quiet", "no rule fired"),
        decision=_decision("roc_auc"),
        policy=policy,
        dry_run=False,
    )
    assert json.loads(json.dumps(summary)) == summary
    assert summary["use_case"] == use_case.name
    figures = summary["figures"]
    assert figures["drift_threshold"] == 0.3 and figures["champion_version"] == 3.0
    assert figures["performance"] == figures["roc_auc"] == pytest.approx(0.99 * 0.95)
    logged = client.get_run(summary["report_run"]).data.metrics
    assert logged["drift_threshold"] == 0.3 and "performance" not in logged, "MLflow keeps the metric's name"
