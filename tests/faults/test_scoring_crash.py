"""The scoring service SIGKILLed after answering: every answered row is in the inference log after a restart.

The service runs as its own process group against a real MLflow registry; 300 requests of 10 rows are
answered (with the log's flush far away: 5,000 rows / 10 s by default, here never), then the whole group
gets SIGKILL, as an OOM kill or a lost node does. The restarted service replays its write-ahead file, and
the rows under ``inference/`` are exactly the answered ones, with the same transaction and request ids.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from service_stack import launch

from mlloop.serving.client import request_rows
from mlloop.storage import Storage
from mlloop.usecase import load_use_case

USE_CASE = load_use_case("card_fraud")
REQUESTS, ROWS_PER_REQUEST = 300, 10
pytestmark = pytest.mark.slow


def _post(url: str, rows: list[dict]) -> dict:
    import urllib.request

    request = urllib.request.Request(f"{url}/predict/card_fraud", data=json.dumps(rows).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def _logged(data_root: Path) -> pd.DataFrame:
    storage = Storage(str(data_root))
    frame = storage.read_days(
        "inference", "transactions", list(storage.iter_partitions("inference", "transactions"))
    )
    return frame if frame is not None else pd.DataFrame({"transaction_id": [], "request_id": []})


def test_every_answered_row_survives_a_sigkill_of_the_service(registry, free_port, tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    settings = {"inference_flush_rows": "1000000", "inference_flush_seconds": "3600"}
    service = launch(registry, free_port(), tmp_path, data_root, **settings)
    service.wait_ready()
    traffic = request_rows(registry.traffic.iloc[: REQUESTS * ROWS_PER_REQUEST], USE_CASE)
    batches = [traffic[i : i + ROWS_PER_REQUEST] for i in range(0, len(traffic), ROWS_PER_REQUEST)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda rows: _post(service.url, rows), batches))
    answered = {p["transaction_id"] for a in answers for p in a["predictions"]}
    assert len(answered) == REQUESTS * ROWS_PER_REQUEST
    assert _logged(data_root).empty, "nothing should be stored before the kill (flush disabled)"

    os.killpg(service.proc.pid, signal.SIGKILL)
    service.stop(signal.SIGKILL)
    assert service.proc.returncode == -signal.SIGKILL

    started = time.monotonic()
    restarted = launch(registry, free_port(), tmp_path, data_root, **settings)
    try:
        restarted.wait_ready()
        recovered_s = time.monotonic() - started
        logged = _logged(data_root)
        assert len(logged) == len(answered), restarted.log()
        assert set(logged["transaction_id"]) == answered
        answered_scores = {p["transaction_id"]: p["score"] for a in answers for p in a["predictions"]}
        assert logged.set_index("transaction_id")["score"].to_dict() == answered_scores
        assert logged.groupby("request_id").size().eq(ROWS_PER_REQUEST).all()
        assert "replaying 3000 rows" in restarted.log()
        print(
            f"SIGKILL after {len(answered)} answered rows: all logged; restart + replay {recovered_s:.1f} s"
        )
    finally:
        restarted.stop(signal.SIGKILL)
