"""Stage experiments and stage runs: created by name, always ended FINISHED or FAILED.

Every call mlpipe makes to the tracking store goes through :func:`client`, which
retries the store's transient errors with backoff.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import getpass
import logging
import math
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import filelock
import mlflow
import requests
import sqlalchemy as sa
from mlflow.entities import Metric, Param, Run, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException

from mlpipe import schema
from mlpipe.exceptions import StageError, TrackingError
from mlpipe.tracking._notes import Linked, stage_note

logger = logging.getLogger("mlpipe")

# Errors a store raises when another writer holds it for a moment: worth retrying.
# (MLflow's HTTP client already retries 429 and 5xx answers and refused connections
# itself, with backoff, MLFLOW_HTTP_REQUEST_MAX_RETRIES times.)
_TRANSIENT = (
    "database is locked",
    "database table is locked",
    "deadlock detected",
    "could not serialize access",
)
# Seconds between attempts (each with ±50% jitter): about 16 s in all.
RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.5, 3.0, 5.0, 5.0)
_retrying = threading.local()


# Query parameters that hold a password (any case): psycopg, pyodbc and MySQL
# drivers take the password from the URL's query string as well as its user info.
PASSWORD_PARAMETERS = ("password", "pwd", "passwd")


def redact(url: str) -> str:
    """``url`` with its passwords, if any, replaced by ``***``.

    A password is the one in the user info (``user:password@``) and the value of
    any ``password``, ``pwd`` or ``passwd`` query parameter, in any case and also
    when the name is ``%``-encoded: drivers such as psycopg take the password
    from the query string too.

    Examples
    --------
    >>> redact("postgresql://ana:s3cret@db.example/shop")
    'postgresql://ana:***@db.example/shop'
    >>> redact("postgresql://ana@db.example/shop?sslmode=require&Password=s3cret")
    'postgresql://ana@db.example/shop?Password=***&sslmode=require'
    >>> redact("https://ana:s3cret@mlflow.example")
    'https://ana:***@mlflow.example'
    >>> redact("sqlite:///shop.db")
    'sqlite:///shop.db'
    """
    try:
        parts = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        # Not a URL: a path, which holds no password, or text that may still
        # carry a query string.
        names = "|".join(PASSWORD_PARAMETERS)
        return re.sub(rf"(?i)((?:^|[?&;])(?:{names})=)[^&#;\s]*", r"\1***", url)
    # make_url has already decoded the parameter names (pass%77ord -> password).
    query = {
        key: (("***",) * len(value) if isinstance(value, tuple) else "***")
        if key.lower() in PASSWORD_PARAMETERS
        else value
        for key, value in parts.query.items()
    }
    rendered = parts.set(query=query).render_as_string(hide_password=True)
    # SQLAlchemy quotes the stand-in of a query parameter; show it as written.
    return rendered.replace("=%2A%2A%2A", "=***")


def scrub(error: BaseException | str, url: str) -> str:
    """The text of ``error`` with every password of ``url`` replaced by ``***``.

    Drivers and HTTP clients sometimes echo the URL they were given, or their own
    form of it (``password=...`` in a libpq connection string). Each password of
    ``url`` (see :func:`redact`) is replaced as written in ``url``, ``%``-decoded
    and ``%``-encoded, and so is the value of any ``password=``, ``pwd=`` or
    ``passwd=`` in the text.

    Examples
    --------
    >>> scrub("no route to db?password=s%40cret (s@cret)", "postgresql://db/x?password=s%40cret")
    'no route to db?password=*** (***)'
    """
    text = str(error)
    secrets: set[str] = set()
    try:
        parts = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        parts = None
    if parts is not None:
        secrets.add(parts.password or "")
        for key, value in parts.query.items():
            if key.lower() in PASSWORD_PARAMETERS:
                secrets.update(value if isinstance(value, tuple) else (value,))
    for secret in list(secrets):  # as another client might render them
        secrets.update({urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)})
    # As written in url, still %-encoded.
    userinfo = re.match(r"[^:/?#]+://([^/?#]*)@", url)
    if userinfo and ":" in userinfo.group(1):
        secrets.add(userinfo.group(1).partition(":")[2])
    for pair in re.split(r"[&;]", url.partition("?")[2].partition("#")[0]):
        name, _, written = pair.partition("=")
        if urllib.parse.unquote_plus(name).lower() in PASSWORD_PARAMETERS:
            secrets.add(written)
    for secret in sorted(secrets - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    # A driver's own connection string (libpq: password='...') holds it as well.
    names = "|".join(PASSWORD_PARAMETERS)
    given = r"""'[^']*'|"[^"]*"|[^\s&;#,'"()]+"""
    return re.sub(rf"(?i)(?<![\w%])((?:{names})\s*=\s*)(?:{given})", r"\1***", text)


def scrub_chain(error: BaseException, url: str) -> None:
    """Remove the passwords of ``url`` from ``error`` and every exception it chains.

    In place: a traceback printed later (``__cause__``, ``__context__``) shows
    each exception's text as :func:`scrub` leaves it.
    """
    pending, seen = [error], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        text = str(current)
        clean = scrub(text, url)
        if clean != text:
            current.args = (clean,)
            if isinstance(getattr(current, "message", None), str):
                current.message = clean  # type: ignore[attr-defined]  # MlflowException
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is a store being busy for a moment rather than a real failure."""
    text = str(error).lower()
    return any(marker in text for marker in _TRANSIENT)


def _retry(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    for delay in (*RETRY_DELAYS, None):
        _retrying.active = True
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if delay is None or not is_transient(error):
                raise
            logger.info("Tracking store busy (%s); retrying in %.1f s", error, delay)
        finally:
            _retrying.active = False
        time.sleep(delay * random.uniform(0.5, 1.5))


class _RetryingClient(mlflow.MlflowClient):
    # Every public method retries transient errors; a call made while another is
    # being retried (MLflow calling itself) is not retried a second time.
    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name.startswith("_") or not callable(attribute) or getattr(_retrying, "active", False):
            return attribute
        return functools.partial(_retry, attribute)


# SQLite database files whose tables this process has created or found complete:
# MLflow keeps one store object per URI and process, and only the first one built
# creates or migrates the tables.
_created_stores: set[str] = set()
_creating = threading.Lock()


def sqlite_file(uri: str) -> str | None:
    """The absolute path of the database file of a ``sqlite:`` URI, else None.

    None for any other store, and for an in-memory or ``file:`` URI database.
    """
    if not uri.startswith("sqlite"):
        return None
    try:
        url = sa.engine.make_url(uri)
    except sa.exc.ArgumentError:
        return None
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None
    return os.path.abspath(database)


def client() -> mlflow.MlflowClient:
    """An ``MlflowClient`` on the current tracking URI that retries transient store errors.

    SQLite answers "database is locked" when several processes write at once, and
    PostgreSQL may end a transaction to break a deadlock: such calls are retried
    with growing pauses (about 16 s in all). Any other error is raised at once.

    The first client of a SQLite store in a process is built holding a file lock
    beside the database (``mlflow.db.lock``): building it creates or migrates
    the store's tables, and several processes doing so at once on a new file
    fail inside the migration. Later clients of the same file take no lock.
    """
    path = sqlite_file(mlflow.get_tracking_uri())
    if path is None or path in _created_stores:
        return _RetryingClient()
    with _creating:
        if path in _created_stores:
            return _RetryingClient()
        # Beside the database: MLflow creates a missing folder, and so does the lock.
        lock = filelock.FileLock(path + ".lock")
        try:
            lock.acquire()  # waits for another process creating it; freed if that one dies
        except OSError as error:
            # A folder where no lock file can be written (read-only): the database
            # cannot be created there either, so there is no creation to serialize.
            logger.debug("No lock beside %s (%s); building its store without one", path, error)
            built = _RetryingClient()
        else:
            try:
                built = _RetryingClient()  # creates or migrates the tables, once
            finally:
                lock.release()
        _created_stores.add(path)
        return built


def search_runs_sql(
    client: mlflow.MlflowClient,
    query: Any,
    *,
    tags: tuple[str, ...] | None = None,
    metrics: bool = False,
) -> list[Any] | None:
    """:func:`mlpipe._compat.search_runs_sql`, with transient store errors retried.

    None when the client's store is not MLflow's SQL store: search with
    ``client.search_runs`` then.
    """
    from mlpipe._compat import search_runs_sql

    return _retry(search_runs_sql, client, query, tags=tags, metrics=metrics)


class Where:
    """The stage being logged, for :func:`reporting` to name.

    ``fitting`` is true while the stage's own code runs: an error it raises is the
    step's, not the store's, and goes through unchanged.
    """

    stage = "load"
    fitting = False


@contextlib.contextmanager
def reporting() -> Iterator[Where]:
    """Turn a failure of the tracking store into a TrackingError naming the stage.

    The caller keeps ``where.stage`` up to date. The error names the stage and the
    store (its password redacted) and keeps the original as its cause.
    """
    where = Where()
    try:
        yield where
    except (MlflowException, requests.RequestException, sa.exc.SQLAlchemyError) as error:
        uri = mlflow.get_tracking_uri()
        scrub_chain(error, uri)  # the cause is shown with the TrackingError
        detail = scrub(getattr(error, "message", None) or error, uri).strip().splitlines()
        raise TrackingError(
            f"Stage {where.stage!r} failed while logging to the tracking store {redact(uri)}: "
            f"{detail[0] if detail else type(error).__name__}. Runs that finished before "
            f"it are kept, and fitting again reuses them."
        ) from error
    except OSError as error:
        if where.fitting:
            raise  # the step's own error
        raise TrackingError(
            f"Stage {where.stage!r} failed while writing its files: {error}. Check that the "
            "disk is not full and that the artifact location is writable. Runs that "
            "finished before it are kept, and fitting again reuses them."
        ) from error


# MLflow's own limits on one log_batch call and on a parameter value.
_MAX_PARAMS_PER_BATCH = 100
_MAX_TAGS_PER_BATCH = 100
_MAX_PARAM_VALUE = 6000
_KEY_TIME_FORMAT = "%Y%m%d%H%M%S"
_TYPE_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]+")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


# A stage (step) name or a project segment becomes an experiment name and a folder.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAX_NAME_LENGTH = 100
NAME_RULE = (
    "a letter or digit, then letters, digits, '_', '.' or '-', at most "
    f"{MAX_NAME_LENGTH} characters"
)


def check_name(name: Any, what: str) -> None:
    """Raise StageError unless ``name`` can name an experiment and a folder safely.

    ``what`` says which name it is (``"step name"``, ``"project"``). A project may
    be several such names joined by ``/`` (``"team/credit"``).
    """
    parts = name.split("/") if isinstance(name, str) and what == "project" else [name]
    for part in parts:
        if not isinstance(part, str) or not _NAME.match(part) or len(part) > MAX_NAME_LENGTH:
            shown = name if not isinstance(name, str) or len(name) <= 60 else name[:57] + "..."
            raise StageError(
                f"Invalid {what} {shown!r}: it names an experiment and a folder of the "
                f"store, so each part must be {NAME_RULE}"
                + (", parts joined by '/'" if what == "project" else "")
                + "."
            )


def current_user() -> str:
    """The user MLflow's own runs record in ``mlflow.user``: ``MLFLOW_TRACKING_USERNAME``,
    else the login name. Nothing checks it: any client can claim any name."""
    name = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):  # no login name: MLflow says "unknown" too
        return "unknown"


def experiment_name(stage: str, project: str | None = None) -> str:
    """Name of the experiment that holds the runs of ``stage``.

    Raises
    ------
    StageError
        If ``stage`` or ``project`` is not a safe name (see :func:`check_name`).
    """
    check_name(stage, "step name")
    if project is not None:
        check_name(project, "project")
    return f"{project}/{stage}" if project else stage


def _artifact_location(name: str) -> str | None:
    # Two SQLite stores used from one working directory would otherwise share
    # ./mlruns/<experiment id>: keep each store's artifacts beside its database file.
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?")[0]
    if not path or path == ":memory:":
        return None
    root = Path(path).resolve().parent / "mlruns"
    location = (root / name).resolve()
    if not location.is_relative_to(root):  # names are checked; this is the last guard
        raise StageError(f"Experiment {name!r} would keep its artifacts outside {root}.")
    return location.as_uri()


def get_or_create_experiment(client: mlflow.MlflowClient, name: str) -> str:
    """Return the id of the experiment called ``name``, creating it on first use.

    Two processes creating the same experiment at once both get its id.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(name))
        except MlflowException:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise StageError(
            f"Experiment {name!r} exists but is deleted, so mlpipe cannot log to it. "
            f"Restore it (`mlflow experiments restore --experiment-id "
            f"{experiment.experiment_id}`) or remove it for good (`mlflow gc`)."
        )
    return experiment.experiment_id


def safe_type(name: str) -> str:
    """``name`` reduced to characters that keep a stage key readable and quotable."""
    cleaned = _TYPE_UNSAFE.sub("_", name).strip("_")
    return cleaned or "unnamed"


def format_key(type_: str, when: dt.datetime) -> str:
    """The stage key ``type@yyyymmddHHMMSS`` of a run of ``type_`` started at ``when`` (UTC)."""
    return f"{type_}@{when.astimezone(dt.UTC):{_KEY_TIME_FORMAT}}"


def key_time(key: str) -> int:
    """The ``yyyymmddHHMMSS`` part of a stage key as an integer (usable as a metric)."""
    return int(key.rsplit("@", 1)[1])


# The time of the stage key this process kept last, per tracking URI, experiment and type.
_last_kept: dict[tuple[str, str, str], dt.datetime] = {}


def _claim_key(client: mlflow.MlflowClient, run: Any, type_: str) -> str:
    # Unique within the stage even under rapid or concurrent fits: set the key, then
    # look for other runs holding it. A run keeps the key only if it holds it alone;
    # on any collision it moves on to the next second. Two runs can never both keep
    # one key: the later of the two to set it sees the other when it looks. When the
    # other holder may still be claiming too (it is not named after the key yet), the
    # run pauses a random moment first, so the two do not collide again in step; a
    # key kept by an earlier run is passed over at once.
    experiment_id = run.info.experiment_id
    when = dt.datetime.fromtimestamp(run.info.start_time / 1000, tz=dt.UTC)
    # Fits in a loop start several a second: begin past the key this process kept last
    # for the type, instead of colliding with each of its own earlier keys in turn.
    last = (mlflow.get_tracking_uri(), experiment_id, type_)
    if last in _last_kept:
        when = max(when, _last_kept[last] + dt.timedelta(seconds=1))
    while True:
        key = format_key(type_, when)
        client.set_tag(run.info.run_id, schema.KEY, key)
        holders = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{schema.KEY}` = '{key}'",
            run_view_type=ViewType.ALL,
            max_results=50,
        )
        if all(r.info.run_id == run.info.run_id for r in holders):
            now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
            client.log_batch(
                run.info.run_id,
                metrics=[Metric(schema.KEY_TIME, float(key_time(key)), now, 0)],
                tags=[RunTag("mlflow.runName", key)],
            )
            _last_kept[last] = when
            return key
        when += dt.timedelta(seconds=1)
        if any(
            r.info.run_id != run.info.run_id and r.data.tags.get("mlflow.runName") != key
            for r in holders
        ):
            time.sleep(random.uniform(0, 0.05))


def key_datetime(key: str) -> dt.datetime:
    """The UTC time in a stage key."""
    stamp = dt.datetime.strptime(key.rsplit("@", 1)[1], _KEY_TIME_FORMAT)
    return stamp.replace(tzinfo=dt.UTC)


def day(date: str | dt.date) -> str:
    """``yyyymmdd`` of a date given as ``"2019-02-09"`` or a ``datetime.date``."""
    if isinstance(date, dt.datetime):
        date = date.date()
    if isinstance(date, dt.date):
        return date.strftime("%Y%m%d")
    try:
        return dt.date.fromisoformat(date).strftime("%Y%m%d")
    except ValueError:
        raise ValueError(f"Expected a date such as '2019-02-09', got {date!r}.") from None


def format_param(value: Any) -> str:
    """A parameter value as a stable, readable string (no memory addresses)."""
    if callable(value) and hasattr(value, "__qualname__"):
        text = f"{getattr(value, '__module__', '')}.{value.__qualname__}".lstrip(".")
    elif hasattr(value, "get_params") and not isinstance(value, type):
        text = type(value).__qualname__
    elif isinstance(value, list | tuple):
        inner = ", ".join(format_param(v) for v in value)
        text = f"[{inner}]" if isinstance(value, list) else f"({inner})"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k!r}: {format_param(v)}" for k, v in value.items()) + "}"
    else:
        text = _ADDRESS.sub("", repr(value) if not isinstance(value, str) else value)
    return text if len(text) <= _MAX_PARAM_VALUE else text[: _MAX_PARAM_VALUE - 1] + "…"


# Where the fits of this context come from, as (name, MLflow source type): the mlpipe
# command sets it to its own command ("mlpipe train"); otherwise fit_source() finds it.
FIT_SOURCE: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "mlpipe_fit_source", default=None
)


def fit_source() -> dict[str, str]:
    """MLflow's ``mlflow.source.name`` and ``mlflow.source.type`` for a stage run now.

    What :data:`FIT_SOURCE` holds (the ``mlpipe`` command sets it); else a notebook
    (type ``NOTEBOOK``, named by the kernel's session when Jupyter says it); else the
    running script's absolute path (type ``LOCAL``), ``python -c`` or ``<console>``.
    """
    given = FIT_SOURCE.get()
    if given is not None:
        name, type_ = given
    elif "ipykernel" in sys.modules:
        name, type_ = os.environ.get("JPY_SESSION_NAME") or "notebook", "NOTEBOOK"
    else:
        main = sys.argv[0] if sys.argv else ""
        if main == "-c":
            name = "python -c"
        elif main and Path(main).is_file():
            name = str(Path(main).resolve())
        else:
            name = main or "<console>"
        type_ = "LOCAL"
    return {schema.SOURCE_NAME: name, schema.SOURCE_TYPE: type_}


def git_commit() -> str | None:
    """The commit checked out in the working directory, or None outside a git repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class StageRun:
    """One stage run being logged; returned by :func:`stage_run`."""

    def __init__(self, client: mlflow.MlflowClient, run: Any, key: str):
        self.client = client
        self.run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        self.key = key

    def log(
        self,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        model_id: str | None = None,
        dataset: Any = None,
    ) -> None:
        """Log parameters, metrics and tags in as few store calls as MLflow allows.

        Metrics logged with ``model_id`` are also the logged model's, and with
        ``dataset`` (an MLflow dataset entity) they say what data they were measured
        on, as ``mlflow.log_metrics(..., model_id=, dataset=)`` records them.
        """
        plist = [Param(k, format_param(v)) for k, v in (params or {}).items()]
        tlist = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        on = {
            "model_id": model_id,
            "dataset_name": dataset.name if dataset is not None else None,
            "dataset_digest": dataset.digest if dataset is not None else None,
        }
        mlist = [Metric(k, float(v), now, 0, **on) for k, v in (metrics or {}).items()]
        first = True
        while plist or tlist or first:
            self.client.log_batch(
                self.run_id,
                metrics=mlist if first else [],
                params=plist[:_MAX_PARAMS_PER_BATCH],
                tags=tlist[:_MAX_TAGS_PER_BATCH],
            )
            plist, tlist = plist[_MAX_PARAMS_PER_BATCH:], tlist[_MAX_TAGS_PER_BATCH:]
            first = False


# Runs this process could not end (the store was unreachable): ended FAILED as soon
# as the store answers again, at the start of the next fit.
# Keyed by tracking URI: a fit against another store must not forget them.
_unended: dict[str, set[str]] = {}


def _remember_unended(run_id: str) -> None:
    _unended.setdefault(mlflow.get_tracking_uri(), set()).add(run_id)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now_ms() -> int:
    return int(time.time() * 1000)


# Seconds between two beats of a stage run, and the lease: how long a RUNNING run may
# go without a beat before any fit, on any host, ends it FAILED. Defaults for
# MLPIPE_HEARTBEAT_SECONDS and MLPIPE_LEASE_SECONDS. The lease is many beats long so
# that beats missed while the store is busy or restarting (MLflow's HTTP client
# gives up after about four minutes) do not end a live run.
HEARTBEAT_SECONDS = 30.0
LEASE_SECONDS = 600.0


def lease_settings() -> tuple[float, float]:
    """The heartbeat interval and the lease of a stage run starting now, in seconds.

    ``MLPIPE_HEARTBEAT_SECONDS`` and ``MLPIPE_LEASE_SECONDS`` when set, else
    :data:`HEARTBEAT_SECONDS` and :data:`LEASE_SECONDS`.

    Raises
    ------
    ValueError
        If a value is not a positive number, or the lease is not longer than the beat.
    """
    values = []
    for name, default in (
        ("MLPIPE_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS),
        ("MLPIPE_LEASE_SECONDS", LEASE_SECONDS),
    ):
        text = os.environ.get(name)
        if text is None:
            values.append(default)
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"{name} must be a positive number of seconds, got {text!r}. Set it to "
                f"a number such as {default:g}, or unset it for that default."
            )
        values.append(value)
    beat, lease = values
    if lease <= beat:
        raise ValueError(
            f"MLPIPE_LEASE_SECONDS must be longer than MLPIPE_HEARTBEAT_SECONDS (several "
            f"beats, so that a missed beat does not end a live run), got a lease of {lease:g} s "
            f"and a beat every {beat:g} s. Lengthen the lease or beat more often."
        )
    return beat, lease


# Runs whose heartbeat runs in this process: alive, whatever their last beat says.
_beating: set[str] = set()


class _Heartbeat:
    """Sets the HEARTBEAT tag of a run every ``interval`` seconds until :meth:`stop`.

    A daemon thread, so it never keeps the process alive. A beat that fails (the
    store down for a moment) is logged and skipped: the lease is many beats long.
    """

    def __init__(self, client: mlflow.MlflowClient, run_id: str, interval: float):
        self.client = client
        self.run_id = run_id
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(
            target=self._beat, name=f"mlpipe-heartbeat-{run_id}", daemon=True
        )

    def start(self) -> None:
        _beating.add(self.run_id)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                # MlflowClient's own method, so one attempt, not retried: a missed beat is
                # only a late one, and retrying would hold up the end of the run.
                mlflow.MlflowClient.set_tag(
                    self.client, self.run_id, schema.HEARTBEAT, str(_now_ms()), synchronous=True
                )
            except Exception as error:
                lines = scrub(error, mlflow.get_tracking_uri()).strip().splitlines()
                logger.info(
                    "Heartbeat of run %s failed (%s); the next one is due in %g s",
                    self.run_id,
                    lines[0] if lines else type(error).__name__,
                    self.interval,
                )

    def stop(self) -> None:
        """Stop beating; returns once no beat is being written, so none follows the end."""
        self.stopped.set()
        self.thread.join()
        _beating.discard(self.run_id)


def abandoned_because(run: Any, now_ms: int | None = None) -> str | None:
    """Why a RUNNING stage run can no longer be ended by its own fit, or None.

    Its lease expired (no heartbeat for longer than ``mlpipe.lease_seconds``, on any
    host), or it was started on this host by a process that has died. None for a
    run that is not RUNNING, that may still be fitting, or that this process is
    fitting. ``now_ms`` is the time to judge the lease at (default: now).
    """
    if run.info.status != "RUNNING" or run.info.run_id in _beating:
        return None
    tags = run.data.tags
    owner = tags.get(schema.OWNER, "")
    try:
        last, lease = int(tags[schema.HEARTBEAT]), float(tags[schema.LEASE_SECONDS])
    except (KeyError, ValueError):
        pass  # logged before leases existed: only the same-host rule applies
    else:
        now_ms = _now_ms() if now_ms is None else now_ms
        if now_ms - last > lease * 1000:
            when = dt.datetime.fromtimestamp(last / 1000, tz=dt.UTC)
            return (
                f"no heartbeat from {owner or 'its process'} since "
                f"{when:%Y-%m-%d %H:%M:%S} UTC, longer than its lease of {lease:g} s: "
                "its process or machine stopped"
            )
    owner_host, _, pid = owner.rpartition(":")
    if owner_host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
        return f"its process {owner} is no longer running"
    return None


def _end_abandoned(client: mlflow.MlflowClient, run_id: str, reason: str) -> None:
    client.set_tag(run_id, schema.ENDED_BECAUSE, reason)
    end_run(client, run_id, "FAILED")
    logger.warning("Ended FAILED run %s, left RUNNING: %s", run_id, reason)


def end_abandoned_runs(client: mlflow.MlflowClient, experiment_ids: list[str]) -> list[str]:
    """End FAILED the stage runs left RUNNING by a fit that can no longer end them.

    Those are the runs this process could not end because the store was
    unreachable; the runs of ``experiment_ids`` whose lease expired, whatever host
    started them (see :func:`abandoned_because`); and the runs started on this host
    by a process that has since died. Each gets the tag ``mlpipe.ended_because``
    saying why. Runs that still beat are left alone. Returns the ids of the runs
    ended.
    """
    ended = []
    mine = _unended.get(mlflow.get_tracking_uri(), set())
    for run_id in list(mine):
        try:
            _end_abandoned(
                client, run_id, "its fit failed while the tracking store could not be reached"
            )
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
        mine.discard(run_id)
        ended.append(run_id)
    if not experiment_ids:
        return ended
    running = client.search_runs(
        experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000
    )
    now = _now_ms()
    for run in running:
        if abandoned_because(run, now) is None:
            continue
        # The search saw the run RUNNING, but its fit may have ended it since (and its
        # process exited): judged again on the run as it is now, after the first
        # judgement found its process dead or its lease expired, a run still RUNNING
        # has no fit left to end it.
        now_run = get_run_if_there(client, run.info.run_id)
        if now_run is None:
            continue  # removed for good since the search
        reason = abandoned_because(now_run)
        if reason is not None:
            _end_abandoned(client, run.info.run_id, reason)
            ended.append(run.info.run_id)
    return ended


def get_run_if_there(client: mlflow.MlflowClient, run_id: str) -> Run | None:
    """The run as it is now; None if it no longer exists (deleted and then removed
    for good, as ``mlflow gc`` does). Other errors of the store are raised."""
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        return None


def end_run(client: mlflow.MlflowClient, run_id: str, status: str) -> None:
    """End a run with ``status``, as ``set_terminated`` does.

    Against a tracking server, MLflow then prints a link to the run built from the
    tracking URI. A URI with a password in it (``https://user:pw@host``) would
    print the password, so the link is left out for such a URI.
    """
    from mlpipe._compat import suppressed_run_url

    uri = mlflow.get_tracking_uri()
    if redact(uri) == uri:
        client.set_terminated(run_id, status=status)
        return
    with suppressed_run_url():
        client.set_terminated(run_id, status=status)


def _end(client: mlflow.MlflowClient, run_id: str, status: int) -> None:
    # Called while an error is propagating: never mask it, remember the run instead.
    try:
        end_run(client, run_id, RunStatus.to_string(status))
    except Exception:
        _remember_unended(run_id)
        logger.exception("Could not end run %s; it will be ended FAILED on the next fit", run_id)


def _first_note(stage: str, type_: str, upstream: list[tuple[str, str, str]]) -> str:
    """The description a stage run starts with (a load run keeps it)."""
    note = stage_note(
        stage=stage,
        type_=type_,
        cls=None,
        run_id="",
        upstream=[Linked(s, k, r, None) for s, k, r in upstream],
    )
    if stage == schema.LOAD_STAGE:
        note += (
            "\n\nA data version: its dataset is under Datasets, its fingerprint in the tag "
            f"`{schema.FINGERPRINT}`."
        )
    return note


@contextlib.contextmanager
def stage_run(
    client: mlflow.MlflowClient,
    *,
    stage: str,
    type_: str,
    project: str | None,
    upstream: list[tuple[str, str, str]],
    tags: Mapping[str, str] | None = None,
    experiment_id: str | None = None,
) -> Iterator[StageRun]:
    """Start a run of ``stage`` in its own experiment and end it FINISHED, or FAILED on error.

    ``upstream`` lists ``(stage, key, run_id)`` of the runs this one was fitted on.
    The run never stays RUNNING: any exception, including KeyboardInterrupt, ends it
    (FAILED, or KILLED for an interrupt) and is re-raised unchanged. If the store
    cannot be reached to end it, the next fit ends it (see :func:`end_abandoned_runs`);
    meanwhile a RUNNING run is never reused by the cache. ``experiment_id`` saves a
    lookup when the caller already has the stage's experiment.

    While the run is open, a daemon thread beats (tag ``mlpipe.heartbeat``) every
    ``MLPIPE_HEARTBEAT_SECONDS``; the run records its lease
    (``mlpipe.lease_seconds``), after which a run that stopped beating is ended by
    any fit (see :func:`end_abandoned_runs`). The beats stop before the run ends.
    """
    beat, lease = lease_settings()
    if experiment_id is None:
        experiment_id = get_or_create_experiment(client, experiment_name(stage, project))
    type_ = safe_type(type_)
    all_tags = {
        schema.STAGE: stage,
        schema.TYPE: type_,
        schema.UPSTREAM: ",".join(run_id for _, _, run_id in upstream),
        schema.UPSTREAM_KEYS: ",".join(f"{s}:{k}" for s, k, _ in upstream),
        **{schema.upstream_tag(run_id): f"{s}:{k}" for s, k, run_id in upstream},
        schema.SCHEMA_VERSION_TAG: schema.SCHEMA_VERSION,
        # As MLflow's own runs have it; create_run takes the run's user_id from it.
        schema.MLFLOW_USER: current_user(),
        schema.OWNER: _owner(),
        schema.HEARTBEAT: str(_now_ms()),
        schema.LEASE_SECONDS: f"{lease:g}",
        **fit_source(),
        **(tags or {}),
    }
    if schema.NOTE not in all_tags:
        all_tags[schema.NOTE] = _first_note(stage, type_, upstream)
    run = client.create_run(experiment_id, tags=all_tags, run_name=type_)
    heartbeat = _Heartbeat(client, run.info.run_id, beat)
    heartbeat.start()
    try:
        try:
            key = _claim_key(client, run, type_)
            yield StageRun(client, run, key)
        finally:
            heartbeat.stop()  # no beat after the end
    except BaseException as error:
        status = RunStatus.KILLED if isinstance(error, KeyboardInterrupt) else RunStatus.FAILED
        _end(client, run.info.run_id, status)
        raise
    try:
        end_run(client, run.info.run_id, "FINISHED")
    except BaseException:
        _remember_unended(run.info.run_id)
        raise
