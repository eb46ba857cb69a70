"""Production traffic for the closed loop: replay a day through the scoring service, score what it served.

``replay_day`` sends a day's rows to ``/predict/<use case>`` in time order (what production
traffic would do before the day's batch lands), so the inference log holds every answer with the
version that gave it. ``served_performance`` joins that log with the delayed labels known by a time and
scores the *served* answers per day: PR-AUC, recall and precision of the flag at the champion's
threshold.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from mlloop import clock
from mlloop.ops.polling import poll_until
from mlloop.ops.services import http_json
from mlloop.serving.client import request_rows

if TYPE_CHECKING:
    import pandas as pd

    from mlloop.storage import Storage
    from mlloop.usecase import UseCase

log = logging.getLogger(__name__)
# The generator, the inference log and the metrics (pandas, numpy) load inside the functions that use
# them: `mlloop simulate --help` and `mlloop demo --help` import this module.


def replay_day(
    serving_url: str, rows: pd.DataFrame, use_case: UseCase, batch_rows: int = 500
) -> dict[str, int]:
    """POST a day's rows in time order in batches; return how many rows each version answered.

    Raises:
        RuntimeError: naming the status and the service's message when a request is refused.
    """
    ordered = rows.sort_values(use_case.time_column, kind="stable")
    payload = request_rows(ordered, use_case)
    versions: dict[str, int] = {}
    started = time.perf_counter()
    for start in range(0, len(payload), batch_rows):
        body = json.dumps(payload[start : start + batch_rows]).encode()
        request = urllib.request.Request(  # noqa: S310 - the configured service URL
            f"{serving_url}/predict/{use_case.name}", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"the scoring service refused rows {start}..{start + batch_rows} with {exc.code}: "
                f"{exc.read()[:300]!r}"
            ) from exc
        version = str(answer["model_version"])
        versions[version] = versions.get(version, 0) + len(answer["predictions"])
    log.info(
        "Replayed %d rows through %s in %.1fs (versions %s)",
        len(payload),
        serving_url,
        time.perf_counter() - started,
        versions,
    )
    return versions


def serve_day(
    serving_url: str, use_case: UseCase, day: str, scenario: str, rows: int | None = None
) -> dict[str, int]:
    """Replay ``day``'s delivery (as its batch will land) through the service, from the use case's source.

    ``rows``: a generated day's rows (default: the use case's ``rows_per_day``); the batch must land
    with the same number, or the two would not be the same rows. A files source serves its delivery.
    """
    from mlloop.ingestion.batches import source_day

    traffic = source_day(use_case, dt.date.fromisoformat(day), scenario, rows)
    return replay_day(serving_url, traffic, use_case)


def served_day(
    storage: Storage, use_case: UseCase, day: str, timeout_s: float = 60.0, rows: int | None = None
) -> dict[str, Any]:
    """Return ``served_performance`` of ``day`` once the inference log holds its whole traffic.

    ``rows``: the day's traffic as served (default: the use case's ``rows_per_day``). The service
    writes its tail within MLLOOP_INFERENCE_FLUSH_SECONDS; after ``timeout_s`` the row is returned
    with what was written.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        row = served_performance(storage, use_case, day, clock.now())
        if row["served"] >= (rows or use_case.source.rows_per_day) or time.monotonic() > deadline:
            return row
        time.sleep(2)


def wait_until_serving(
    serving_url: str, version: str, timeout_s: float = 120.0, use_case: str | None = None
) -> dict[str, Any]:
    """Wait until ``/ready`` names ``version`` for ``use_case`` (default: the service's); return its body.

    Raises:
        TimeoutError: naming what the service reported last.
    """
    ready: Any = None

    def serves_it() -> dict[str, Any] | None:
        nonlocal ready
        try:
            ready = http_json(f"{serving_url}/ready")
        except OSError as exc:
            ready = f"{type(exc).__name__}: {exc}"
        if not isinstance(ready, dict):
            return None
        served = (ready.get("use_cases") or {}).get(use_case, {}) if use_case else ready
        return ready if str(served.get("model_version")) == str(version) else None

    return poll_until(
        serves_it,
        every_s=1,
        timeout_s=timeout_s,
        timed_out=lambda _: TimeoutError(
            f"the scoring service at {serving_url} does not serve v{version} after {timeout_s:.0f}s "
            f"(last /ready: {ready}); see its log (.airflow/logs/scoring.out under make up)"
        ),
    )


def served_performance(
    storage: Storage, use_case: UseCase, day: str, as_of: dt.datetime, precision: float | None = None
) -> dict[str, Any]:
    """Score the answers served for ``day`` against the labels known by ``as_of`` (RMSE, MAE: regression).

    A row answered twice (a replay) counts once, with its latest answer. ``precision``: of the recall
    reported (default: the use case's gate ``fixed_precision``, the served threshold's).
    """
    import numpy as np

    from mlloop.promotion.gate_config import load_gate_config
    from mlloop.promotion.metrics import pr_auc, recall_at_precision
    from mlloop.serving.inference_log import labelled_answers

    if precision is None:
        precision = load_gate_config(use_case=use_case).fixed_precision

    row: dict[str, Any] = {"day": day, "served": 0, "versions": "", "labelled": 0, "pr_auc": None}
    served = labelled_answers(storage, use_case, [day], as_of)
    if served.empty:
        return row
    joined = served[served[use_case.target_column].notna()]
    counts = served["model_version"].astype(str).value_counts().sort_index()
    row.update(
        served=len(served),
        versions=", ".join(f"v{v}: {n}" for v, n in counts.items()),
        labelled=len(joined),
    )
    if use_case.task == "regression":  # the logged score is the predicted value
        if len(joined):
            from mlloop.promotion.regression import mae, rmse

            labels, predicted = joined[use_case.target_column], joined["score"]
            row.update(rmse=round(rmse(labels, predicted), 2), mae=round(mae(labels, predicted), 2))
        return row
    y = joined[use_case.target_column].to_numpy(dtype=np.int8)
    if 0 < int(y.sum()) < len(y):
        scores = joined["score"].to_numpy(dtype=np.float64)
        flagged = joined["flagged"].to_numpy(dtype=bool)
        row.update(
            pr_auc=round(float(pr_auc(y, scores)), 4),
            recall_at_precision=round(float(recall_at_precision(y, scores, precision)), 4),
            flag_precision=round(float(y[flagged].mean()), 4) if flagged.any() else None,
            flag_recall=round(float(flagged[y == 1].mean()), 4),
        )
    return row
