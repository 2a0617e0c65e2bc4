"""The otel-ml wire contract: every attribute key, event name, metric name, label name and
environment variable.

This module is a leaf: it imports nothing, and everyone else takes names from here instead
of spelling string literals. It mirrors ``docs/semantic-conventions.md``; a change here is a
change to a public contract (users' dashboards, alerts and scripts depend on these names).

Sections, in the order data flows: the ML events and their attributes; the model server's
own spans and metrics (and their Prometheus names); the processor's ``ml_*`` metrics, their
label names and label values; reserved names; environment variables.

Example::

    from otel_ml import semconv as sc

    attributes = {sc.ML_MODEL_NAME: "churn", sc.feature_key("age"): 42}
    assert sc.ML_FEATURE_PREFIX + "age" in attributes
"""

# --- ML events: OTel LogRecord ``event_name`` ---------------------------------------------------
EVENT_PREDICTION = "ml.prediction"
EVENT_LABEL = "ml.label"
EVENT_AUDIT = "ml.audit"
#: Older SDKs carry the event name as this attribute instead of the LogRecord field.
LEGACY_EVENT_NAME_ATTRIBUTE = "event.name"

# --- ML event attributes ------------------------------------------------------------------------
ML_MODEL_NAME = "ml.model.name"
ML_MODEL_VERSION = "ml.model.version"
ML_MODEL_TASK = "ml.model.task"
ML_PREDICTION_ID = "ml.prediction.id"
ML_FEATURE_PREFIX = "ml.feature."
ML_OUTPUT_LABEL = "ml.output.label"
ML_OUTPUT_VALUE = "ml.output.value"
ML_OUTPUT_SCORE = "ml.output.score"
ML_OUTPUT_PROBABILITY_PREFIX = "ml.output.probability."
ML_SEGMENT_PREFIX = "ml.segment."
ML_LABEL_VALUE = "ml.label.value"
ML_AUDIT_ACTION = "ml.audit.action"
ML_AUDIT_ACTOR = "ml.audit.actor"
ML_AUDIT_DETAIL = "ml.audit.detail"
#: Id of one audit event (hex): a resent or twice-shipped event is stored once.
ML_AUDIT_ID = "ml.audit.id"
#: Standard OTel attributes an event may carry (sensitive: anonymized by the processor's rules).
ENDUSER_ID = "enduser.id"
CLIENT_ADDRESS = "client.address"
#: Suffixes of the summary attributes that replace a non-scalar feature ``ml.feature.<name>``.
FEATURE_SUMMARY_LENGTH = ".length"
FEATURE_SUMMARY_SIZE = ".size"
FEATURE_SUMMARY_MEAN = ".mean"
FEATURE_SUMMARY_MIN = ".min"
FEATURE_SUMMARY_MAX = ".max"


def feature_key(name: str) -> str:
    """Attribute key of model input ``name`` (``ml.feature.<name>``)."""
    return ML_FEATURE_PREFIX + name


def segment_key(name: str) -> str:
    """Attribute key of grouping attribute ``name`` (``ml.segment.<name>``)."""
    return ML_SEGMENT_PREFIX + name


def probability_key(cls: str) -> str:
    """Attribute key of the probability of class ``cls`` (``ml.output.probability.<cls>``)."""
    return ML_OUTPUT_PROBABILITY_PREFIX + cls


def reference_probability_column(cls: str) -> str:
    """Reference-file column of the probability of class ``cls`` (``__probability_<cls>__``)."""
    return REFERENCE_PROBABILITY_COLUMN_PREFIX + cls + REFERENCE_PROBABILITY_COLUMN_SUFFIX


def summary_key(key: str, summary: str) -> str:
    """Attribute key of one summary (a ``FEATURE_SUMMARY_*`` suffix) of the feature ``key``
    (e.g. ``ml.feature.embedding.mean``)."""
    return key + summary


# Values of ``ml.model.task``.
TASK_CLASSIFICATION = "classification"
TASK_REGRESSION = "regression"
TASKS = (TASK_CLASSIFICATION, TASK_REGRESSION)

# Values of ``ml.audit.action``.
AUDIT_MODEL_LOAD = "model_load"
AUDIT_VERSION_CHANGE = "version_change"
AUDIT_CONFIG_CHANGE = "config_change"
AUDIT_ACTIONS = (AUDIT_MODEL_LOAD, AUDIT_VERSION_CHANGE, AUDIT_CONFIG_CHANGE)

# --- Model server (SDK): instrumentation scope, span and span attributes ------------------------
INSTRUMENTATION_NAME = "otel_ml"
SPAN_PREDICT = "ml.predict"
#: Span attributes of ``ml.predict``: which method was called and how many rows it predicted.
ML_PREDICT_METHOD = "ml.predict.method"
ML_PREDICT_ROWS = "ml.predict.rows"
#: The framework that served the call (``sklearn``, ``xgboost``, ``lightgbm``, ``onnxruntime``, ``custom``).
ML_FRAMEWORK = "ml.framework"
#: Standard OTel attribute naming the class of an error (on spans and on ``ml.client.errors``).
ERROR_TYPE = "error.type"

# --- Model server (SDK): OTel metric instruments, their attributes and buckets ------------------
METRIC_CLIENT_PREDICTIONS = "ml.client.predictions"
METRIC_CLIENT_ERRORS = "ml.client.errors"
METRIC_CLIENT_PREDICT_DURATION = "ml.client.predict.duration"
METRIC_CLIENT_PREDICTION_SCORE = "ml.client.prediction.score"
METRIC_CLIENT_BUFFER_DROPPED = "ml.client.buffer.dropped"
#: Internal failures of the instrumentation (predict itself never fails because of them).
METRIC_CLIENT_INSTRUMENTATION_ERRORS = "ml.client.instrumentation.errors"
#: Attribute of ``ml.client.buffer.dropped``: why records were dropped (``buffer_full``, ``queue_full``).
ML_DROP_REASON = "ml.drop.reason"
DROP_BUFFER_FULL = "buffer_full"
DROP_QUEUE_FULL = "queue_full"
#: Explicit bucket boundaries (seconds) for ``ml.client.predict.duration``: 0.1 ms to 10 s.
PREDICT_DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Explicit bucket boundaries for ``ml.client.prediction.score`` (a confidence in [0, 1]).
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

# --- Model server (SDK) metrics in Prometheus: names after the standard OTel -> Prometheus
# translation (dots to underscores, unit and _total suffixes) --------------------------------------
PROM_CLIENT_PREDICTIONS = "ml_client_predictions_total"
PROM_CLIENT_ERRORS = "ml_client_errors_total"
PROM_CLIENT_PREDICT_DURATION = "ml_client_predict_duration_seconds"
PROM_CLIENT_PREDICTION_SCORE = "ml_client_prediction_score"
PROM_CLIENT_BUFFER_DROPPED = "ml_client_buffer_dropped_total"
PROM_LABEL_MODEL_NAME = "ml_model_name"
PROM_LABEL_MODEL_VERSION = "ml_model_version"

# --- Processor: Prometheus metric names (counters without the _total suffix that
# prometheus_client adds) -----------------------------------------------------------------------------
M_RECORDS_RECEIVED = "ml_records_received"
M_RECORDS_REJECTED = "ml_records_rejected"
M_DATA_QUALITY_ISSUES = "ml_data_quality_issues"
M_LABELS_JOINED = "ml_labels_joined"
M_LABELS_REPLACED = "ml_labels_replaced"
M_LABELS_EXPIRED = "ml_labels_expired"
M_LABELS_PENDING = "ml_labels_pending"
M_LABEL_JOIN_DELAY = "ml_label_join_delay_seconds"
M_PERFORMANCE = "ml_performance"
M_PERFORMANCE_INTERVAL = "ml_performance_interval"
M_ESTIMATED_PERFORMANCE = "ml_estimated_performance"
#: NannyML's sampling-error band of each estimate (issue 21): estimate ± 3 standard errors.
M_ESTIMATED_PERFORMANCE_INTERVAL = "ml_estimated_performance_interval"
M_OOD_RATIO = "ml_ood_ratio"
M_OOD_RATIO_FLOOR = "ml_ood_ratio_floor"
M_FEATURE_OOD_RATIO = "ml_feature_ood_ratio"
#: missing fraction of the window per input feature (the score of drift method ``missing``)
M_FEATURE_MISSING_RATIO = "ml_feature_missing_ratio"
M_DRIFT_SCORE = "ml_drift_score"
M_DRIFT_PVALUE = "ml_drift_pvalue"
M_DRIFT_QVALUE = "ml_drift_qvalue"
M_DRIFT_THRESHOLD = "ml_drift_threshold"
M_DRIFT_DETECTED = "ml_drift_detected"
M_FAIRNESS = "ml_fairness"
M_FAIRNESS_PVALUE = "ml_fairness_pvalue"
M_GROUP_PERFORMANCE = "ml_group_performance"
M_GROUP_PREDICTIONS = "ml_group_predictions"
M_WINDOW_PREDICTIONS = "ml_window_predictions"
M_WINDOW_LABELED = "ml_window_labeled"
#: labeled-window rows stored after the reference: what MLPerformanceBelowBaseline's minimum counts
M_WINDOW_LABELED_AFTER_REFERENCE = "ml_window_labeled_after_reference"
#: rows of the reference so far (a file's rows; for first_n, the predictions collected towards it)
M_REFERENCE_PREDICTIONS = "ml_reference_predictions"
#: rows the reference will have (the file's, or first_n): "collecting the reference: 200 of 1000"
M_REFERENCE_SIZE = "ml_reference_size"
M_LAST_COMPUTED = "ml_last_computed_timestamp_seconds"
M_COMPUTE_DURATION = "ml_compute_duration_seconds"
M_CARDINALITY_LIMITED = "ml_cardinality_limited"

# --- Processor: Prometheus label names ------------------------------------------------------------
L_MODEL = "model"
L_MODEL_VERSION = "model_version"
L_FEATURE = "feature"
L_METHOD = "method"
L_METRIC = "metric"
L_ATTRIBUTE = "attribute"
L_GROUP = "group"
L_SIGNAL = "signal"
L_REASON = "reason"
L_ISSUE = "issue"
L_KIND = "kind"
L_BOUND = "bound"

# --- Processor: label values ------------------------------------------------------------------------
# ``signal`` of ml_records_received_total.
SIGNAL_PREDICTION = "prediction"
SIGNAL_LABEL = "label"
SIGNAL_AUDIT = "audit"
SIGNAL_LOG = "log"
SIGNAL_METRIC = "metric"
SIGNAL_SPAN = "span"

# ``reason`` of ml_records_rejected_total (a fixed, documented set).
REASON_UNAUTHENTICATED = "unauthenticated"
REASON_MALFORMED = "malformed"
REASON_TOO_LARGE = "too_large"
REASON_DUPLICATE = "duplicate"
REASON_INVALID_ATTRIBUTE = "invalid_attribute"
REASON_MISSING_ATTRIBUTE = "missing_attribute"
REASON_BUSY = "busy"
REJECT_REASONS = (
    REASON_UNAUTHENTICATED, REASON_MALFORMED, REASON_TOO_LARGE, REASON_DUPLICATE,
    REASON_INVALID_ATTRIBUTE, REASON_MISSING_ATTRIBUTE, REASON_BUSY,
)

# ``issue`` of ml_data_quality_issues_total.
ISSUE_MISSING = "missing"
ISSUE_NAN = "nan"
ISSUE_TYPE_CHANGED = "type_changed"
ISSUE_UNSUPPORTED_TYPE = "unsupported_type"
ISSUE_OUT_OF_RANGE = "out_of_range"
#: A value that cannot be read as its feature's type (the reference's): e.g. text for a number.
ISSUE_TYPE_MISMATCH = "type_mismatch"
#: ``feature`` of data-quality issues found in the output score.
FEATURE_SCORE = "__score__"

# ``kind`` of ml_cardinality_limited_total.
KIND_MODEL = "model"
KIND_FEATURE = "feature"
KIND_GROUP = "group"

# ``metric`` of ml_performance / ml_estimated_performance.
PERF_ACCURACY = "accuracy"
PERF_PRECISION = "precision"
PERF_RECALL = "recall"
PERF_F1 = "f1"
PERF_ROC_AUC = "roc_auc"
PERF_LOG_LOSS = "log_loss"
PERF_BRIER = "brier"
PERF_MAE = "mae"
PERF_RMSE = "rmse"
PERF_R2 = "r2"

# ``bound`` of ml_performance_interval and ml_estimated_performance_interval.
BOUND_LOWER = "lower"
BOUND_UPPER = "upper"

# ``metric`` of ml_fairness and ml_group_performance.
FAIR_DEMOGRAPHIC_PARITY_DIFFERENCE = "demographic_parity_difference"
FAIR_DISPARATE_IMPACT_RATIO = "disparate_impact_ratio"
FAIR_EQUALIZED_ODDS_DIFFERENCE = "equalized_odds_difference"
GROUP_SELECTION_RATE = "selection_rate"
GROUP_ACCURACY = "accuracy"
GROUP_TPR = "tpr"
GROUP_FPR = "fpr"

# ``method`` of the drift metrics (and the drift method names in the processor's config).
METHOD_KS = "ks"
METHOD_PSI = "psi"
METHOD_JENSENSHANNON = "jensenshannon"
METHOD_WASSERSTEIN = "wasserstein"
METHOD_CHI2 = "chi2"
METHOD_AUTO = "auto"
METHOD_PCA_RECONSTRUCTION = "pca_reconstruction"
#: the companion test run on every input feature beside its ``method`` (never a feature's ``method``)
METHOD_MISSING = "missing"

# --- Reserved names: reference-file columns, pseudo-features (``feature`` label values) and the
# overflow value that capped label values fold into ------------------------------------------------
REFERENCE_PREDICTION_COLUMN = "__prediction__"
REFERENCE_SCORE_COLUMN = "__score__"
REFERENCE_LABEL_COLUMN = "__label__"
#: ``__probability_<class>__``: a class's probability in a reference file (multi-class CBPE, issue 21).
REFERENCE_PROBABILITY_COLUMN_PREFIX = "__probability_"
REFERENCE_PROBABILITY_COLUMN_SUFFIX = "__"
FEATURE_PREDICTION = "__prediction__"
FEATURE_MULTIVARIATE = "__multivariate__"
OVERFLOW_LABEL_VALUE = "__other__"

# --- Environment variables ------------------------------------------------------------------------
# The SDK's (durations in milliseconds, as OTel's own).
ENV_MODEL_NAME = "OTEL_ML_MODEL_NAME"
ENV_MODEL_VERSION = "OTEL_ML_MODEL_VERSION"
ENV_BUFFER_PATH = "OTEL_ML_BUFFER_PATH"
ENV_BUFFER_MAX_BYTES = "OTEL_ML_BUFFER_MAX_BYTES"
ENV_EXPORT_INTERVAL = "OTEL_ML_EXPORT_INTERVAL"
ENV_SHUTDOWN_TIMEOUT = "OTEL_ML_SHUTDOWN_TIMEOUT"
ENV_SAMPLE_RATIO = "OTEL_ML_SAMPLE_RATIO"
ENV_MAX_TEXT_LENGTH = "OTEL_ML_MAX_TEXT_LENGTH"
ENV_AUDIT_ACTOR = "OTEL_ML_AUDIT_ACTOR"
ENV_LOGGING_BRIDGE = "OTEL_ML_LOGGING_BRIDGE"
ENV_MAX_QUEUE_SIZE = "OTEL_ML_MAX_QUEUE_SIZE"
ENV_EXPORT_BATCH_SIZE = "OTEL_ML_EXPORT_BATCH_SIZE"
# The processor's.
#: Ingest worker processes (default: one per core; 0 keeps cleaning on the writer thread).
ENV_INGEST_WORKERS = "OTEL_ML_INGEST_WORKERS"
#: This processor replica's identity in the shared database (default: hostname and gRPC endpoint).
ENV_REPLICA_ID = "OTEL_ML_REPLICA_ID"
#: Base URL of the docs the model pages link each figure to (default: the project's docs on GitHub).
ENV_DOCS_URL = "OTEL_ML_DOCS_URL"
