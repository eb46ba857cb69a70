"""Airflow as deployed in production, started by a test: Postgres metadata DB, CeleryExecutor, Redis broker.

Configuration only: the environment the embedded stack builds (``mlloop.ops.services.stack_env``: DAGs
and plugins folders, simple auth manager, JWT secret, Execution API URL) with the metadata DB, executor,
broker, result backend, connections and ``MLLOOP_*`` settings replaced - no code path differs. Each
process runs in its own session, its output in ``<state>/service-logs/<name>.out``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlloop.ops.airflow_api import AirflowAPI

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
AIRFLOW_USER = "admin"  # mlloop.ops.services.AIRFLOW_USER
WORKERS = ("worker1", "worker2")
# What the embedded stack sets that a Postgres deployment must not inherit.
_LOCAL_ONLY = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC",
    "MLLOOP_PII_KEY",  # production reads the key from the Airflow connection mlloop_pii
    "MLFLOW_TRACKING_URI",
    "MLLOOP_MLFLOW_TRACKING_URI",
    "MLLOOP_DATA_ROOT",
)


def embedded_stack_env(state_dir: Path, port: int) -> dict[str, str]:
    """Return the environment ``mlloop.ops.services`` gives a stack kept in ``state_dir`` on ``port``.

    It is computed in a child process because the module fixes its paths and ports at import; the child
    also writes the stack's ``.env`` (random JWT secret, API secret, admin password) into ``state_dir``.
    """
    code = "import json; from mlloop.ops import services; print(json.dumps(services.stack_env()))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLLOOP_", "MLFLOW_", "AWS_"))}
    # One API server serves both the REST API and the tasks' Execution API here (Postgres: no SQLite lock).
    env.update(
        {
            "MLLOOP_STATE_DIR": str(state_dir),
            "MLLOOP_AIRFLOW_PORT": str(port),
            "MLLOOP_AIRFLOW_EXECUTION_PORT": str(port),
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise RuntimeError(f"building the stack environment failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def connection_env(conn_id: str, **fields: Any) -> dict[str, str]:
    """Return ``AIRFLOW_CONN_<ID>`` defining an Airflow connection from its JSON fields."""
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(fields)}


def production_env(
    base: dict[str, str],
    *,
    metadata_db_url: str,
    broker_url: str,
    result_backend: str,
    settings: dict[str, str],
) -> dict[str, str]:
    """Return ``base`` switched to Postgres + CeleryExecutor + Redis, with ``settings`` (env vars) on top."""
    env = {k: v for k, v in base.items() if k not in _LOCAL_ONLY}
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            # Celery then records which worker ran each task in its result table (column `worker`).
            "AIRFLOW__CELERY__EXTRA_CELERY_CONFIG": json.dumps({"result_extended": True}),
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            # Its health server has a fixed port (8974) another stack may hold; /monitor/health suffices.
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        }
    )
    env.update(settings)
    return env


@dataclass
class AirflowStack:
    """The running processes of one Airflow deployment and how to reach and diagnose it."""

    state_dir: Path
    url: str
    env: dict[str, str] = field(repr=False)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)

    @property
    def log_dir(self) -> Path:
        """Folder of the services' output (``<name>.out``)."""
        return self.state_dir / "service-logs"

    @property
    def task_log_dir(self) -> Path:
        """Airflow's task log folder (the workers write there; the API server reads it)."""
        return Path(self.env["AIRFLOW_HOME"]) / "logs"

    def api(self) -> AirflowAPI:
        """Return a REST client logged in as the stack's admin."""
        return AirflowAPI(self.url, AIRFLOW_USER, self.env["MLLOOP_AIRFLOW_PASSWORD"])

    def run_cli(self, *args: str, timeout_s: float = 300.0) -> None:
        """Run an ``airflow`` CLI command to completion; raise with its output when it fails."""
        out = self.log_dir / f"{'-'.join(args[:2])}.out"
        started = time.monotonic()
        with open(out, "w") as fh:
            proc = subprocess.run(
                [str(VENV_BIN / "airflow"), *args],
                env=self.env,
                cwd=REPO_ROOT,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
        if proc.returncode:
            raise RuntimeError(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}):\n{_tail(out)}")
        print(f"airflow {' '.join(args)}: {time.monotonic() - started:.0f}s")

    def start(self, name: str, *args: str, extra_env: dict[str, str] | None = None) -> None:
        """Start ``airflow <args>`` as service ``name`` in its own session."""
        with open(self.log_dir / f"{name}.out", "ab") as fh:
            self.procs[name] = subprocess.Popen(
                [str(VENV_BIN / "airflow"), *args],
                env={**self.env, **(extra_env or {})},
                cwd=REPO_ROOT,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def dead(self) -> list[str]:
        """Return the services that have exited."""
        return [name for name, proc in self.procs.items() if proc.poll() is not None]

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop every service and each process of its session: SIGTERM, SIGKILL after ``grace_s``."""
        stop_sessions(list(self.procs.values()), grace_s)

    def diagnosis(self, runs: Sequence[tuple[str, str]] = (), tail_lines: int = 30) -> str:
        """What to read when a wait fails: each run's task states, dead services, service log tails."""
        lines, failed_logs = [], []
        api = self.api()
        for dag_id, run_id in runs:
            try:
                states = api.task_states(dag_id, run_id)
            except Exception as exc:  # the API itself may be what died
                lines.append(f"{dag_id}/{run_id}: task states unavailable ({exc})")
                continue
            lines.append(f"{dag_id}/{run_id}: {states}")
            for task_id in (t for t, state in states.items() if state in {"failed", "up_for_retry"}):
                folder = self.task_log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
                failed_logs += sorted(folder.glob("*.log"))[-1:]
        lines.append(f"exited services: {self.dead() or 'none'}")
        for out in sorted(self.log_dir.glob("*.out")):
            tail = out.read_text(errors="replace").splitlines()[-tail_lines:]
            lines.append(f"--- {out.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        for path in failed_logs[:3]:
            events = [_log_event(line) for line in path.read_text(errors="replace").splitlines()]
            lines.append(f"--- task log {path.relative_to(self.task_log_dir)}\n" + "\n".join(events[-40:]))
        return "\n".join(lines)


def stop_sessions(procs: list[subprocess.Popen], grace_s: float) -> list[subprocess.Popen]:
    """SIGTERM each process's session, SIGKILL what remains after ``grace_s``; return those that had to be.

    Each was started with ``start_new_session``, so its pid is its process group: the kill also reaches
    the children (task supervisors, the training CLI) even when the leader is already gone.
    """
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    killed = []
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(proc)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    return killed


def _log_event(line: str) -> str:
    """Return the readable part of a task log line (Airflow 3 writes JSON lines)."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    return f"{record.get('level', '')} {record.get('event', '')} {record.get('error_detail', '')}".strip()


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return f"(no log at {path})"


def wait_for(check: Callable[[], Any], what: str, timeout_s: float, diagnose: Callable[[], str]) -> Any:
    """Poll ``check()`` every 2 s until it returns something truthy; fail with the diagnosis on timeout."""
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{diagnose()}")
        time.sleep(2)
    print(f"{what}: {time.monotonic() - started:.0f}s")
    return value


def airflow_health(url: str) -> dict[str, Any] | None:
    """Return the API server's health report when the metadata DB, scheduler and DAG processor are up."""
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as resp:
            health = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    parts = ("metadatabase", "scheduler", "dag_processor")
    return health if all(health.get(p, {}).get("status") == "healthy" for p in parts) else None


def celery_workers(broker_url: str) -> set[str]:
    """Return the node names of the Celery workers that answer a ping on ``broker_url``."""
    from celery import Celery

    app = Celery(broker=broker_url)
    try:
        replies = app.control.ping(timeout=2.0) or []
    finally:
        app.close()
    return {name for reply in replies for name in reply}


def start_airflow(stack: AirflowStack, broker_url: str, timeout_s: float = 240.0) -> None:
    """Migrate the metadata DB, start api-server, scheduler, DAG processor and the Celery workers; wait."""
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    home = Path(stack.env["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    Path(stack.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).write_text(
        json.dumps({AIRFLOW_USER: stack.env["MLLOOP_AIRFLOW_PASSWORD"]})
    )
    stack.run_cli("db", "migrate")
    port = stack.url.rsplit(":", 1)[1]
    stack.start("api-server", "api-server", "--host", "127.0.0.1", "--port", port, "--workers", "1")
    stack.start("scheduler", "scheduler")
    stack.start("dag-processor", "dag-processor")
    for name in WORKERS:
        # Logs are read from the shared folder, so no log server (two would clash on one port).
        stack.start(
            name, "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "1",
            "--skip-serve-logs", "--without-mingle", "--without-gossip",
        )  # fmt: skip

    def healthy() -> bool:
        if stack.dead():
            raise RuntimeError(f"{stack.dead()} exited while starting\n{stack.diagnosis()}")
        workers = {name.split("@")[0] for name in celery_workers(broker_url)}
        return bool(airflow_health(stack.url)) and workers >= set(WORKERS)

    wait_for(
        healthy, "Airflow API, scheduler, DAG processor and both Celery workers", timeout_s, stack.diagnosis
    )
