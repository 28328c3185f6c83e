"""Every MLflow tag, parameter, metric and artifact name that mlpipe writes.

This module is the contract between mlpipe and anything that reads its runs:
``mlflow.search_runs(filter_string=f"tags.`{schema.STAGE}` = 'model'")`` stays
correct as long as it spells names through this module. Nothing else in mlpipe
spells them.

Every run mlpipe logs carries :data:`SCHEMA_VERSION` in the tag
:data:`SCHEMA_VERSION_TAG`; the version changes only when the meaning of a stored
name changes (see the changelog). Absent values are not logged: a load run without
a target has no ``target`` parameter.

Examples
--------
>>> from mlpipe import schema
>>> schema.upstream_tag("0a1b2c")
'mlpipe.upstream.0a1b2c'
"""

# The version of this tag contract, on every run as SCHEMA_VERSION_TAG. Version 2:
# one exact tag per upstream run (upstream_tag), structured evaluation tags, absent
# values not logged.
SCHEMA_VERSION = "2"
SCHEMA_VERSION_TAG = "mlpipe.schema_version"

# Tags on every stage run.
STAGE = "mlpipe.stage"  # the stage (step) name: "load", "processing", "model", ...
TYPE = "mlpipe.type"  # what the stage did: table, logic or algorithm name
KEY = "mlpipe.key"  # "type@yyyymmddHHMMSS", unique within the stage; also the run name
UPSTREAM = "mlpipe.upstream"  # comma-separated run ids of the stage runs it was fitted on
UPSTREAM_KEYS = "mlpipe.upstream_keys"  # comma-separated "stage:key" of the same runs
UPSTREAM_PREFIX = "mlpipe.upstream."  # one tag per upstream run: see upstream_tag
CLASS = "mlpipe.class"  # module.qualname of the fitted object
SERIALIZER = "mlpipe.serializer"  # "cloudpickle", "dill" or "skops": how stage/ was saved
VERSION = "mlpipe.version"  # the mlpipe version that logged the run
MODEL_URI = "mlpipe.model_uri"  # on the final stage: the raw-input pyfunc model
CACHE_KEY = "mlpipe.cache_key"  # the stage cache key (see mlpipe/_cache.py)
CACHE_KEY_PREFIX = "mlpipe.cache_key."  # the same key in a tag's name: see cache_key_tag
OUTPUT = "mlpipe.output"  # artifact path of a slow stage's stored output on its training data
REUSED_FROM = "mlpipe.reused_from"  # the run whose fitted stage this run reuses
EVALUATION = "mlpipe.evaluation"  # on the final stage: one of the EVALUATED_BY values
EVALUATION_FOLDS = "mlpipe.evaluation.folds"  # number of cross-validation folds
EVALUATION_SPLITTER = "mlpipe.evaluation.splitter"  # class of the cross-validation splitter
EVALUATION_FAILED_FOLDS = "mlpipe.evaluation.failed_folds"  # comma-separated, when any failed
EVALUATION_SKIPPED = "mlpipe.evaluation.skipped"  # why there is no evaluation
EVALUATION_NO_PLOTS = "mlpipe.evaluation.no_plots"  # why there are no plots, when there are none
EVALUATION_ROWS_KEPT = "mlpipe.evaluation.predictions_kept"  # rows in PREDICTIONS, if sampled
OWNER = "mlpipe.owner"  # "host:pid" of the process that logged it (to end it if it dies)
# The run's lease: while it is open its process beats, setting HEARTBEAT to the time
# (ms since the epoch, the owner's clock) every MLPIPE_HEARTBEAT_SECONDS. A RUNNING
# run whose last beat is older than LEASE_SECONDS has lost its owner, on any host.
HEARTBEAT = "mlpipe.heartbeat"
LEASE_SECONDS = "mlpipe.lease_seconds"  # seconds without a beat after which it is abandoned
# On a run that another fit ended FAILED because nobody could end it any more: why
# (lease expired, owner process dead, store unreachable when its own fit failed).
ENDED_BECAUSE = "mlpipe.ended_because"
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own tag, shown in its UI
# MLflow's own tags, which its UI shows on a run's page: the run's Markdown
# description (what the stage is, links to its upstream runs, its model and version),
# and where the fit came from (a script's path, a notebook, "mlpipe train").
NOTE = "mlflow.note.content"
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
# On the final stage run and on its model version: the metric a promotion compares by
# default (the first cross-validated score, or a search's best_score), and the
# registered version, "name/version", that the run's model became.
SCORE_METRIC = "mlpipe.score_metric"
REGISTERED_VERSION = "mlpipe.registered_version"

# Values of EVALUATION.
EVALUATED_BY_CROSS_VALIDATION = "cross_validation"  # the whole chain refitted on each fold
EVALUATED_BY_SEARCH = "search"  # a search as final step: its own best_score_
EVALUATED_BY_NOTHING = "skipped"  # see EVALUATION_SKIPPED

# Tags on load runs.
FINGERPRINT = "mlpipe.fingerprint"  # the full fingerprint (the dataset digest is capped)
SOURCE = "mlpipe.source"  # where the data came from, passwords redacted
SNAPSHOT = "mlpipe.snapshot"  # artifact path of the data snapshot

# Parameters on load runs (plus "table", "query" or "file").
SOURCE_PARAM = "source"
ROWS = "rows"
COLUMNS = "columns"
TARGET = "target"

# Metrics.
KEY_TIME = "key_time"  # the key's yyyymmddHHMMSS as an integer, for sorting and ranges
FIT_TIME = "fit_time_seconds"
TRAINING_SCORE = "training_score"
BEST_SCORE = "best_score"
BEST_THRESHOLD = "best_threshold"  # the decision threshold a threshold-tuned model chose
CV_PREFIX = "cv_"  # cv_<scorer>_mean and cv_<scorer>_std

# Parameter prefixes.
BEST_PARAM_PREFIX = "best."  # best parameters of a search used as the final step

# Artifacts.
SNAPSHOT_DIR = "data"  # the load run's snapshot: data/snapshot.parquet (or .pkl)
SNAPSHOT_FILE = "snapshot.parquet"
SNAPSHOT_PICKLE = "snapshot.pkl"
STAGE_ARTIFACT = "stage"  # directory holding the fitted stage
STAGE_FILE = "stage.pkl"  # serializer cloudpickle or dill
STAGE_SKOPS_FILE = "stage.skops"  # serializer skops
STAGE_OUTPUT = "output.pkl"  # stage/output.pkl: see OUTPUT
CV_RESULTS = "cv_results.json"  # a search's cv_results_, as an MLflow table
LINEAGE_GRAPH = "lineage.svg"  # on the final stage: the chain as a picture
MODEL_NAME = "model"  # artifact name of the raw-input model; its LoggedModel is named apart

# The final stage's out-of-fold evaluation (LineagePipeline's cv): evaluation/<file>.
EVALUATION_DIR = "evaluation"
CONFUSION_MATRIX = "confusion_matrix.png"  # classifiers
ROC_CURVE = "roc_curve.png"  # classifiers with predict_proba or decision_function
PRECISION_RECALL_CURVE = "precision_recall_curve.png"  # the same
RESIDUALS = "residuals.png"  # regressors: residual against prediction
PREDICTIONS = "predictions.json"  # the out-of-fold predictions, as an MLflow table

# Columns of the out-of-fold predictions table.
ROW_COLUMN = "row"  # position of the row in the training data, from 0
FOLD_COLUMN = "fold"  # the fold whose model predicted the row, from 0
TARGET_COLUMN = "target"
PREDICTION_COLUMN = "prediction"
PROBA_PREFIX = "proba_"  # proba_<class>: predict_proba of each class
DECISION_PREFIX = "decision_"  # decision_<class>: decision_function, when no predict_proba

# The MLflow dataset input context of the training data.
TRAINING_CONTEXT = "training"
LOAD_STAGE = "load"


def upstream_tag(run_id: str) -> str:
    """The tag that a stage run fitted on run ``run_id`` carries (value ``stage:key``).

    One tag per upstream run makes "every run fitted on X" one exact, indexed
    ``search_runs`` filter: ``tags.`mlpipe.upstream.<X>` != ''``.
    """
    return f"{UPSTREAM_PREFIX}{run_id}"


def cache_key_tag(key: str) -> str:
    """The tag that a stage run with cache key ``key`` carries (value: its stage), next
    to :data:`CACHE_KEY`.

    MLflow indexes tags by name, not by value: ``tags.`mlpipe.cache_key` = 'K'`` reads
    that tag of every run of the experiment, while ``tags.`mlpipe.cache_key.K` != ''``
    is one index lookup, whatever the number of runs. The stage cache looks runs up
    with it.

    >>> cache_key_tag("bb5df674")
    'mlpipe.cache_key.bb5df674'
    """
    return f"{CACHE_KEY_PREFIX}{key}"


# What the stage cache trusts (see docs/caching.rst, "What the cache trusts").
# On pipeline stage runs that saved a fitted stage, and on the copies that name them
# in REUSED_FROM: "sha256:<hex>" of stage/stage.pkl (or .skops), checked before loading.
STAGE_DIGEST = "mlpipe.stage_digest"
# On a run that stored its output (see OUTPUT): "sha256:<hex>" of stage/output.pkl,
# checked before reading it, and sklearn's transform_output setting it was made under
# ("default", "pandas", "polars"): it is used only under the same setting.
OUTPUT_DIGEST = "mlpipe.output_digest"
OUTPUT_CONFIG = "mlpipe.output_config"
# A non-final stage's outputs on one fold of the final stage's cross-validation, kept
# so that a refit with another final stage fits no fold of it again: the pickled pair
# (output on the fold's training rows, on its test rows) in FOLD_DIR/<fold key>.pkl of
# the run that fitted the stage, written first, then the tag FOLD_PREFIX + <fold key>
# there: {"digest": "sha256:<hex>", "user": <who wrote it>} (JSON). A fold key is the
# SHA-256 of the stage's cache key, the fold's rows and transform_output.
FOLD_PREFIX = "mlpipe.fold."
FOLD_DIR = "stage/folds"
# MLflow's own tag: who created the run, as the client said (MLflow does not check it).
# mlpipe sets it on every stage run and on the load runs fit(X, y) logs; a pipeline's
# trusted_users compares it.
MLFLOW_USER = "mlflow.user"

# A stage's rebuild recipe (see mlpipe/_recipe.py), on every run that fitted a stage:
# stage/recipe.json (what the fit depended on) and the unfitted estimator, saved as
# the fitted one was, in stage/recipe.pkl (or .skops); RECIPE_DIGEST is "sha256:<hex>"
# of the latter, checked before it is loaded. NOT_SEEDED, when the stage is not
# seeded: the comma-separated parameter paths whose random_state was None.
RECIPE_FILE = "recipe.json"
RECIPE_PICKLE = "recipe.pkl"
RECIPE_SKOPS_FILE = "recipe.skops"
RECIPE_DIGEST = "mlpipe.recipe_digest"
NOT_SEEDED = "mlpipe.not_seeded"
# A "reproduce" stage run (mlpipe.reproduce), fitted on the run it reproduced: its
# verdict ("identical", "differs", "cannot rebuild"), the first stage that did not
# reproduce, whether the code importable now was used ("true"/"false"), and the
# report as REPRODUCE_REPORT (JSON).
REPRODUCE_STAGE = "reproduce"
REPRODUCE_VERDICT = "mlpipe.reproduce.verdict"
REPRODUCE_FIRST_DIFFERENCE = "mlpipe.reproduce.first_difference"
REPRODUCE_CURRENT_CODE = "mlpipe.reproduce.current_code"
REPRODUCE_REPORT = "reproduce.json"

# A "score" stage run (mlpipe.score, mlpipe score), fitted on the final stage run whose
# model it scored with (its upstream): the model URI it loaded; the input's source in
# SOURCE (passwords redacted, as on load runs) and its fingerprint (mlpipe.fingerprint
# of the frame read, or, read in several chunks, the XXH3-128 of the chunks'
# fingerprints in order); where the predictions were written (an absolute path) and
# "sha256:<hex>" of that file. Parameters: SOURCE_PARAM, "table", "query" or "file",
# ROWS, CHUNK_ROWS, PROBA_PARAM, KEEP_PARAM (comma-separated); metric SCORE_TIME.
SCORE_STAGE = "score"
SCORED_MODEL = "mlpipe.score.model"
INPUT_FINGERPRINT = "mlpipe.score.input_fingerprint"
SCORE_OUTPUT = "mlpipe.score.output"
SCORE_OUTPUT_DIGEST = "mlpipe.score.output_digest"
CHUNK_ROWS = "chunk_rows"
PROBA_PARAM = "proba"
KEEP_PARAM = "keep"
SCORE_TIME = "score_time_seconds"
# Scored on Spark (mlpipe.score(..., spark=MASTER) or a Spark DataFrame): the master,
# its password redacted; the output is then a Parquet folder, and the input's
# fingerprint is order-independent (see mlpipe/_score_spark.py).
SPARK_MASTER = "mlpipe.score.spark_master"

# On the raw-input model's LoggedModel and on each registered version of it: the chain.
# CHAIN is JSON, one {"stage", "key", "run_id", "cache_key"} per stage run, load first;
# FINGERPRINT (above) the training data's, comma-separated for several load runs.
CHAIN = "mlpipe.chain"
# MLflow's own tag on a LoggedModel: JSON [{"name", "version"}] of its registered
# versions, which the UI's model page lists under "Model versions".
MODEL_VERSIONS = "mlflow.modelVersions"
# On a model version that mlpipe.promote moved an alias to: PROMOTED_PREFIX +
# "<alias>." + one of by, at, from, because (who, when in UTC ISO 8601, the version
# that held the alias before or "none", and why: the scores compared or "forced").
PROMOTED_PREFIX = "mlpipe.promoted."


def promoted_tag(alias: str, what: str) -> str:
    """The tag recording ``what`` (by, at, from, because) of a promotion to ``alias``."""
    return f"{PROMOTED_PREFIX}{alias}.{what}"
