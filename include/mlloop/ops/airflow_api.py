"""A small client for the Airflow 3 REST API (``/api/v2``) with the simple auth manager's JWT login."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mlloop.ops.polling import poll_until

ATTEMPTS = 3  # tries of a request that timed out or lost its connection
TIMEOUT_S = 60  # per try: the API server answers slowly while a 2-core machine runs many tasks

log = logging.getLogger(__name__)


class AirflowAPIError(RuntimeError):
    """Raised when the Airflow API answers with an error status (``status``), or not at all (None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AirflowAPI:
    """Call the Airflow REST API as one user; the token is fetched on first use."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        """Send one request; a timeout or dropped connection is retried (a loaded API server recovers).

        Every call here is safe to repeat: reads, setting a DAG's pause flag, answering a review, and
        triggering a run by its id (``trigger`` reads a repeat's 409 as the run it created).

        Raises:
            AirflowAPIError: on an HTTP error status, or when the server did not answer after the retries.
        """
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(1, ATTEMPTS + 1):
            req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)  # noqa: S310
            req.add_header("Content-Type", "application/json")
            if auth:
                req.add_header("Authorization", f"Bearer {self.token()}")
            try:
                with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - loopback URL
                    payload = resp.read().decode()
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:500]
                raise AirflowAPIError(f"{method} {path} -> HTTP {exc.code}: {detail}", exc.code) from exc
            except (TimeoutError, ConnectionError, urllib.error.URLError) as exc:
                if attempt == ATTEMPTS:
                    raise AirflowAPIError(
                        f"{method} {path}: no answer from {self.base_url} after {ATTEMPTS} tries ({exc}); is "
                        "the Airflow API server up and not overloaded (`make status`)?"
                    ) from exc
                log.warning("%s %s: %s; retrying (%d of %d)", method, path, exc, attempt + 1, ATTEMPTS)
                time.sleep(2 * attempt)
                continue
            return json.loads(payload) if payload else None
        raise AssertionError("unreachable")

    def token(self) -> str:
        """Return a JWT for the configured user (logging in once)."""
        if self._token is None:
            self._token = self._request("POST", "/auth/token", self._credentials, auth=False)["access_token"]
        return self._token

    def get(self, path: str) -> Any:
        """GET ``/api/v2{path}``."""
        return self._request("GET", f"/api/v2{path}")

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
        """Wait until the DAG processor has registered ``dag_id``; raise naming import errors on timeout."""

        def registered() -> dict[str, Any] | None:
            try:
                return self.get(f"/dags/{dag_id}")
            except AirflowAPIError:
                return None

        def not_registered(_: float) -> AirflowAPIError:
            errors = self.get("/importErrors").get("import_errors", [])
            return AirflowAPIError(
                f"DAG {dag_id} was not registered within {timeout_s:.0f}s; import errors: "
                f"{[e.get('filename') + ': ' + e.get('stack_trace', '')[-300:] for e in errors]}"
            )

        return poll_until(registered, every_s=3, timeout_s=timeout_s, timed_out=not_registered)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause a DAG."""
        self._request("PATCH", f"/api/v2/dags/{dag_id}?update_mask=is_paused", {"is_paused": paused})

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """Trigger a manual run with ``conf`` (its Params) and no logical date; return the run.

        A run that already exists under ``run_id`` with the same conf (a retried request whose first try
        was created) is returned as it is.
        """
        try:
            return self._request(
                "POST",
                f"/api/v2/dags/{dag_id}/dagRuns",
                {"dag_run_id": run_id, "logical_date": None, "conf": conf},
            )
        except AirflowAPIError as exc:
            if exc.status != 409:
                raise
            existing = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")
            if existing.get("conf") != conf:
                raise
            return existing

    def run_state(self, dag_id: str, run_id: str) -> str:
        """Return a DAG run's state (queued, running, success, failed)."""
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def runs_since(self, dag_id: str, since: str) -> list[dict[str, Any]]:
        """Return a DAG's runs whose run_after is at or after ``since`` (ISO 8601), oldest first."""
        query = urllib.parse.urlencode({"run_after_gte": since, "order_by": "run_after", "limit": 100})
        return self.get(f"/dags/{dag_id}/dagRuns?{query}")["dag_runs"]

    def unfinished_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Return a DAG's queued and running runs, whatever started them."""
        return self.get(f"/dags/{dag_id}/dagRuns?state=queued&state=running&limit=100")["dag_runs"]

    def queued_asset_events(self, dag_id: str) -> int:
        """Return how many asset events wait to start a run of ``dag_id``."""
        return int(self.get(f"/dags/{dag_id}/assets/queuedEvents")["total_entries"])

    def task_result(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """Return a task's XCom ``key`` (its return value by default), or None when it has none."""
        try:
            entry = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}")
        except AirflowAPIError:
            return None
        return entry.get("value")

    def respond(self, dag_id: str, run_id: str, task_id: str, options: list[str]) -> dict[str, Any]:
        """Answer a human-in-the-loop task (what a reviewer does under Required actions in the UI)."""
        return self._request(
            "PATCH",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
            {"chosen_options": options, "params_input": {}},
        )

    def extra_links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        """Return a task instance's extra links by name."""
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links")["extra_links"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Return each task's state in a run."""
        tis = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}
