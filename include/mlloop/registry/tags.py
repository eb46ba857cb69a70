"""The names of the MLflow tags the platform writes and reads: defined here once, used through the name.

The values are stored in MLflow (runs and model versions already carry them), so a name here is never
renamed, only added. Run tags are on the training run; version tags on the registered model version.
"""

from __future__ import annotations

# Lineage, on the training run and its registered version alike.
SNAPSHOT_DIGEST_TAG = "mlloop.snapshot_digest"  # the content-addressed training snapshot
DAG_RUN_ID_TAG = "mlloop.dag_run_id"  # one registered version per DAG run (idempotency key)
BACKEND_TAG = "mlloop.backend"  # local | kubernetes
DEVICE_TAG = "mlloop.device"  # cpu | cuda
MODEL_TYPE_TAG = "mlloop.model_type"  # xgboost | torch; also the torch model's MLmodel metadata key
CODE_VERSION_TAG = "mlloop.code_version"
FEATURE_SPEC_VERSION_TAG = "mlloop.feature_spec_version"

# Run tags of a retrain that monitoring requested.
TRIGGER_REASON_TAG = "mlloop.trigger_reason"
TRIGGER_WINDOW_TAG = "mlloop.trigger_window"
TRAIN_FROM_TAG = "mlloop.train_from"  # the first day a decay-triggered retrain may learn from

# The gate's judgement, on the version: verdict passed | failed | error (only passed can be promoted),
# error's reason, and the one-line summary; on the run, the gate config's version and sources.
GATE_VERDICT_TAG = "mlloop.gate.verdict"
GATE_ERROR_TAG = "mlloop.gate.error"
GATE_SUMMARY_TAG = "mlloop.gate.summary"
GATE_CONFIG_TAG = "mlloop.gate.config_version"
GATE_SOURCE_TAG = "mlloop.gate.config_source"

# What then happened to the version (the registry's record, not the gate's): decision promoted | rejected,
# a rejection's reason, and when it was promoted (a rollback may only return to a promoted version).
DECISION_TAG = "mlloop.gate.decision"
REASON_TAG = "mlloop.gate.reason"
PROMOTED_AT_TAG = "mlloop.promoted_at"

# Audit runs: one tag per field of the record (``mlloop.audit.<field>``).
AUDIT_TAG_PREFIX = "mlloop.audit."

# Monitoring runs (experiment "monitoring"): one run per check, tagged with what it judged and decided; one
# timeline run per use case, tagged with the use case's name, that steps every figure by the monitored day.
USE_CASE_TAG = "mlloop.use_case"
MODEL_VERSION_TAG = "mlloop.model_version"  # the champion version the check judged
WINDOW_TAG = "mlloop.window"  # the monitored days, first..last
MONITOR_ACTION_TAG = "mlloop.monitor.action"  # quiet | trigger | suppressed | ...
MONITOR_REASON_TAG = "mlloop.monitor.reason"
MONITOR_POLICY_VERSION_TAG = "mlloop.monitor.policy_version"
MONITOR_POLICY_FINGERPRINT_TAG = "mlloop.monitor.policy_fingerprint"
TIMELINE_TAG = "mlloop.monitor.timeline"

# Lifecycle (mlloop.lifecycle): a version under legal hold (value "true") keeps what it needs whatever the
# retention policy; an archived version (lifecycle "archived", with the rule that archived it) has lost its
# model artifacts, keeps its metadata, metrics, tags and audit, and can be neither promoted nor rolled back.
LEGAL_HOLD_TAG = "mlloop.legal_hold"
LIFECYCLE_TAG = "mlloop.lifecycle"
LIFECYCLE_REASON_TAG = "mlloop.lifecycle.reason"
ARCHIVED = "archived"
ARCHIVING = "archiving"  # set while its artifacts are being deleted; refused like archived

# Erasure (mlloop.lifecycle.erasure): a version trained on a snapshot that lost a data subject's rows carries
# the erasure ledger ids (comma-separated) that changed it; its recorded snapshot digest no longer exists.
ERASURE_AFFECTED_TAG = "mlloop.erasure_affected"

# Retirement (mlloop.lifecycle.retire), on the registered model: when the use case was retired (ISO 8601),
# by whom and why. The scoring service reads them to answer 410 Gone instead of "no champion".
RETIRED_TAG = "mlloop.retired"
RETIRED_BY_TAG = "mlloop.retired.actor"
RETIRED_REASON_TAG = "mlloop.retired.reason"
