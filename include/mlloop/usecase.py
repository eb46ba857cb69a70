"""Use-case declarations (YAML): dataset, schema, key/time/target/PII columns, suites, features, policy.

Every use case is one declaration in the use-case folder (``include/mlloop/usecases/`` unless
``MLLOOP_USECASES_DIR`` names another), its file name being its name. ``MLLOOP_USE_CASES`` selects which
declared use cases are enabled. A declaration is checked when it loads, and each problem names the file,
the key and the fix, so one bad declaration can be reported without taking the others down.
"""

from __future__ import annotations

import codecs
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlloop.config import get_settings
from mlloop.features.spec import FeatureSpec, feature_columns
from mlloop.monitoring.decision import check_monitor_section
from mlloop.promotion.gate_config import check_gate_section
from mlloop.tasks import Task, check_performance_metric
from mlloop.validation.suite import suite_path
from mlloop.versioned_config import safe_load_yaml

# The packaged folder, used when MLLOOP_USECASES_DIR is unset.
USECASE_DIR = Path(__file__).resolve().parent / "usecases"
DECLARATION_SUFFIXES = (".yaml", ".yml")
# A name goes into DAG ids (ingest_<name>), Asset names and metric labels: short, lower-case, no dots.
USE_CASE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
ColumnKind = Literal["string", "datetime", "float", "integer", "boolean"]


class CsvOptions(BaseModel):
    """How a files source's CSV deliveries are written (``source.csv``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    # A UTF-8 byte-order mark is dropped whatever the encoding says.
    encoding: str = "utf-8"
    decimal: str = Field(default=".", min_length=1, max_length=1)
    # The zone of timestamps written without an offset; ones with an offset keep theirs. Stored in UTC.
    timezone: str = "UTC"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(
                f"unknown encoding {encoding!r}; use a Python codec name such as utf-8 or latin-1"
            ) from None
        return encoding

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {zone!r}; use an IANA name such as UTC or Europe/Zurich"
            ) from None
        return zone


class SourceSpec(BaseModel):
    """Where a use case's daily batches come from."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["generator", "files"] = "generator"
    rows_per_day: int = Field(default=20_000, gt=0)
    seed: int = 42
    uri: str | None = None
    # files: the deliveries' format, and how long ingest waits for a day's delivery after its run is due
    # (then it fails naming the path it waited for), checking every poke_minutes.
    format: Literal["parquet", "csv"] = "parquet"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    wait_hours: float = Field(default=6.0, ge=0, le=168)
    poke_minutes: float = Field(default=5.0, gt=0, le=60)
    # files: a day may be several files; with a marker named here (e.g. _SUCCESS) the day is ready only once
    # the marker is in its folder, else as soon as one file is.
    ready_marker: str | None = Field(default=None, pattern=r"^[^/]+$")

    @model_validator(mode="after")
    def _files_need_uri(self) -> SourceSpec:
        if self.kind == "files" and not self.uri:
            raise ValueError("source.kind 'files' needs source.uri (a folder holding date=YYYY-MM-DD/)")
        if self.kind == "generator" and self.format != "parquet":
            raise ValueError("source.format applies to files sources; the generator delivers Parquet")
        return self

    @property
    def suffix(self) -> str:
        """Return the file name ending of a delivery (``.parquet`` or ``.csv``)."""
        return f".{self.format}"


class LabelsSpec(BaseModel):
    """Where a files source's labels arrive, and what their rows hold (``labels``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # feed: labels arrive apart, in the feed below. in_delivery (backfills of history whose outcomes are
    # known): the target column is inside each delivered file, each label known at its event time plus
    # label_maturity_days; it is taken out before the raw suite and published to labels/.
    mode: Literal["feed", "in_delivery"] = "feed"
    # The label feed's folder: a path relative to source.uri, an absolute path or a URI. Deliveries lie in
    # date=YYYY-MM-DD/ folders named by the day they were delivered, any number of files a day.
    uri: str | None = None
    # The column saying when each label became known (timezone-aware, or UTC); renamed label_time on landing.
    known_at_column: str = Field(default="label_time", min_length=1)
    # How long after its event a label may arrive: the events of that many days before a delivery are looked
    # up to check that no label is known before its event.
    max_delay_days: int = Field(default=90, ge=1, le=3650)


class TrainingPolicy(BaseModel):
    """How much data one training window takes and needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_days: int = Field(default=4, ge=1, le=90, description="Validated days in a default window.")
    # A window with fewer labels waits (a scheduled run skips saying so) instead of training a model the
    # gate cannot judge: the holdout is the window's last fifth, so 100 positives leave it ~20.
    min_rows: int = Field(default=1000, ge=1, description="Fewer labelled rows in the window: do not train.")
    min_positives: int = Field(
        default=100, ge=1, description="Fewer labelled positives in the window: do not train."
    )


class ValueSetSpec(BaseModel):
    """One column's allowed values (``contract.value_sets.<column>``) and what a value outside them does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # None: the column's declared vocabulary in features.categorical (required for any other column).
    values: list[str] | None = Field(default=None, min_length=1)
    # reject: a new value fails the batch. report: the batch passes, the new values are listed in the
    # validation report and logged as a warning.
    policy: Literal["reject", "report"] = "report"


class ContractSpec(BaseModel):
    """Contract defaults added to the raw suite of every delivery (``contract:``; see docs/design.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The zone whose calendar day a date=D partition is: every event time must lie in [D 00:00, D+1 00:00).
    timezone: str = "UTC"
    # Longest text value of a string column (per-column overrides in max_string_length): ids, codes and
    # names are far shorter; a megabyte in a column is a broken export, not data.
    default_max_string_length: int = Field(default=1000, ge=1)
    max_string_length: dict[str, PositiveInt] = Field(default_factory=dict)
    # The policy of the default value sets (the categorical features' vocabularies). report: a new category
    # is drift (the features read it as __unknown__, drift monitoring measures its share), not a fault that
    # should stop a day; a column whose new values are faults gets policy reject in value_sets.
    categorical_policy: Literal["reject", "report"] = "report"
    value_sets: dict[str, ValueSetSpec] = Field(default_factory=dict)
    # A delivered key must not have been published for another day within this many days either side:
    # longer than any training window (flight_delay's is 28 days), and a bounded read (the key column of
    # at most twice this many validated partitions).
    key_lookback_days: int = Field(default=30, ge=0, le=366)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        return CsvOptions._known_zone(zone)

    def value_set_of(self, column: str, categorical: Mapping[str, list[str]]) -> ValueSetSpec | None:
        """Return ``column``'s value set: declared, else its categorical vocabulary, else None."""
        declared, vocabulary = self.value_sets.get(column), categorical.get(column)
        if declared is None:
            return (
                None
                if vocabulary is None
                else ValueSetSpec(values=vocabulary, policy=self.categorical_policy)
            )
        return declared if declared.values is not None else declared.model_copy(update={"values": vocabulary})


class ZoneRetention(BaseModel):
    """How long one zone keeps a use case's objects (``retention.<zone>``); unset keeps them forever.

    ``days``: a day's partition expires once it is more than that many days before today. ``count``: only
    the newest that many partitions (snapshots, report days) are kept. Both set: both limits apply.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: int | None = Field(default=None, ge=1, le=36500)
    count: int | None = Field(default=None, ge=1)


RETENTION_ZONES = ("raw", "quarantine", "validated", "labels", "inference", "snapshots", "reports")


class RetentionSpec(BaseModel):
    """What housekeeping may delete, and when (``retention:``; see docs/lifecycle.md).

    Never deleted whatever the limits: what the ``champion`` and ``previous`` versions (and versions tagged
    ``mlloop.legal_hold``) need to be reproduced or audited, and what ``legal_holds`` names.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    raw: ZoneRetention = ZoneRetention(days=365)
    # Rejected batches hold clear PII (they failed before tokenisation): kept only long enough to fix them.
    quarantine: ZoneRetention = ZoneRetention(days=30)
    validated: ZoneRetention = ZoneRetention(days=365)
    labels: ZoneRetention = ZoneRetention(days=365)
    inference: ZoneRetention = ZoneRetention(days=90)
    snapshots: ZoneRetention = ZoneRetention(days=180)
    reports: ZoneRetention = ZoneRetention(days=180)
    # Key prefixes under the data root (e.g. raw/transactions/date=2026-11-03) or days (YYYY-MM-DD, every
    # zone) that are never deleted while listed here.
    legal_holds: list[str] = Field(default_factory=list)
    # Airflow's metadata (task instances, XCom, logs' records) and MLflow runs that no version refers to.
    airflow_metadata_days: int | None = Field(default=90, ge=1)
    mlflow_runs_days: int | None = Field(default=180, ge=1)
    # Model versions archived (artifacts deleted, metadata kept): rejected ones after this many days, and
    # promoted ones once this many later promotions have superseded them.
    rejected_versions_days: int | None = Field(default=30, ge=1)
    superseded_after_promotions: int | None = Field(default=3, ge=2)
    # The daily housekeeping run applies the policy only when this is true; until then it is a dry run whose
    # report says what it would delete (a manual run's form chooses for itself).
    apply_on_schedule: bool = False

    def zone(self, name: str) -> ZoneRetention:
        """Return the limits of zone ``name`` (one of ``RETENTION_ZONES``)."""
        return getattr(self, name)


class UseCase(BaseModel):
    """A declared use case; DAGs and include/ read this instead of hard-coding the domain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    dataset: str
    key_column: str
    time_column: str
    target_column: str
    # binary: a 0/1 target, a calibrated probability served with a decision; regression: a numeric target,
    # the predicted value served. mlloop.tasks says what each means for training, gate, serving, monitoring.
    task: Task = "binary"
    pii_columns: list[str] = Field(default_factory=list)
    schema_: dict[str, ColumnKind] = Field(alias="schema")
    suites: dict[str, str]
    model_name: str
    features: FeatureSpec
    source: SourceSpec = Field(default_factory=SourceSpec)
    # Labels arrive late; a default training window ends this many days before the run so that most
    # of its labels are known (rows whose label is still unknown are left out of training).
    label_maturity_days: int = Field(default=0, ge=0)
    # A files source's label feed (``mlloop.ingestion.labels_feed``); a generator's come with its days.
    labels: LabelsSpec = Field(default_factory=LabelsSpec)
    # Feature columns monitor_drift leaves out of the data-drift check (e.g. calendar features, which a
    # one-day window can never share with a multi-day reference).
    drift_exclude: list[str] = Field(default_factory=list)
    # Policy: this use case's training window, and its overrides of the package-wide gate and monitoring
    # defaults (promotion/gate_defaults.yaml, monitoring/monitor_defaults.yaml; same keys).
    training: TrainingPolicy = Field(default_factory=TrainingPolicy)
    gate: dict[str, Any] = Field(default_factory=dict)
    monitor: dict[str, Any] = Field(default_factory=dict)
    # Contract defaults every delivery is also validated against (event time in the day, key unique and not
    # published for another day, string lengths, value sets); ContractSpec says each default.
    contract: ContractSpec = Field(default_factory=ContractSpec)
    # How long each zone keeps this use case's data, runs and model versions (mlloop.lifecycle).
    retention: RetentionSpec = Field(default_factory=RetentionSpec)

    @field_validator("name")
    @classmethod
    def _name_fits_ids(cls, name: str, info: ValidationInfo) -> str:
        if not USE_CASE_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a valid use-case name: it goes into DAG ids (ingest_<name>), Asset names "
                f"and metric labels, so it must match {USE_CASE_NAME.pattern} (a lower-case letter, then up "
                "to 39 lower-case letters, digits or _). Rename the use case and its file."
            )
        stem = (info.context or {}).get("file_stem")
        if stem is not None and name != stem:
            raise ValueError(
                f"name {name!r} differs from the file name {stem!r}: in the use-case folder a declaration's "
                f"name is its file name. Set name: {stem} or rename the file to {name}.yaml."
            )
        return name

    @field_validator("gate")
    @classmethod
    def _gate_section_valid(cls, gate: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        check_gate_section(gate, info.data.get("features"))
        return gate

    @field_validator("monitor")
    @classmethod
    def _monitor_section_valid(cls, monitor: dict[str, Any]) -> dict[str, Any]:
        check_monitor_section(monitor, where="this declaration")
        return monitor

    @field_validator("contract")
    @classmethod
    def _contract_names_declared_columns(cls, contract: ContractSpec, info: ValidationInfo) -> ContractSpec:
        schema = info.data.get("schema_") or {}
        categorical = info.data["features"].categorical if info.data.get("features") else {}
        not_text = [c for c in contract.max_string_length if schema.get(c) != "string"]
        if schema and not_text:
            raise ValueError(
                f"max_string_length names {not_text}, which are not string columns of schema; list only "
                "columns declared as string"
            )
        unknown = [c for c in contract.value_sets if schema and c not in schema]
        if unknown:
            raise ValueError(f"value_sets names {unknown}, which are not columns of schema")
        unlisted = [
            c for c, spec in contract.value_sets.items() if spec.values is None and c not in categorical
        ]
        if unlisted:
            raise ValueError(
                f"value_sets {unlisted} list no values and are not categorical features (whose vocabulary "
                "would be the default); add values: [...]"
            )
        return contract

    @model_validator(mode="after")
    def _columns_declared(self) -> UseCase:
        declared = set(self.schema_)
        for role in ("key_column", "time_column"):
            if getattr(self, role) not in declared:
                raise ValueError(f"{role} {getattr(self, role)!r} is not a column of schema")
        missing = [c for c in self.pii_columns if c not in declared]
        if missing:
            raise ValueError(f"pii_columns {missing} are not columns of schema")
        return self

    @model_validator(mode="after")
    def _policy_fits_task(self) -> UseCase:
        check_performance_metric(self.task, self.monitor.get("performance_metric"))
        return self

    @model_validator(mode="after")
    def _features_read_declared_columns(self) -> UseCase:
        used = self.features.input_columns()
        unknown = [c for c in used if c not in self.schema_]
        if unknown:
            raise ValueError(f"features use columns {unknown} that are not columns of schema")
        pii = [c for c in used if c in self.pii_columns]
        if pii:
            raise ValueError(
                f"features use PII columns {pii}; they are tokenised before features are built, "
                "so a model must not depend on them. Remove them from features."
            )
        stray = [c for c in self.drift_exclude if c not in feature_columns(self.features)]
        if stray:
            raise ValueError(f"drift_exclude names {stray}, which are not feature columns of this use case")
        return self

    @model_validator(mode="after")
    def _retention_keeps_what_the_loop_reads(self) -> UseCase:
        needed = max(
            self.training.window_days + self.label_maturity_days,
            self.contract.key_lookback_days,
            self.labels.max_delay_days,
        )
        for zone in ("validated", "labels"):
            limits = self.retention.zone(zone)
            for limit in ("days", "count"):
                value = getattr(limits, limit)
                if value is not None and value < needed:
                    raise ValueError(
                        f"retention.{zone}.{limit} is {value}, but this use case reads {needed} days back "
                        "(the largest of training.window_days + label_maturity_days, "
                        "contract.key_lookback_days and labels.max_delay_days); "
                        f"set retention.{zone}.{limit} to {needed} or more"
                    )
        return self

    @property
    def columns(self) -> list[str]:
        """Return the declared column names in delivery order."""
        return list(self.schema_)


class UseCaseDeclarationError(ValueError):
    """A declaration that does not load; ``problems`` holds one ``key: what is wrong, and the fix`` each."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path, self.problems = path, problems
        super().__init__(f"use case declaration {path} is invalid: {'; '.join(problems)}")


def usecases_dir() -> Path:
    """Return the use-case folder: ``MLLOOP_USECASES_DIR``, or the packaged ``include/mlloop/usecases``."""
    configured = get_settings().usecases_dir
    return Path(configured).expanduser().resolve() if configured else USECASE_DIR


def declared_use_cases() -> dict[str, Path]:
    """Return name (file stem) -> declaration file for every ``*.yaml``/``*.yml`` in the folder, by name.

    Raises:
        FileNotFoundError: when the folder does not exist (naming it and MLLOOP_USECASES_DIR).
        ValueError: when two files declare the same name (``x.yaml`` and ``x.yml``).
    """
    folder = usecases_dir()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"use-case folder {folder} does not exist. Point MLLOOP_USECASES_DIR at a folder of "
            f"<name>.yaml declarations, or unset it to use the packaged {USECASE_DIR}."
        )
    declared: dict[str, Path] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix in DECLARATION_SUFFIXES and p.is_file()):
        if path.stem in declared:
            raise ValueError(
                f"use case {path.stem!r} is declared twice in {folder}: {declared[path.stem].name} and "
                f"{path.name}. Keep one of them."
            )
        declared[path.stem] = path
    return dict(sorted(declared.items()))


def enabled_use_cases() -> list[str]:
    """Return the enabled use cases: ``MLLOOP_USE_CASES`` in its order without repeats, else all declared.

    Raises:
        ValueError: when MLLOOP_USE_CASES names a use case the folder does not declare.
    """
    declared = declared_use_cases()
    selection = get_settings().use_cases
    names = [name.strip() for name in (selection or "").split(",") if name.strip()]
    if not names:
        return list(declared)
    unknown = [name for name in dict.fromkeys(names) if name not in declared]
    if unknown:
        raise ValueError(
            f"MLLOOP_USE_CASES={selection!r} names {unknown}, which {usecases_dir()} does not declare; "
            f"declared use cases: {list(declared)}. Fix the names, or add <name>.yaml to the folder "
            "(MLLOOP_USECASES_DIR)."
        )
    return list(dict.fromkeys(names))


def declaration_path(name_or_path: str) -> Path:
    """Return the declaration file of a use-case name (in ``usecases_dir()``) or of a YAML path.

    Raises:
        FileNotFoundError: naming the file or folder looked in, the declared names and the fix.
    """
    if Path(name_or_path).suffix in DECLARATION_SUFFIXES:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"use case declaration {path} does not exist. Set MLLOOP_USE_CASE to a declared name or "
                "to the path of a YAML declaration."
            )
        return path.resolve()
    declared = declared_use_cases()
    if name_or_path not in declared:
        raise FileNotFoundError(
            f"use case {name_or_path!r}: {usecases_dir()} holds no {name_or_path}.yaml. Set "
            f"MLLOOP_USE_CASE to one of {list(declared)} or to the path of a YAML declaration, or add the "
            "declaration to the use-case folder (MLLOOP_USECASES_DIR)."
        )
    return declared[name_or_path].resolve()


def load_use_case(name_or_path: str) -> UseCase:
    """Load a use case by name (``<usecases_dir()>/<name>.yaml``) or by YAML path.

    Raises:
        FileNotFoundError: naming the file looked for and the declarations that exist.
        UseCaseDeclarationError: a ``ValueError`` naming the file, each invalid key and the fix.
    """
    path = declaration_path(name_or_path)
    stat = path.stat()
    in_folder = path.parent == usecases_dir().resolve()
    # Keyed on the file and its version, so a changed folder or an edited file is never served stale.
    return _load_declaration(path, stat.st_mtime_ns, stat.st_size, in_folder)


@lru_cache(maxsize=32)
def _load_declaration(path: Path, _mtime_ns: int, _size: int, in_folder: bool) -> UseCase:
    """Parse and validate one declaration file (cached per file version)."""
    try:
        document = safe_load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise UseCaseDeclarationError(path, [f"(file) not valid YAML: {exc}. Fix the syntax."]) from exc
    if not isinstance(document, dict):
        raise UseCaseDeclarationError(
            path,
            [
                "(file) must be a mapping of keys (name, dataset, schema, suites, ...), as the bundled "
                "declarations in include/mlloop/usecases/ are"
            ],
        )
    problems: list[str] = []
    try:
        use_case = UseCase.model_validate(document, context={"file_stem": path.stem} if in_folder else None)
    except ValidationError as exc:
        problems.extend(_describe(error) for error in exc.errors())
    problems.extend(_suite_problems(document.get("suites")))
    if problems:
        raise UseCaseDeclarationError(path, problems)
    return use_case


def _suite_problems(suites: object) -> list[str]:
    """Return a problem per declared suite whose JSON file is missing, and for a missing raw suite."""
    if not isinstance(suites, dict):
        return []  # the model's own check reports a missing or malformed suites: section
    problems = []
    if "raw" not in suites:
        problems.append(
            "suites.raw: missing; every use case needs a raw suite (the contract ingestion and serving "
            "check). Add suites: {raw: <suite name>} naming a file in expectations/."
        )
    for role, name in suites.items():
        if not isinstance(name, str):
            continue
        try:
            suite_path(name)
        except FileNotFoundError as exc:
            problems.append(f"suites.{role}: {exc}")
    return problems


def _describe(error: Mapping[str, Any]) -> str:
    """Return one pydantic error as ``key: problem``; an unknown key lists the valid ones."""
    loc = tuple(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        if valid:
            message += f"; valid keys here are {valid}"
    elif error["type"] == "missing":
        message = (
            "missing; this key is required. Add it (the bundled declarations in include/mlloop/usecases/ "
            "show every key)"
        )
    return f"{'.'.join(map(str, loc))}: {message}" if loc else message


def _valid_keys(parents: tuple[Any, ...]) -> list[str]:
    """Return the keys the section at ``parents`` accepts, or [] when it is not a declared section."""
    model: Any = UseCase
    for part in parents:
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return []
        options = typing.get_args(field.annotation) if _is_union(field.annotation) else (field.annotation,)
        model = next((o for o in options if isinstance(o, type) and issubclass(o, BaseModel)), None)
        if model is None:
            return []
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


@dataclass(frozen=True)
class DeclaredUseCase:
    """One declared use case as ``mlloop use-cases`` reports it: loaded, or the reason it does not load."""

    name: str
    path: Path
    use_case: UseCase | None
    problems: tuple[str, ...] = ()


def check_declared(names_or_paths: list[str] | None = None) -> list[DeclaredUseCase]:
    """Load every declared use case (or the named ones); one bad declaration is reported, not raised.

    Raises:
        FileNotFoundError / ValueError: only for the folder itself (see ``declared_use_cases``).
    """
    targets = names_or_paths if names_or_paths else list(declared_use_cases())
    results = []
    for target in targets:
        name = Path(target).stem
        try:
            path = declaration_path(target)
        except FileNotFoundError as exc:
            results.append(DeclaredUseCase(name, Path(target), None, (str(exc),)))
            continue
        try:
            results.append(DeclaredUseCase(name, path, load_use_case(str(path))))
        except UseCaseDeclarationError as exc:
            results.append(DeclaredUseCase(name, path, None, tuple(exc.problems)))
    return results


def declaration_conflicts(use_cases: Mapping[str, UseCase]) -> dict[str, str]:
    """Return, by name, each use case whose dataset or model_name an earlier one (in order) already declares.

    Two use cases sharing either would mix their data or their models; the first keeps it.
    """
    owners: dict[tuple[str, str], str] = {}
    problems: dict[str, str] = {}
    for name, use_case in use_cases.items():
        for key in ("dataset", "model_name"):
            value = getattr(use_case, key)
            owner = owners.setdefault((key, value), name)
            if owner != name and name not in problems:
                problems[name] = (
                    f"{key} {value!r} is already declared by use case {owner!r}: each use case needs its own "
                    f"{key}. Rename it in {name!r}."
                )
    return problems


def load_use_cases(
    names: Iterable[str], loaded: Mapping[str, UseCase] | None = None
) -> tuple[dict[str, UseCase], dict[str, str]]:
    """Load ``names`` in order after the ``loaded`` ones; return the usable ones and why each other is not.

    A declaration that does not load, or that reuses a dataset or model_name an earlier one declares
    (``declaration_conflicts``), is left out with its error: the DAG factory and the scoring service
    keep every other use case running.
    """
    usable = dict(loaded or {})
    errors: dict[str, str] = {}
    for name in names:
        if name in usable:
            continue
        try:
            usable[name] = load_use_case(name)
        except (ValueError, OSError) as exc:
            errors[name] = str(exc)
    for name, problem in declaration_conflicts(usable).items():
        errors[name] = f"{declaration_path(name)}: {problem}"
        del usable[name]
    return usable, errors
