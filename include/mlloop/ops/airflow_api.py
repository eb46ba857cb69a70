"""A small client for the Airflow 3 REST API (``/api/v2``) with the simple auth manager's JWT login."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mlloop.ops.polling import poll_until


class AirflowAPIError(RuntimeError):
    """Raised when the Airflow API answers with an error status."""


class AirflowAPI:
    """Call the Airflow REST API as one user; the token is fetched on first use."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {self.token()}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback URL
                payload = resp.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise AirflowAPIError(f"{method} {path} -> HTTP {exc.code}: {detail}") from exc
        return json.loads(payload) if payload else None

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
        """Trigger a manual run with ``conf`` (its Params) and no logical date."""
        return self._request(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            {"dag_run_id": run_id, "logical_date": None, "conf": conf},
        )

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
