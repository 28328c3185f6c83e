"""Every use mlpipe makes of MLflow's internals, each behind one small function.

MLflow's documented public API (``mlflow``, ``mlflow.MlflowClient``,
``mlflow.pyfunc``, ``mlflow.models``, ``mlflow.entities``, ``mlflow.exceptions``,
``mlflow.types``, ``mlflow.data``) may be used anywhere in mlpipe. Everything else
lives here: private names, ``mlflow.store`` internals, ``mlflow.protos``, the
scoring server's helpers, MLflow's error wording, the environment switches MLflow
reads and the loggers it configures. Each function says which MLflow thing it
wraps, why mlpipe needs it and which MLflow version it was checked against, and
``tests/test_compat.py`` exercises each one against the installed MLflow, so an
upgrade that breaks one fails that test by name.

One exception: ``mlpipe/model/_raw.py`` (and ``_skops_model.py``, which imports
it) runs inside the logged model, where mlpipe is not installed, so it cannot
import this module. Its one internal, the ``INVALID_PARAMETER_VALUE`` error code,
stays in :func:`mlpipe.model._raw.invalid_parameter_value`, with a fallback, and is
tested in ``tests/test_compat.py`` too.

Process-wide changes made here (an environment variable, logging filters, the
warnings hook) are made by the first caller and undone exactly by the last, so
nested and concurrent uses in threads leave things as they were.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import io
import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow

from mlpipe import schema

__all__ = [
    "HardDeleteStore",
    "RunQuery",
    "dataset_source_type",
    "delete_artifacts",
    "is_unexpected_model_error",
    "log_inputs",
    "model_artifact_uri",
    "predictions_json",
    "quiet",
    "search_runs_sql",
    "suppressed_run_url",
]

CHECKED_WITH = "3.17.2"
logger = logging.getLogger("mlpipe")


class _Shared:
    """A process-wide change made by the first of its users and undone by the last.

    ``install`` makes the change and returns what undoes it. Users may nest and may
    be in several threads: the state before the first one is what comes back.
    """

    def __init__(self, install: Callable[[], Callable[[], None]]) -> None:
        self._install = install
        self._lock = threading.Lock()
        self._users = 0
        self._undo: Callable[[], None] | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._undo = self._install()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._undo is not None:
                    undo, self._undo = self._undo, None
                    undo()


# --- Tracking store: permanent deletion (what `mlflow gc` does) --------------------


class HardDeleteStore:
    """The tracking store behind a URI, for removing deleted runs and models for good.

    Wraps ``mlflow.tracking._get_store`` and the private methods ``mlflow gc`` uses on
    MLflow's SQL store (``mlflow.store.tracking.sqlalchemy_store.SqlAlchemyStore``):
    ``_get_deleted_runs``, ``_get_deleted_logged_models``, ``_hard_delete_run``,
    ``_hard_delete_logged_model``, and ``get_logged_model(..., allow_deleted=True)``.
    MLflow's public API can only mark runs and models deleted; mlpipe's garbage
    collection (:func:`mlpipe.tracking._gc.collect_garbage`) must remove them, as
    ``mlflow gc`` does, but only for the runs it chose. Checked with MLflow 3.17.

    Parameters
    ----------
    uri : str
        A tracking or backend store URI (``sqlite:///…``, ``postgresql://…``, or an
        ``http(s)`` server, which cannot hard-delete: see :attr:`supported`).
    """

    _METHODS = (
        "_get_deleted_runs",
        "_get_deleted_logged_models",
        "_hard_delete_run",
        "_hard_delete_logged_model",
    )

    def __init__(self, uri: str) -> None:
        self._store = mlflow.tracking._get_store(uri)

    @property
    def kind(self) -> str:
        """The store's class name, for messages (``SqlAlchemyStore``, ``RestStore``)."""
        return type(self._store).__name__

    @property
    def supported(self) -> bool:
        """Whether this store can find deleted rows and remove them for good."""
        return all(callable(getattr(self._store, name, None)) for name in self._METHODS)

    def deleted_run_ids(self, older_than_ms: int = 0) -> list[str]:
        """Ids of the runs deleted at least ``older_than_ms`` milliseconds ago."""
        return list(self._store._get_deleted_runs(older_than=older_than_ms))

    def deleted_logged_model_ids(self) -> list[str]:
        """Ids of the logged models marked deleted (invisible to ``search_logged_models``)."""
        return list(self._store._get_deleted_logged_models())

    def logged_model(self, model_id: str) -> Any:
        """The logged model ``model_id``, even when it is marked deleted."""
        return self._store.get_logged_model(model_id, allow_deleted=True)

    def hard_delete_run(self, run_id: str) -> None:
        """Remove the row of a deleted run and everything logged to it (not its files)."""
        self._store._hard_delete_run(run_id)

    def hard_delete_logged_model(self, model_id: str) -> None:
        """Remove the row of a logged model (not its files)."""
        self._store._hard_delete_logged_model(model_id)


def delete_artifacts(uri: str) -> None:
    """Delete every file under an artifact URI, whatever store holds it.

    Wraps ``mlflow.store.artifact.artifact_repository_registry.get_artifact_repository``
    and the repository's ``delete_artifacts``: MLflow's public API can download and
    log artifacts but not delete them, and garbage collection must remove the files
    of the runs and models it drops, on any artifact store (local, ``s3:``, or behind
    a server's ``mlflow-artifacts:`` proxy). Checked with MLflow 3.17.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(uri).delete_artifacts()


# --- Tracking store: a read-only search that loads only what it is asked for ----------


@dataclasses.dataclass(frozen=True)
class RunQuery:
    """Which active runs to find, in the terms of ``MlflowClient.search_runs`` filters.

    Every condition must hold (AND), as in a filter string:

    - ``experiment_names`` / ``experiment_ids``: runs of these experiments (by name
      as ``get_experiment_by_name`` finds them, deleted ones included, or by id);
    - ``run_ids``: only these runs (``attributes.run_id IN (...)``);
    - ``tags_equal``: ``tags.`k` = 'v'``; ``tags_like``: ``tags.`k` LIKE 'p'``;
    - ``tags_set``: ``tags.`k` != ''`` for every key;
    - ``any_tag_set``: ``tags.`k` != ''`` for at least one of the keys (no filter
      string can say this: MLflow's filters have no OR);
    - ``status``: ``attributes.status = '...'``.

    Runs come newest first, as with ``order_by=["attributes.start_time DESC"]``.
    """

    experiment_names: tuple[str, ...] = ()
    experiment_ids: tuple[str, ...] = ()
    run_ids: tuple[str, ...] = ()
    tags_equal: tuple[tuple[str, str], ...] = ()
    tags_like: tuple[tuple[str, str], ...] = ()
    tags_set: tuple[str, ...] = ()
    any_tag_set: tuple[str, ...] = ()
    status: str | None = None
    max_results: int = 1000


# A name such as a stage key: anything, '@', then 14 characters (yyyymmddHHMMSS).
_KEY_SHAPED = "%@" + "_" * 14


def search_runs_sql(
    client: mlflow.MlflowClient,
    query: RunQuery,
    *,
    tags: tuple[str, ...] | None = None,
    metrics: bool = False,
) -> list[mlflow.entities.Run] | None:
    """The runs ``query`` finds, read straight from the client's SQL store; None when
    the client's store is not MLflow's plain SQL store (the caller then searches
    with ``search_runs``).

    The runs are ``mlflow.entities.Run`` with their info, the tags named in ``tags``
    (every tag when None) and, with ``metrics``, their latest metrics; never their
    parameters or inputs. Which runs and in which order is exactly what
    ``search_runs`` answers for the same filter and ``order_by=["attributes.start_time
    DESC"]`` (``run_view_type`` ACTIVE_ONLY); ``tests/test_compat.py`` compares them.
    One exception: a pattern on ``mlpipe.key`` is checked on the run name first (the
    stage key is also the name), so a run renamed to another stage key is judged by
    that name.

    Wraps the client's private store (``MlflowClient._tracking_client.store``), its
    ``ManagedSessionMaker`` (a read-only session with MLflow's own SQLite pragmas,
    ``case_sensitive_like`` among them) and its table models
    (``mlflow.store.tracking.dbmodels.models``: ``SqlRun``, ``SqlTag``,
    ``SqlLatestMetric``, ``SqlExperiment``). ``search_runs`` on a SQL store loads
    every parameter, tag, metric and dataset input of each run it returns and
    parses its filter with sqlparse each time: for mlpipe's lookups that is most
    of the cost, and the runs' ids, tags and latest metrics are all they read.
    Only ``SqlAlchemyStore`` itself qualifies (not a subclass: the workspace-aware
    store filters experiments further). Checked with MLflow 3.17.
    """
    # A SQL store in use has imported its module: with a tracking server, nothing of
    # MLflow's SQL layer is imported here (a quarter of the CLI's start-up).
    sql_store = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if sql_store is None or type(store) is not sql_store.SqlAlchemyStore:
        return None
    import sqlalchemy as sa
    from mlflow.entities import Metric, Run, RunData, RunInfo, RunTag
    from mlflow.store.tracking.dbmodels.models import (
        SqlExperiment,
        SqlLatestMetric,
        SqlRun,
        SqlTag,
    )

    statement: Any = sa.select(
        SqlRun.run_uuid,
        SqlRun.experiment_id,
        SqlRun.name,
        SqlRun.user_id,
        SqlRun.status,
        SqlRun.start_time,
        SqlRun.end_time,
        SqlRun.lifecycle_stage,
        SqlRun.artifact_uri,
    ).where(SqlRun.lifecycle_stage == "active")
    if query.run_ids:
        statement = statement.where(SqlRun.run_uuid.in_(query.run_ids))
    if query.status is not None:
        statement = statement.where(SqlRun.status == query.status)
    # Tag values have no index: a tag compared by value is checked run by run, on the
    # runs of the experiments only (the runs table is small and scanned first). A tag
    # that only has to be set is found through the (key, run_uuid) index instead:
    # mlpipe's exact upstream tags are set on a handful of runs.
    # LIKE first: mlpipe's patterns (a key's date) pass few runs, and SQLite checks
    # the conditions in this order.
    conditions: list[tuple[str, Any]] = [(k, SqlTag.value.like(p)) for k, p in query.tags_like]
    for pattern in (p for k, p in query.tags_like if k == schema.KEY):
        # The stage key is also the run's name, a column of the runs table: checked
        # there first, a key's date passes over most runs without reading their tags
        # (5x faster at 10,000 runs). A run renamed to something that is not a key
        # (in MLflow's UI) is still checked by its tag alone.
        statement = statement.where(
            sa.or_(
                SqlRun.name.like(pattern),
                SqlRun.name.is_(None),
                SqlRun.name.not_like(_KEY_SHAPED),
            )
        )
    conditions += [(k, SqlTag.value == v) for k, v in query.tags_equal]
    for key, condition in conditions:
        statement = statement.where(
            sa.exists().where(SqlTag.run_uuid == SqlRun.run_uuid, SqlTag.key == key, condition)
        )
    for keys in [(key,) for key in query.tags_set] + (
        [query.any_tag_set] if query.any_tag_set else []
    ):
        statement = statement.where(
            SqlRun.run_uuid.in_(
                sa.select(SqlTag.run_uuid).where(SqlTag.key.in_(keys), SqlTag.value != "")
            )
        )
    # search_runs' order for "attributes.start_time DESC": missing times last, then
    # the newest, then the run id.
    statement = statement.order_by(
        sa.case((SqlRun.start_time.is_(None), 1), else_=0),
        SqlRun.start_time.desc(),
        SqlRun.run_uuid,
    ).limit(query.max_results)
    with store.ManagedSessionMaker() as session:
        experiment_ids = [int(e) for e in query.experiment_ids]
        if query.experiment_names:
            # Resolved first: joined in the search, SQLite would check every run's
            # tags before its experiment.
            experiment_ids += session.execute(
                sa.select(SqlExperiment.experiment_id).where(
                    SqlExperiment.name.in_(query.experiment_names)
                )
            ).scalars()
        if not experiment_ids:
            return []
        statement = statement.where(SqlRun.experiment_id.in_(experiment_ids))
        rows = session.execute(statement).all()
        ids = [row.run_uuid for row in rows]
        found_tags: dict[str, list[RunTag]] = {i: [] for i in ids}
        found_metrics: dict[str, list[Metric]] = {i: [] for i in ids}
        if ids and tags != ():
            tag_rows = sa.select(SqlTag.run_uuid, SqlTag.key, SqlTag.value).where(
                SqlTag.run_uuid.in_(ids)
            )
            if tags is not None:
                tag_rows = tag_rows.where(SqlTag.key.in_(tags))
            for run_id, key, value in session.execute(tag_rows):
                found_tags[run_id].append(RunTag(key, value))
        if ids and metrics:
            # Columns, not ORM objects: as SqlLatestMetric.to_mlflow_entity makes them.
            latest = SqlLatestMetric
            for run_id, key, value, is_nan, timestamp, step in session.execute(
                sa.select(
                    latest.run_uuid,
                    latest.key,
                    latest.value,
                    latest.is_nan,
                    latest.timestamp,
                    latest.step,
                ).where(latest.run_uuid.in_(ids))
            ):
                value = float("nan") if is_nan else value
                found_metrics[run_id].append(Metric(key, value, timestamp, step))
    return [
        Run(
            RunInfo(
                run_id=row.run_uuid,
                experiment_id=str(row.experiment_id),
                user_id=row.user_id,
                status=row.status,
                start_time=row.start_time,
                end_time=row.end_time,
                lifecycle_stage=row.lifecycle_stage,
                artifact_uri=row.artifact_uri,
                run_name=row.name,
            ),
            RunData(metrics=found_metrics[row.run_uuid], tags=found_tags[row.run_uuid]),
        )
        for row in rows
    ]


# --- Models --------------------------------------------------------------------------


def model_artifact_uri(model_uri: str) -> str:
    """The artifact URI where the files of a ``models:/`` model live.

    Wraps ``mlflow.store.artifact.models_artifact_repo.ModelsArtifactRepository.
    get_underlying_uri``, which resolves every form of model URI (``models:/m-…``,
    ``models:/name/1``, ``models:/name@alias``) to its files, so that
    :mod:`mlpipe.testing` can download one file (``meta.json``, the input example)
    instead of the whole model. Checked with MLflow 3.17.
    """
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    return str(ModelsArtifactRepository.get_underlying_uri(model_uri))


def dataset_source_type(source: Any) -> str:
    """The type name MLflow stores for a ``DatasetSource`` (``"local"``, ``"sql"``, ...).

    Wraps the private classmethod ``DatasetSource._get_source_type``: MLflow's
    ``Dataset`` entity needs the name, and mlpipe builds that entity itself (to
    pass its own digest and skip MLflow's schema inference of every row) rather
    than through ``mlflow.data.from_pandas``. Checked with MLflow 3.17.
    """
    return str(source._get_source_type())


# --- Serving -------------------------------------------------------------------------


def predictions_json(predictions: Any) -> Any:
    """``predictions`` as MLflow's scoring server writes them in its JSON answer.

    Wraps ``mlflow.pyfunc.scoring_server.predictions_to_json``, so that predictions
    made in process compare with served ones cell for cell (the server turns frames
    into records, numpy scalars into numbers, ``NaN`` into ``NaN``).
    Checked with MLflow 3.17.
    """
    from mlflow.pyfunc.scoring_server import predictions_to_json

    out = io.StringIO()
    predictions_to_json(predictions, out)
    return json.loads(out.getvalue())["predictions"]


# MLflow 3.17, mlflow/pyfunc/scoring_server/__init__.py, `invocations`.
_UNEXPECTED_MODEL_ERROR = "Encountered an unexpected error while evaluating the model"


def is_unexpected_model_error(message: str) -> bool:
    """Whether a served error message is MLflow's wrapping of an exception the model raised.

    MLflow's scoring server answers HTTP 400 both when a model rejects its input
    (an ``MlflowException``) and when it crashes (any other exception, rewrapped
    with a fixed message): only that message's wording tells them apart, which
    :func:`mlpipe.testing.check_model` must do. Checked with MLflow 3.17.
    """
    return _UNEXPECTED_MODEL_ERROR in message


def log_inputs(client: Any, run_id: str, datasets: list[Any]) -> None:
    """``client.log_inputs``, safe when another process logs the same dataset meanwhile.

    MLflow's SQL store looks for the dataset (experiment, name, digest), then inserts
    it: when another process inserts it in between, the insert breaks that unique key
    and the whole call is rolled back (SQLite says "UNIQUE constraint failed",
    PostgreSQL "violates unique constraint", a server passes either on). The dataset
    exists then, so a second call finds it and links it. Checked with MLflow 3.17.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.log_inputs(run_id, datasets=datasets)
    except MlflowException as error:
        if "unique" not in str(error).lower():
            raise
        client.log_inputs(run_id, datasets=datasets)


# --- Tracking: the run link MLflow prints ---------------------------------------------


def _install_suppressed_run_url() -> Callable[[], None]:
    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

    name = MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name
    previous = os.environ.get(name)
    os.environ[name] = "true"

    def undo() -> None:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous

    return undo


_suppressed_run_url = _Shared(_install_suppressed_run_url)


@contextlib.contextmanager
def suppressed_run_url() -> Iterator[None]:
    """Inside the block, ending a run against a tracking server prints no link to it.

    Sets ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``, which MLflow's tracking client
    reads in ``set_terminated`` before printing "View run … at: <tracking URI>/…":
    mlpipe leaves that link out when the URI holds a password. The variable is
    process-wide: the first user sets it, the last one puts back exactly what was
    there (another value, or nothing). Checked with MLflow 3.17.
    """
    with _suppressed_run_url():
        yield


# --- MLflow's chatter ---------------------------------------------------------------------

# Loggers MLflow gives a stderr handler of its own when imported (MLflow 3.17,
# mlflow/utils/logging_utils.py `_configure_mlflow_loggers`); alembic logs MLflow's
# database migrations ("Updating database tables").
_CHATTY_LOGGERS = ("mlflow", "alembic")
# Warnings attributed to these modules (the module that called ``warnings.warn``,
# or, for pandas and other libraries, the first caller outside them).
_MLFLOW_MODULES = r"mlflow(\.|$)"
_MLFLOW_DIR = str(Path(mlflow.__file__).resolve().parent)
_quiet_depth: contextvars.ContextVar[int] = contextvars.ContextVar("mlpipe_quiet", default=0)


def _chatty(name: str) -> bool:
    return any(name == root or name.startswith(f"{root}.") for root in _CHATTY_LOGGERS)


class _Demote(logging.Filter):
    """Re-log MLflow's INFO and WARNING records at DEBUG on ``mlpipe``, inside :func:`quiet`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (_quiet_depth.get() and _chatty(record.name)):
            return True
        if not logging.INFO <= record.levelno < logging.ERROR:
            return True
        # One record may pass several handlers: re-log it once.
        if not record.__dict__.get("mlpipe_quieted"):
            record.__dict__["mlpipe_quieted"] = True
            logger.debug(
                "%s %s: %s",
                record.levelname,
                record.name,
                record.getMessage(),
                exc_info=record.exc_info,
            )
        return False


_DEMOTE = _Demote()


def _handlers_of(names: tuple[str, ...]) -> list[logging.Handler]:
    """The handlers records of these loggers reach (``logging.lastResort`` if none)."""
    found: list[logging.Handler] = []
    for name in names:
        current: logging.Logger | None = logging.getLogger(name)
        reached = False
        while current is not None:
            for handler in current.handlers:
                reached = True
                if handler not in found:
                    found.append(handler)
            if not current.propagate:
                break
            current = current.parent
        if not reached and logging.lastResort is not None and logging.lastResort not in found:
            found.append(logging.lastResort)
    return found


def _from_mlflow(filename: str) -> bool:
    return str(Path(filename).resolve()).startswith(_MLFLOW_DIR + os.sep)


def _install_quiet() -> Callable[[], None]:
    added = [h for h in _handlers_of(_CHATTY_LOGGERS) if _DEMOTE not in h.filters]
    for handler in added:
        handler.addFilter(_DEMOTE)
    caught = warnings.catch_warnings()
    caught.__enter__()
    previous = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        if _quiet_depth.get() and _from_mlflow(filename):
            logger.debug("%s from %s:%s: %s", category.__name__, filename, lineno, message)
        else:
            previous(message, category, filename, lineno, file, line)

    # Recorded, not raised nor dropped, whatever the filters say: mlpipe's call, not
    # the user's, made MLflow warn.
    warnings.filterwarnings("always", module=_MLFLOW_MODULES)
    warnings.showwarning = show

    # MLflow draws a bar for each artifact download (a reused stage's file: "Downloading
    # artifacts 1/1") when tqdm is installed, whatever stderr is; mlpipe's own bars
    # (mlpipe/_progress.py) say what takes long. Not inside mlpipe's calls, then.
    from mlflow.utils import file_utils

    bars = file_utils.ArtifactProgressBar
    draw = bars.set_pbar

    def set_pbar(self: Any) -> None:
        if not _quiet_depth.get():
            draw(self)

    bars.set_pbar = set_pbar  # type: ignore[method-assign]

    def undo() -> None:
        bars.set_pbar = draw  # type: ignore[method-assign]
        caught.__exit__(None, None, None)
        for handler in added:
            handler.removeFilter(_DEMOTE)

    return undo


_quiet = _Shared(_install_quiet)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Inside the block, MLflow's INFO and WARNING lines and its warnings go to DEBUG.

    A fit prints MLflow's progress ("Validating input example against model
    signature", "Updating database tables", "Passing a Python object as
    `python_model`…") and warnings raised inside MLflow (pandas deprecations), which
    the user of mlpipe can do nothing about. Inside this block, records of the
    ``mlflow`` and ``alembic`` loggers (and their children) at INFO and WARNING, and
    Python warnings attributed to MLflow's modules, are logged again at DEBUG on the
    ``mlpipe`` logger instead; ERROR and above pass unchanged. To see them::

        logging.basicConfig()
        logging.getLogger("mlpipe").setLevel(logging.DEBUG)

    MLflow's bars for artifact transfers (``ArtifactProgressBar``, drawn when tqdm
    is installed) are not drawn inside the block either.

    Only records and warnings of the thread (and context) inside the block are
    moved; outside it MLflow logs as before. The block nests, and the filter on
    MLflow's handlers and the warnings hook are removed exactly when the last
    block in the process ends, on an exception too. While some block is open,
    MLflow's warnings in other threads are shown whatever the warning filters say.

    Wraps MLflow's logger names and its handler set-up (MLflow 3.17,
    ``mlflow/utils/logging_utils.py``) and ``ArtifactProgressBar.set_pbar``
    (``mlflow/utils/file_utils.py``).
    """
    token = _quiet_depth.set(_quiet_depth.get() + 1)
    try:
        with _quiet():
            yield
    finally:
        _quiet_depth.reset(token)
