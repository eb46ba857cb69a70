"""The Airflow REST client survives a slow API server: a timed-out request is retried, a repeated trigger
is read as the run its first try created, and a server that never answers is named in the error."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from mlloop.ops import airflow_api
from mlloop.ops.airflow_api import AirflowAPI, AirflowAPIError


class SlowAirflow(BaseHTTPRequestHandler):
    """Creates runs like /api/v2 does; the first answer of each kind comes after the client gave up."""

    runs: ClassVar[dict[str, dict]] = {}
    slow: ClassVar[set[str]] = set()

    def _answer(self, status: int, body: dict) -> None:
        if self.command not in self.slow:
            self.slow.add(self.command)
            time.sleep(0.6)  # past the client's timeout; the server still does the work
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client hung up

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/auth/token":
            self.slow.add("POST")  # logging in is quick
            return self._answer(201, {"access_token": "t"})
        if body["dag_run_id"] in self.runs:
            return self._answer(409, {"detail": "run exists"})
        self.runs[body["dag_run_id"]] = {
            "dag_run_id": body["dag_run_id"],
            "conf": body["conf"],
            "state": "queued",
        }
        self.slow.discard("POST")  # the trigger itself is slow once
        return self._answer(200, self.runs[body["dag_run_id"]])

    def do_GET(self) -> None:
        return self._answer(200, self.runs[self.path.rsplit("/", 1)[1]])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(airflow_api, "TIMEOUT_S", 0.3)
    SlowAirflow.runs, SlowAirflow.slow = {}, set()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowAirflow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_a_timed_out_trigger_is_retried_and_its_run_returned_once(server: str) -> None:
    api = AirflowAPI(server, "admin", "pw")
    run = api.trigger("ingest_x", "demo__1", {"day": "2026-04-01"})
    assert run["dag_run_id"] == "demo__1" and list(SlowAirflow.runs) == ["demo__1"]
    assert api.run_state("ingest_x", "demo__1") == "queued"  # a slow GET is retried too


def test_a_run_id_taken_with_another_conf_is_still_an_error(server: str) -> None:
    api = AirflowAPI(server, "admin", "pw")
    SlowAirflow.runs["demo__2"] = {"dag_run_id": "demo__2", "conf": {"day": "other"}, "state": "success"}
    SlowAirflow.slow |= {"GET"}
    with pytest.raises(AirflowAPIError, match="HTTP 409"):
        api.trigger("ingest_x", "demo__2", {"day": "2026-04-01"})


def test_a_server_that_never_answers_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(airflow_api, "TIMEOUT_S", 0.2)
    monkeypatch.setattr(airflow_api.time, "sleep", lambda _: None)
    api = AirflowAPI("http://127.0.0.1:9", "admin", "pw")  # nothing listens on the discard port
    with pytest.raises(AirflowAPIError, match=r"no answer from http://127.0.0.1:9 after 3 tries"):
        api.get("/dags/x")
