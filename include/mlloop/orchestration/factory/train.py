"""The ``train_<use case>`` DAG: snapshot, train, gate, (review,) then promote or reject."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import DAG, Param, dag, task

from mlloop.config import get_settings
from mlloop.orchestration.assets import use_case_assets
from mlloop.orchestration.links import GateReportLink, MlflowRunLink, ModelVersionLink, with_links
from mlloop.orchestration.names import dag_names
from mlloop.orchestration.params import dag_arguments, window_params
from mlloop.orchestration.payloads import ChampionMoved, TrainingTrigger
from mlloop.registry.champion import airflow_actor, hitl_reviewer
from mlloop.registry.runner import registered_model_name
from mlloop.usecase import UseCase


def _doc(use_case: UseCase) -> str:
    """Return the DAG's page text in the declaration's own nouns."""
    names = dag_names(use_case.name)
    model = registered_model_name(use_case)
    return f"""
### Train, gate and promote `{model}` ({use_case.name})

Runs whenever `{names.ingest}` publishes a validated batch of `{use_case.dataset}` (the
`{names.validated_asset}` Asset), when `{names.monitor}` requests a retrain (`{names.retrain_asset}`), or
manually with the form below.

1. **snapshot**: the last *window_days* validated days (by default ending {use_case.label_maturity_days}
   day(s) before the run, so most labels of `{use_case.target_column}` are in), with the labels known at the
   start of the run's day, become one content-addressed snapshot (`snapshots/<sha256>/`); the feature
   contract (`expectations/{use_case.suites.get("features", "?")}.json`) must hold or nothing is
   written. A run started by a new batch skips (and says why) when the batch was ingested with
   *start_training* off, while the window is not full yet or holds fewer labels than the declaration's
   `training:` minimums,
   or when a version was already trained on this snapshot; a manual run fails instead, or retrains.
2. **train**: the training CLI (`mlloop train`), XGBoost or a PyTorch tabular network:
   - `local`: a subprocess on the worker;
   - `kubernetes` (when the deployment sets `MLLOOP_TRAINING_BACKEND=kubernetes`): the same CLI with the
     same arguments in a GPU pod (`KubernetesPodOperator`, settings `MLLOOP_K8S_*`).

   It logs the run to the MLflow experiment `{use_case.name}` and registers one version of `{model}` per
   DAG run (a retry registers nothing new).
3. **gate**: challenger and champion are scored on the same holdout under the use case's gate policy
   (`include/mlloop/promotion/gate_defaults.yaml`, then the declaration's `gate:` section, then
   *gate_overrides*): skill floors against no-skill scores on that holdout, paired-bootstrap
   non-inferiority, the declared slices, latency and size budgets. The report is logged to the
   challenger's MLflow run. If the gate cannot decide, the version is tagged `mlloop.gate.verdict=error`
   with the reason and can never be promoted.
4. **review** (only with *approval_required*): a reviewer approves or rejects in the Airflow UI
   (Required actions); no answer within two days rejects.
5. **promote** / **reject**: a passing (and approved) challenger becomes `champion` (the old one
   `previous`) and the `{names.champion_asset}` Asset is emitted; otherwise the version is tagged rejected
   with the reason. Both are audited in the `mlloop-audit` experiment.

A run started by monitoring trains on the window ending at the monitored day and tags the reason on the
MLflow run (`mlloop.trigger_reason`). After a performance decay the request carries `train_from`, the day
the relationship changed: the window starts there (fewer days than *window_days* until monitoring's
`window_catch_up` has retrained up to a full one).

One run at a time, so two promotions never interleave. Extra links on train, gate and promote open the
MLflow run, the gate report and the model version.
"""


def _params(use_case: UseCase, backends: list[str]) -> dict[str, Param]:
    """Return the trigger form: the window, model type, backend, seed, gate overrides, approval."""
    return {
        **window_params(
            days=use_case.training.window_days,
            maximum=365,
            days_help="Validated days in the training snapshot (the latest ones).",
            end_day_help="Empty: the latest validated day whose labels have matured (the use case's "
            f"label_maturity_days, {use_case.label_maturity_days}, before the run).",
        ),
        "model": Param(
            "xgboost",
            type="string",
            enum=["xgboost", "torch"],
            title="Model type",
            description="xgboost: gradient-boosted trees (hist). torch: tabular network with embeddings.",
        ),
        "backend": Param(
            backends[-1],
            type="string",
            enum=backends,
            title="Training backend",
            description="local: a subprocess on the worker. kubernetes: a GPU pod running the same CLI "
            "(offered when the deployment sets MLLOOP_TRAINING_BACKEND=kubernetes).",
        ),
        "seed": Param(42, type="integer", minimum=0, title="Seed"),
        "gate_overrides": Param(
            {},
            type="object",
            title="Gate overrides",
            description="Per-run overrides of the use case's gate policy (keys of "
            'include/mlloop/promotion/gate_defaults.yaml), e.g. {"confidence": 0.99}.',
        ),
        "approval_required": Param(
            False,
            type="boolean",
            title="Human approval",
            description="Wait for a reviewer in the Airflow UI before promoting a challenger that passed "
            "the gate.",
        ),
    }


class ReviewOperator(HITLBranchOperator):
    """Airflow's Promote/Reject question, which also records who answered it (XCom ``reviewer``)."""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        """Push the responder for the audit, then branch on the answer."""
        context["ti"].xcom_push(key="reviewer", value=hitl_reviewer(event))
        return super().execute_complete(context=context, event=event)


def build_train_dag(use_case: UseCase) -> DAG:
    """Return ``train_<use case>``: snapshot, train, gate, (review,) then promote or reject."""
    name = use_case.name
    assets = use_case_assets(name)
    backends = ["local", "kubernetes"] if get_settings().training_backend == "kubernetes" else ["local"]

    @dag(
        dag_id=dag_names(name).train,
        schedule=(assets.validated | assets.retrain),
        **dag_arguments(name, "training", "promotion", doc_md=_doc(use_case)),
        params=_params(use_case, backends),
    )
    def train() -> None:
        """Snapshot, train, gate, (review,) then promote or reject."""

        @task
        def snapshot(
            params: dict[str, Any], dag_run=None, ti=None, triggering_asset_events=None
        ) -> dict[str, Any]:
            """Materialise the training window as a content-addressed snapshot."""
            from airflow.sdk.exceptions import AirflowSkipException

            from mlloop.clock import platform_time
            from mlloop.training.pipeline import NothingToTrain, assemble_snapshot

            events = triggering_asset_events or {}
            trigger = TrainingTrigger.from_extras(
                [event.extra for event in events.get(assets.retrain, [])],
                [event.extra for event in events.get(assets.validated, [])],
            )
            scheduled = dag_run.run_type == "asset_triggered"
            if declined := trigger.skip_reason(asset_triggered=scheduled):
                ti.xcom_push(key="skip_reason", value=declined)
                raise AirflowSkipException(f"Nothing to train: {declined}")
            request = trigger.request
            try:
                snap = assemble_snapshot(
                    params["window_days"],
                    params.get("end_day") or (request.end_day if request else None),
                    as_of=platform_time(dag_run.run_after),
                    use_case=name,
                    scheduled=scheduled,
                    train_from=request.train_from if request else None,
                )
            except NothingToTrain as reason:
                ti.xcom_push(key="skip_reason", value=str(reason))
                raise AirflowSkipException(f"Nothing to train: {reason}") from None
            return snap | {"trigger": request.to_extra() if request else {}}

        @task
        def train_local(snap: dict[str, Any], params: dict[str, Any], dag_run=None) -> dict[str, Any]:
            """Run the training CLI in a subprocess; returns run id, registered version and metrics."""
            from mlloop.training.pipeline import train_local

            return train_local(
                snap["digest"], model=params["model"], seed=params["seed"], dag_run_id=dag_run.run_id
            )

        snap = snapshot()
        if "kubernetes" in backends:
            from mlloop.orchestration.kubernetes import training_pod_operator

            @task.branch
            def choose_backend(params: dict[str, Any]) -> str:
                """Follow the backend Param."""
                return f"train_{params['backend']}"

            @task(trigger_rule="none_failed_min_one_success")
            def trained(ti=None) -> dict[str, Any]:
                """Pass on the result of whichever backend ran."""
                return next(r for r in ti.xcom_pull(task_ids=["train_local", "train_kubernetes"]) if r)

            pod = training_pod_operator(
                task_id="train_kubernetes",
                snapshot="{{ ti.xcom_pull(task_ids='snapshot')['digest'] }}",
                model="{{ params.model }}",
                seed="{{ params.seed }}",
                dag_run_id="{{ run_id }}",
            )
            local = with_links(train_local(snap), MlflowRunLink())
            result = trained()
            snap >> choose_backend() >> [local, pod] >> result
        else:
            result = with_links(train_local(snap), MlflowRunLink())

        @task
        def gate(result: dict[str, Any], snap: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
            """Decide challenger vs champion on one holdout and log the report; an error tags the version."""
            from mlloop.training.pipeline import gate_challenger

            return gate_challenger(
                result, params.get("gate_overrides"), trigger=snap.get("trigger"), use_case=name
            )

        @task.branch
        def decide(decision: dict[str, Any], params: dict[str, Any]) -> str:
            """Reject a failed challenger; ask a reviewer first when the run requires approval."""
            if not decision["promote"]:
                return "reject"
            return "review" if params.get("approval_required") else "promote"

        review = ReviewOperator(
            task_id="review",
            subject="Promote {{ ti.xcom_pull(task_ids='gate')['model_name'] }} version "
            "{{ ti.xcom_pull(task_ids='gate')['version'] }} to champion?",
            body="The challenger passed the gate:\n\n{{ ti.xcom_pull(task_ids='gate')['summary'] }}\n\n"
            "Gate report: {{ ti.xcom_pull(task_ids='gate')['report'] }}",
            options=["Promote", "Reject"],
            options_mapping={"Promote": "promote", "Reject": "reject"},
            defaults="Reject",
            response_timeout=timedelta(days=2),
        )

        @task(trigger_rule="none_failed_min_one_success", outlets=[assets.champion])
        def promote(
            result: dict[str, Any], decision: dict[str, Any], dag_run=None, ti=None, outlet_events=None
        ) -> dict[str, Any]:
            """Move the champion alias to the challenger and announce the new champion."""
            from mlloop.training.pipeline import promote_or_reject

            actor = airflow_actor(dag_run, ti.xcom_pull(task_ids="review", key="reviewer"))
            record = promote_or_reject(result, decision, actor=actor, promote=True, use_case=name)
            moved = ChampionMoved.from_record(record, gate_report=decision["report"])
            outlet_events[assets.champion].extra = moved.to_extra()
            return record

        @task(trigger_rule="none_failed_min_one_success")
        def reject(result: dict[str, Any], decision: dict[str, Any], dag_run=None, ti=None) -> dict[str, Any]:
            """Tag the challenger rejected, with the failed rules or the reviewer's refusal."""
            from mlloop.training.pipeline import promote_or_reject

            actor = airflow_actor(dag_run, ti.xcom_pull(task_ids="review", key="reviewer"))
            return promote_or_reject(result, decision, actor=actor, promote=False, use_case=name)

        decision = with_links(gate(result, snap), GateReportLink())
        route = decide(decision)
        promoted = with_links(promote(result, decision), ModelVersionLink())
        rejected = with_links(reject(result, decision), ModelVersionLink())
        route >> [review, promoted, rejected]
        review >> [promoted, rejected]

    return train()
