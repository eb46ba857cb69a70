"""The ``mlloop`` console command: one verb per thing a person runs by hand.

Each verb delegates to the entry point that already owns its options (``main(argv)`` of its module):
arguments pass through untouched, so an option is declared once, in that module's parser, and
``python -m <module>`` keeps working as an alias. Use-case commands join as further groups, the way
``services`` is one. Nothing heavy is imported until a verb runs, so ``mlloop --help`` is instant.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from mlloop.usecase import DeclaredUseCase

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _entry_main(module: str) -> Callable[[list[str]], int]:
    """Import ``module`` and return its ``main(argv)``; a missing dependency names the fix."""
    try:
        return importlib.import_module(module).main
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"{module} needs the Python package {exc.name!r}, which is not installed in {sys.prefix}. "
            "Run `make install` from the repository root (it installs requirements.txt into .venv)."
        ) from exc


class DelegatedCommand(click.Command):
    """A verb whose options belong to an existing argparse entry point; its help shows them."""

    def __init__(self, name: str, module: str, alias: str, examples: str, summary: str) -> None:
        self.module = module
        self.alias = alias
        self.examples = examples
        super().__init__(
            name,
            callback=self._run,
            params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
            help=summary,
            context_settings={**CONTEXT_SETTINGS, "ignore_unknown_options": True},
        )

    def _run(self, args: tuple[str, ...]) -> None:
        main = _entry_main(self.module)
        try:
            code = main(list(args))
        except SystemExit as exc:
            if exc.code == 2:  # argparse's usage error, already printed with its cause
                click.echo(
                    f"({self.alias} is `mlloop {self.name}`.) Run `mlloop {self.name} --help` "
                    "for its options and examples.",
                    err=True,
                )
            raise
        click.get_current_context().exit(code or 0)

    def delegated_help(self) -> str:
        """Return the entry point's own ``--help`` text, its program name replaced by this verb's."""
        main = _entry_main(self.module)
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
            main(["--help"])
        usage, _, rest = buffer.getvalue().partition("\n\n")
        # argparse indents wrapped usage lines under the end of its program name: shift them with it.
        shift = len(self.alias) - len(f"mlloop {self.name}")
        first, *wrapped = usage.splitlines()
        usage = "\n".join([first, *(line[shift:] if line[:shift].isspace() else line for line in wrapped)])
        return f"{usage}\n\n{rest}".replace(self.alias, f"mlloop {self.name}").rstrip()

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The entry point's usage, description and options, then examples and the old spelling."""
        formatter.write(f"{self.delegated_help()}\n\nexamples:\n{self.examples}\n\nalias: {self.alias}\n")


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="mlloop", prog_name="mlloop")
def cli() -> None:
    """mlloop: validate, train, gate, promote, serve and monitor models with Airflow and MLflow.

    \b
    Start here:
      mlloop services up      start Airflow (8080), MLflow (5000) and scoring (8000) on 127.0.0.1
      mlloop demo             run the main job through the scheduler (what `make demo` runs)
      mlloop <command> -h     options and examples of one command
    """
    from mlloop.orchestration.connections import use_airflow_connections

    use_airflow_connections()  # MLLOOP_STORAGE_CONN_ID and the PII key may name Airflow connections


cli.add_command(
    DelegatedCommand(
        "train",
        module="mlloop.training.train",
        alias="python -m mlloop.training.train",
        summary="Train a model on a snapshot and register it in MLflow.",
        examples=(
            "  mlloop train --snapshot <sha256> --result-path /tmp/result.json\n"
            "  mlloop train --snapshot <sha256> --model torch --seed 7 --result-path /tmp/result.json"
        ),
    )
)
cli.add_command(
    DelegatedCommand(
        "serve",
        module="mlloop.serving.__main__",
        alias="python -m mlloop.serving",
        summary="Run the scoring service in the foreground.",
        examples="  mlloop serve\n  mlloop serve --port 8001 --no-seed-history",
    )
)
cli.add_command(
    DelegatedCommand(
        "demo",
        module="mlloop.ops.demo",
        alias="python -m mlloop.ops.demo",
        summary="Run the demo job through the running stack.",
        examples="  mlloop demo    # after `mlloop services up`; `make demo` runs both",
    )
)
cli.add_command(
    DelegatedCommand(
        "simulate",
        module="mlloop.ops.simulate",
        alias="python -m mlloop.ops.simulate",
        summary="Run the closed loop over simulated days on the running stack.",
        examples=(
            "  mlloop simulate --days 5\n"
            "  mlloop simulate --days 8 --drift covariate_amount@2 --drift concept@4-6 --rows 60000\n"
            "  mlloop simulate --days 5 --use-case card_fraud"
        ),
    )
)
cli.add_command(
    DelegatedCommand(
        "generate",
        module="mlloop.data.generator",
        alias="python -m mlloop.data.generator",
        summary="Write the card_fraud use case's synthetic days and their delayed labels.",
        examples=(
            "  mlloop generate --start 2026-01-01 --days 7 --out data/source\n"
            "  mlloop generate --start 2026-01-01 --days 3 --scenario 2026-01-02=concept --out /tmp/source"
        ),
    )
)

cli.add_command(
    DelegatedCommand(
        "flights",
        module="mlloop.data.flights",
        alias="python -m mlloop.data.flights",
        summary="Write real 2013 New York flights (flight_delay's data) as daily deliveries and labels.",
        examples=(
            "  mlloop flights --start 2013-06-03 --days 10 --out /tmp/inbox\n"
            "  mlloop flights --start 2013-06-03 --days 10 --as 2026-11-20 --out data/inbox/flight_delay"
        ),
    )
)

cli.add_command(
    DelegatedCommand(
        "screenshots",
        module="mlloop.ops.screenshots",
        alias="python -m mlloop.ops.screenshots",
        summary="Save headless-Chromium screenshots of the Airflow and MLflow UIs of a running stack.",
        examples=(
            "  mlloop screenshots --airflow http://127.0.0.1:8080 --user admin --password-file .env \\\n"
            "      --mlflow http://127.0.0.1:5000 --out shots --trigger-dag ingest_flight_delay"
        ),
    )
)


@cli.group(context_settings=CONTEXT_SETTINGS)
def services() -> None:
    """Start, stop or list the local stack on 127.0.0.1.

    \b
    Examples:
      mlloop services up
      mlloop services status
      mlloop services down

    \b
    Alias: python -m mlloop.ops.services up|down|status
    """


def _services_verb(action: str, summary: str, example: str) -> click.Command:
    """Return the ``mlloop services <action>`` command: ``mlloop.ops.services.main([action])``."""

    def run() -> None:
        click.get_current_context().exit(_entry_main("mlloop.ops.services")([action]) or 0)

    return click.Command(
        action,
        callback=run,
        help=f"{summary}\n\n\b\nExample:\n  {example}",
        context_settings=CONTEXT_SETTINGS,
    )


services.add_command(
    _services_verb(
        "up",
        "Start Airflow (8080), MLflow (5000) and the scoring service (8000) in the background; "
        "print the UI addresses.",
        "mlloop services up   # then open http://127.0.0.1:8080 and http://127.0.0.1:5000",
    )
)
services.add_command(
    _services_verb(
        "down", "Stop everything `mlloop services up` or `make demo` started.", "mlloop services down"
    )
)
services.add_command(
    _services_verb("status", "Show which services are running, with their pids.", "mlloop services status")
)


@cli.group("use-cases", context_settings=CONTEXT_SETTINGS)
def use_cases() -> None:
    """List and check the use-case declarations: one <name>.yaml each in the use-case folder.

    The folder is MLLOOP_USECASES_DIR (default: the packaged include/mlloop/usecases/); MLLOOP_USE_CASES
    (comma-separated names) enables some of them, all when unset.

    \b
    Examples:
      mlloop use-cases list
      mlloop use-cases check
      MLLOOP_USECASES_DIR=/srv/usecases mlloop use-cases check churn
    """


@use_cases.command("list", context_settings=CONTEXT_SETTINGS)
def list_use_cases() -> None:
    """Print one line per declared use case: name, enabled or not, dataset, model name and source kind.

    A declaration that does not load shows "invalid:" and its first problem (`mlloop use-cases check`
    shows them all). Exits 0 unless the folder itself cannot be read.

    \b
    Examples:
      mlloop use-cases list
      MLLOOP_USE_CASES=flight_delay mlloop use-cases list
    """
    from mlloop.usecase import check_declared, enabled_use_cases, usecases_dir

    checked = _checked_use_cases(check_declared)
    try:
        enabled: set[str] | None = set(enabled_use_cases())
    except ValueError as exc:
        click.echo(f"warning: {exc}", err=True)
        enabled = None
    click.echo(f"use-case folder: {usecases_dir()}")
    width = max((len(item.name) for item in checked), default=0)
    for item in checked:
        state = "?" if enabled is None else "enabled" if item.name in enabled else "disabled"
        if item.use_case is None:
            detail = f"invalid: {item.problems[0]}"
        else:
            declared = item.use_case
            detail = (
                f"dataset={declared.dataset} model_name={declared.model_name} source={declared.source.kind}"
            )
        click.echo(f"{item.name:<{width}}  {state:<8}  {detail}")


@use_cases.command("check", context_settings=CONTEXT_SETTINGS)
@click.argument("names", nargs=-1)
def check_use_cases(names: tuple[str, ...]) -> None:
    """Validate every declared use case, or the NAMES given (declared names or YAML paths).

    Prints OK per valid declaration and, for an invalid one, each problem with its file, key and fix.
    Without NAMES it also checks MLLOOP_USE_CASES and that no two use cases share a dataset or a
    model_name. Exits 1 if anything is invalid.

    \b
    Examples:
      mlloop use-cases check
      mlloop use-cases check flight_delay
      mlloop use-cases check /srv/usecases/churn.yaml
    """
    from mlloop.usecase import check_declared, declaration_conflicts, enabled_use_cases

    checked = _checked_use_cases(lambda: check_declared(list(names) or None))
    for item in checked:
        if item.use_case is not None:
            click.echo(f"OK       {item.name}  ({item.path})")
        else:
            click.echo(f"INVALID  {item.name}  ({item.path})")
            for problem in item.problems:
                click.echo(f"  - {problem}")
    conflicts = declaration_conflicts({i.name: i.use_case for i in checked if i.use_case is not None})
    problems = [f"{name}: {problem}" for name, problem in conflicts.items()]
    if not names:
        try:
            enabled_use_cases()
        except ValueError as exc:
            problems.append(str(exc))
    for problem in problems:
        click.echo(f"INVALID  {problem}")
    invalid = sum(item.use_case is None for item in checked)
    click.echo(f"{len(checked)} use case(s) checked: {len(checked) - invalid} OK, {invalid} invalid.")
    if invalid or problems:
        click.get_current_context().exit(1)


def _checked_use_cases(check: Callable[[], list[DeclaredUseCase]]) -> list[DeclaredUseCase]:
    """Run ``check`` (a ``check_declared`` call); an unreadable use-case folder becomes a usage error."""
    try:
        return check()
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    cli()
