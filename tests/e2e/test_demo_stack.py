"""End to end: the embedded stack starts, the demo job runs through the real scheduler twice, down stops all.

This is what `make demo` / `make down` do, on free ports and a throwaway state folder so it never
touches a developer's running stack.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from mlloop.ops.demo import DEMO_DAYS

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]


def _demo_objects(state: Path, area: str) -> list[str]:
    """Parquet objects of the demo's days in an area (a scheduled run for yesterday may add others)."""
    days = {f"date={day}" for day, _ in DEMO_DAYS}
    return sorted(
        str(p.relative_to(state)) for p in (state / "data" / area).rglob("*.parquet") if p.parent.name in days
    )


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            environ = (cmdline.parent / "environ").read_bytes().decode(errors="ignore")
        except OSError:
            continue
        if int(cmdline.parent.name) != os.getpid() and (text in args or text in environ):
            found.append(f"{cmdline.parent.name}: {args[:120]}")
    return found


@pytest.fixture(scope="module")
def stack(tmp_path_factory, free_port):
    state = tmp_path_factory.mktemp("stack")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "MLLOOP_STATE_DIR": str(state),
            "MLLOOP_DATA_ROOT": str(state / "data"),
            "MLLOOP_AIRFLOW_PORT": str(free_port()),
            "MLLOOP_MLFLOW_PORT": str(free_port()),
        }
    )

    def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    up = run("mlloop.ops.services", "up", timeout=600)
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield run, env, state
    finally:
        down = run("mlloop.ops.services", "down", timeout=300)
        assert down.returncode == 0, down.stderr[-2000:]


def test_demo_runs_twice_and_down_leaves_nothing(stack) -> None:
    run, env, state = stack
    first = run("mlloop.ops.demo")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    for day, scenario in DEMO_DAYS:
        assert day in first.stdout and scenario in first.stdout
    assert "quarantined: expect_column_values_to_not_be_null(amount)" in first.stdout
    assert f"http://127.0.0.1:{env['MLLOOP_AIRFLOW_PORT']}" in first.stdout
    for port, path in (
        (env["MLLOOP_AIRFLOW_PORT"], "/api/v2/monitor/health"),
        (env["MLLOOP_MLFLOW_PORT"], "/health"),
    ):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            assert resp.status == 200
    raw_before = _demo_objects(state, "raw")
    validated_before = _demo_objects(state, "validated")
    assert len(raw_before) == len(DEMO_DAYS)
    assert len(validated_before) == sum(1 for _, s in DEMO_DAYS if s == "none")

    second = run("mlloop.ops.demo")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert _demo_objects(state, "raw") == raw_before
    assert _demo_objects(state, "validated") == validated_before

    down = run("mlloop.ops.services", "down", timeout=300)
    assert down.returncode == 0, down.stderr[-2000:]
    assert _processes_mentioning(str(state)) == []
    for port in (env["MLLOOP_AIRFLOW_PORT"], env["MLLOOP_MLFLOW_PORT"]):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still answers after down"
