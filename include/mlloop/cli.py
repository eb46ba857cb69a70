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
import textwrap
from collections.abc import Callable
from pathlib import Path
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
        "api-key",
        module="mlloop.serving.keys_cli",
        alias="python -m mlloop.serving.keys_cli",
        summary="Issue, list or revoke the scoring service's API keys (stored as hashes only).",
        examples=(
            "  mlloop api-key --file keys.json issue --client checkout --use-case card_fraud\n"
            "  mlloop api-key --file keys.json list\n"
            "  mlloop api-key --file keys.json revoke --client checkout --key-id 1a2b3c4d"
        ),
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
        "housekeeping",
        module="mlloop.lifecycle.__main__",
        alias="python -m mlloop.lifecycle",
        summary="Apply a use case's retention policy; archive versions; clean MLflow runs and Airflow's DB.",
        examples=(
            "  mlloop housekeeping --use-case card_fraud            # dry run: reports what it would do\n"
            "  mlloop housekeeping --use-case card_fraud --apply    # delete and archive"
        ),
    )
)
cli.add_command(
    DelegatedCommand(
        "erase",
        module="mlloop.lifecycle.erasure_cli",
        alias="python -m mlloop.lifecycle.erasure_cli",
        summary="Erase one data subject's rows from every zone of a use case (dry run unless --apply).",
        examples=(
            "  mlloop erase --use-case card_fraud --subject customer_id=C123          # dry run: counts\n"
            "  mlloop erase --use-case card_fraud --subject customer_id=C123 --apply  # remove, ledger"
        ),
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
        summary="Write real 2013 New York flights (both flights use cases' data) as deliveries and labels.",
        examples=(
            "  mlloop flights --start 2013-06-03 --days 10 --out /tmp/inbox\n"
            "  mlloop flights --start 2013-06-03 --days 10 --as 2026-11-20 --out data/inbox/flight_delay\n"
            "  mlloop flights --start 2013-06-03 --days 10 --target arr_delay --dataset flight_arrivals \\\n"
            "      --out data/inbox/arrival_delay"
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
    """Draft, list and check the use-case declarations: one <name>.yaml each in the use-case folder.

    The folder is MLLOOP_USECASES_DIR (default: the packaged include/mlloop/usecases/), the suites'
    folder MLLOOP_EXPECTATIONS_DIR (default: expectations/); MLLOOP_USE_CASES (comma-separated names)
    enables some use cases, all when unset. `mlloop usecase` is the same group.

    \b
    Examples:
      mlloop use-cases init churn --sample churn.parquet --key account_id --time event_time --target churned
      mlloop use-cases list
      mlloop use-cases check
      MLLOOP_USECASES_DIR=/srv/usecases mlloop use-cases check churn --sample churn.parquet
    """


cli.add_command(
    click.Group(
        "usecase",
        commands=use_cases.commands,  # the same commands, one dict: a verb added to one is in both
        help="""Same as `mlloop use-cases`: draft (init), list and check use-case declarations.

    \b
    Examples:
      mlloop usecase init churn --sample churn.csv --key account_id --time event_time --target churned
      mlloop usecase check churn --sample churn.csv
    """,
        context_settings=CONTEXT_SETTINGS,
    )
)


@use_cases.command("init", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option(
    "--sample",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A Parquet or CSV file of rows as deliveries will hold them, plus the target column.",
)
@click.option("--key", required=True, help="The column that identifies a row (unique, never null).")
@click.option("--time", "time_column", required=True, help="The event time column (timezone-aware).")
@click.option("--target", required=True, help="The 0/1 label column (delivered apart, in labels/).")
@click.option("--dataset", default=None, help="Dataset name (storage paths, suite names); default: NAME.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write all three files here instead of the use-case and suites' folders.",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def init_use_case_command(
    name: str,
    sample: Path,
    key: str,
    time_column: str,
    target: str,
    dataset: str | None,
    out: Path | None,
    force: bool,
) -> None:
    """Profile a sample and write a draft declaration NAME.yaml and its raw and features GX suites.

    Per column: kind, null share, numeric range (widened), values of low-cardinality strings; the
    key's uniqueness, rows per day, the target's positives. The draft (a files source, the schema,
    features, a training window sized from the sample's rows per day) marks with REVIEW what to check;
    docs/add-your-use-case.md lists every margin. Refuses to overwrite a file without --force. Only a
    0/1 target is supported (no regression yet).

    \b
    Examples:
      mlloop use-cases init churn --sample churn.parquet --key account_id --time event_time --target churned
      mlloop use-cases init flights_ny --sample june.csv --key flight_id --time event_time --target delayed \\
          --dataset ny_flights --out /tmp/draft
      mlloop usecase init churn --sample churn.csv --key account_id --time event_time --target churned --force
    """
    from mlloop.usecase_init import DraftError, init_use_case

    try:
        draft = init_use_case(
            name, sample, key=key, time=time_column, target=target, dataset=dataset, out=out, force=force
        )
    except DraftError as exc:
        raise click.ClickException(str(exc)) from exc
    for line in draft.summary():
        click.echo(line)
    click.echo(f"Next: review the lines marked REVIEW in {draft.declaration_path.name}, then run")
    check = f"mlloop use-cases check {name} --sample {sample}"
    if out is None:
        click.echo(f"  {check}")
        return
    click.echo(f"  MLLOOP_USECASES_DIR={out} MLLOOP_EXPECTATIONS_DIR={out} {check}")
    click.echo("  (or move the declaration into the use-case folder and the suites into the suites' folder)")


@use_cases.command("list", context_settings=CONTEXT_SETTINGS)
def list_use_cases() -> None:
    """Print one line per declared use case: name, enabled or not, dataset, model name and source kind.

    A declaration that does not load shows "invalid:" and its first problem (`mlloop use-cases check`
    shows them all). Exits 0 unless the folder itself cannot be read.

    \b
    Examples:
      mlloop use-cases list
      MLLOOP_USE_CASES=flight_delay mlloop use-cases list
      mlloop usecase list
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
@click.option(
    "--sample",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Also run both suites on this Parquet or CSV sample (needs exactly one NAME).",
)
def check_use_cases(names: tuple[str, ...], sample: Path | None) -> None:
    """Validate every declared use case, or the NAMES given (declared names or YAML paths).

    Each declaration must load and agree with its suites: every suite column is a schema column (raw)
    or a built feature (features), each has a type expectation fitting its kind, and the raw suite
    redacts the PII columns. Prints OK, or INVALID with each problem, its file, key and fix. Without
    NAMES it also checks MLLOOP_USE_CASES and that no two use cases share a dataset or a model_name;
    with NAMES it prints the DAGs, Assets, model and effective policy each will create. --sample runs
    the raw suite on each UTC day of the sample and the features suite on its built features, and
    reports the failing expectations. Exits 1 on any problem.

    \b
    Examples:
      mlloop use-cases check
      mlloop use-cases check flight_delay
      mlloop use-cases check churn --sample churn.parquet
      mlloop use-cases check /srv/usecases/churn.yaml
      mlloop usecase check churn
    """
    from mlloop.usecase import check_declared, declaration_conflicts, enabled_use_cases
    from mlloop.usecase_check import check_sample, contract_problems, plan_lines, sample_lines

    if sample is not None and len(names) != 1:
        raise click.UsageError(
            f"--sample checks one use case; pass exactly one NAME (got {len(names)}), e.g. "
            "`mlloop use-cases check churn --sample churn.parquet`."
        )
    checked = _checked_use_cases(lambda: check_declared(list(names) or None))
    invalid = 0
    for item in checked:
        problems = list(item.problems) if item.use_case is None else contract_problems(item.use_case)
        invalid += bool(problems)
        click.echo(f"{'INVALID' if problems else 'OK':<9}{item.name}  ({item.path})")
        for problem in problems:
            click.echo(f"  - {problem}")
        if names and item.use_case is not None:
            for line in plan_lines(item.use_case):
                click.echo(textwrap.indent(line, "  "))
    loaded = [item for item in checked if item.use_case is not None]
    conflicts = declaration_conflicts({i.name: i.use_case for i in loaded if i.use_case is not None})
    problems = [f"{name}: {problem}" for name, problem in conflicts.items()]
    if not names:
        try:
            enabled_use_cases()
        except ValueError as exc:
            problems.append(str(exc))
    for problem in problems:
        click.echo(f"INVALID  {problem}")
    failed_sample = False
    if sample is not None and loaded and loaded[0].use_case is not None:
        click.echo(f"Sample {sample}:")
        runs = check_sample(loaded[0].use_case, sample)
        for line in sample_lines(runs):
            click.echo(f"  {line}")
        failed_sample = not all(run.success for run in runs)
    click.echo(f"{len(checked)} use case(s) checked: {len(checked) - invalid} OK, {invalid} invalid.")
    if invalid or problems or failed_sample:
        click.get_current_context().exit(1)


@use_cases.command("retire", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--reason", default=None, help="Why it is retired (kept on the model and in the audit).")
@click.option("--apply", "apply_", is_flag=True, help="Do it. Without it: print what it would do.")
def retire_use_case(name: str, reason: str | None, apply_: bool) -> None:
    """Decommission use case NAME: pause its DAGs, remove its model's aliases, archive its versions.

    Its registered model is tagged mlloop.retired (when, by whom, why), so the scoring service answers
    410 Gone on /predict/NAME, and the decision is recorded in the mlloop-audit experiment. A dry run by
    default; running it again after --apply changes nothing. DAGs are paused through the Airflow API
    (MLLOOP_AIRFLOW_API_URL, MLLOOP_AIRFLOW_API_USER, MLLOOP_AIRFLOW_PASSWORD). See docs/lifecycle.md.

    \b
    Examples:
      mlloop use-cases retire card_fraud --reason "replaced by card_fraud_v2"            # dry run
      mlloop use-cases retire card_fraud --reason "replaced by card_fraud_v2" --apply
      mlloop usecase retire card_fraud                                                   # the same group
    """
    import getpass
    import logging

    from mlloop.lifecycle.retire import DEFAULT_REASON, RetirementError, retire
    from mlloop.ops.airflow_api import AirflowAPIError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        result = retire(name, f"cli:{getpass.getuser()}", reason or DEFAULT_REASON, apply_)
    except (FileNotFoundError, RetirementError, AirflowAPIError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not result["steps"]:
        retired = result.get("retirement") or {}
        click.echo(
            f"{name} is already retired (on {retired.get('at')} by {retired.get('actor')}): nothing to do."
        )
        return
    click.echo(
        f"{'Did' if apply_ else 'Would do (dry run; --apply to do it)'}, for {name} ({result['model']}):"
    )
    for step in result["steps"]:
        click.echo(f"  - {step}")
    for version in result["legal_holds"]:
        click.echo(f"  - keep v{version} whole: it is under legal hold")


def _checked_use_cases(check: Callable[[], list[DeclaredUseCase]]) -> list[DeclaredUseCase]:
    """Run ``check`` (a ``check_declared`` call); an unreadable use-case folder becomes a usage error."""
    try:
        return check()
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    cli()
