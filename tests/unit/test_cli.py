"""The `mlloop` command: every verb's help shows its real options and examples, and arguments pass through."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mlloop.cli import DelegatedCommand, cli


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``group``, as the words typed after ``mlloop``."""
    paths = []
    for name, command in sorted(group.commands.items()):
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, (*prefix, name)))
    return paths


COMMAND_PATHS = _command_paths(cli)
# The option each verb's own parser declares: its help must show it, so delegation is seen to work.
DELEGATED_OPTION = {
    "train": "--snapshot SNAPSHOT",
    "serve": "--no-seed-history",
    "simulate": "--drift DRIFT",
    "demo": "-h, --help",
    "generate": "--scenario [YYYY-MM-DD=]NAME",
    "flights": "--as AS_DAY",
}


def test_the_verbs_users_run_by_hand_are_there():
    assert set(DELEGATED_OPTION) | {"services"} <= {path[0] for path in COMMAND_PATHS}
    assert {("services", "up"), ("services", "down"), ("services", "status")} <= set(COMMAND_PATHS)


def test_top_level_help_lists_every_verb():
    result = CliRunner().invoke(cli, ["--help"], prog_name="mlloop")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: mlloop [OPTIONS] COMMAND")
    for name in cli.commands:
        assert f"\n  {name} " in result.output


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_every_command_help_has_an_example(path: tuple[str, ...]):
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="mlloop")
    assert result.exit_code == 0, result.output
    assert re.search(r"^\s*[Ee]xamples?:$", result.output, re.M), result.output
    assert re.search(rf"^\s+mlloop {' '.join(path)}\b", result.output, re.M), "no example of this command"


@pytest.mark.parametrize("verb", sorted(DELEGATED_OPTION))
def test_delegated_help_shows_the_entry_points_own_options_under_the_new_name(verb: str):
    command = cli.commands[verb]
    assert isinstance(command, DelegatedCommand)
    result = CliRunner().invoke(cli, [verb, "-h"], prog_name="mlloop")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"usage: mlloop {verb} [-h]")
    assert DELEGATED_OPTION[verb] in result.output
    assert f"\nalias: {command.alias}\n" in result.output
    usage = result.output.split("\n\n")[0]
    assert "python -m" not in usage
    # Wrapped usage lines stay under the first option, not where the longer alias would put them.
    indent = len(f"usage: mlloop {verb} ")
    assert all(line[:indent].isspace() and line[indent] != " " for line in usage.splitlines()[1:])


def test_generate_passes_its_arguments_to_the_generator(tmp_path: Path):
    result = CliRunner().invoke(
        cli, ["generate", "--start", "2026-01-05", "--days", "2", "--rows", "200", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "wrote 2 day(s) 2026-01-05..2026-01-06" in result.output
    for day in ("2026-01-05", "2026-01-06"):
        assert (tmp_path / "transactions" / f"date={day}" / "part-0.parquet").is_file()
        assert list((tmp_path / "labels" / "transactions").glob(f"date=*/transactions-{day}.parquet"))


def test_a_usage_error_names_the_cause_and_the_help_to_read():
    result = CliRunner().invoke(cli, ["generate", "--days", "2"])
    assert result.exit_code == 2
    assert "the following arguments are required: --start, --out" in result.stderr
    assert "Run `mlloop generate --help`" in result.stderr


def test_an_unknown_verb_is_refused_with_the_way_to_list_them():
    result = CliRunner().invoke(cli, ["trian"], prog_name="mlloop")
    assert result.exit_code == 2
    assert "No such command 'trian'" in result.stderr
    assert "mlloop --help" in result.stderr


def test_a_missing_dependency_names_the_package_and_the_install_command():
    broken = DelegatedCommand(
        "broken",
        module="mlloop_no_such_module",
        alias="python -m mlloop_no_such_module",
        examples="",
        summary="",
    )
    result = CliRunner().invoke(broken, [])
    assert result.exit_code == 1
    assert "'mlloop_no_such_module', which is not installed" in result.output
    assert "make install" in result.output


def test_the_installed_console_script_runs():
    script = Path(sys.executable).parent / "mlloop"
    assert script.is_file(), f"{script} is missing: run `make install` (pip install -e . creates it)"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Commands:" in proc.stdout
    assert "\n  train " in proc.stdout
