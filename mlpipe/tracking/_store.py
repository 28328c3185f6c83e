"""Stage experiments and stage runs: created by name, always ended FINISHED or FAILED."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType
from mlflow.exceptions import MlflowException

from mlpipe.exceptions import StageError
from mlpipe.tracking import _schema as schema

logger = logging.getLogger("mlpipe")

# MLflow's own limits on one log_batch call and on a parameter value.
_MAX_PARAMS_PER_BATCH = 100
_MAX_TAGS_PER_BATCH = 100
_MAX_PARAM_VALUE = 6000
_KEY_TIME_FORMAT = "%Y%m%d%H%M%S"
_TYPE_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]+")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def experiment_name(stage: str, project: str | None = None) -> str:
    """Name of the experiment that holds the runs of ``stage``."""
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
    return (Path(path).resolve().parent / "mlruns" / name).as_uri()


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


def _claim_key(client: mlflow.MlflowClient, run: Any, type_: str) -> str:
    # Unique within the stage even under rapid or concurrent fits: set the key,
    # then look for other runs holding it; the oldest holder keeps it and every
    # other run moves on to the next free second.
    experiment_id = run.info.experiment_id
    mine = (run.info.start_time, run.info.run_id)
    when = dt.datetime.fromtimestamp(run.info.start_time / 1000, tz=dt.UTC)
    while True:
        key = format_key(type_, when)
        client.set_tag(run.info.run_id, schema.KEY, key)
        holders = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{schema.KEY}` = '{key}'",
            run_view_type=ViewType.ALL,
            max_results=50,
        )
        if all((r.info.start_time, r.info.run_id) >= mine for r in holders):
            now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
            client.log_batch(
                run.info.run_id,
                metrics=[Metric(schema.KEY_TIME, float(key_time(key)), now, 0)],
                tags=[RunTag("mlflow.runName", key)],
            )
            return key
        when += dt.timedelta(seconds=1)


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
    ) -> None:
        """Log parameters, metrics and tags in as few store calls as MLflow allows."""
        plist = [Param(k, format_param(v)) for k, v in (params or {}).items()]
        tlist = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        mlist = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
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


@contextlib.contextmanager
def stage_run(
    client: mlflow.MlflowClient,
    *,
    stage: str,
    type_: str,
    project: str | None,
    upstream: list[tuple[str, str, str]],
    tags: Mapping[str, str] | None = None,
) -> Iterator[StageRun]:
    """Start a run of ``stage`` in its own experiment and end it FINISHED, or FAILED on error.

    ``upstream`` lists ``(stage, key, run_id)`` of the runs this one was fitted on.
    The run never stays RUNNING: any exception, including KeyboardInterrupt, ends it
    (FAILED, or KILLED for an interrupt) and is re-raised unchanged.
    """
    experiment_id = get_or_create_experiment(client, experiment_name(stage, project))
    type_ = safe_type(type_)
    all_tags = {
        schema.STAGE: stage,
        schema.TYPE: type_,
        schema.UPSTREAM: ",".join(run_id for _, _, run_id in upstream),
        schema.UPSTREAM_KEYS: ",".join(f"{s}:{k}" for s, k, _ in upstream),
        **(tags or {}),
    }
    run = client.create_run(experiment_id, tags=all_tags, run_name=type_)
    try:
        key = _claim_key(client, run, type_)
        yield StageRun(client, run, key)
    except BaseException as error:
        status = RunStatus.KILLED if isinstance(error, KeyboardInterrupt) else RunStatus.FAILED
        try:
            client.set_terminated(run.info.run_id, status=RunStatus.to_string(status))
        except Exception:
            # The stage's own error is what the caller needs; this one is only logged.
            logger.exception("Could not mark run %s as failed", run.info.run_id)
        raise
    client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.FINISHED))
