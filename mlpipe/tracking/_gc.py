"""Garbage collection: deleted runs, the logged models they produced, and their files.

MLflow 3.17's ``mlflow gc`` permanently removes deleted runs, but a run's logged
models are separate entities that stay active when the run is deleted, so their
rows and files stay behind for good. :func:`collect_garbage` removes both.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import LifecycleStage, ViewType

from mlpipe import _compat, schema
from mlpipe.exceptions import StageError
from mlpipe.tracking._store import client as store_client
from mlpipe.tracking._store import redact

logger = logging.getLogger("mlpipe")

# Ids per `IN (...)` filter: far below SQLite's limit on bound variables.
_BATCH = 100
_PAGE = 1000


@dataclasses.dataclass(frozen=True)
class GcReport:
    """What :func:`collect_garbage` removed, or would remove when ``dry_run`` is true.

    Attributes
    ----------
    dry_run : bool
        True when nothing was removed and the report lists what would go.
    run_ids : tuple of str
        Deleted runs removed for good.
    logged_model_ids : tuple of str
        Logged models (``models:/<id>``) whose source run is one of ``run_ids``.
    artifact_locations : tuple of str
        Artifact URIs of those runs and models, whose files are removed.
    bytes_freed : int or None
        Size of the files under those locations, or None when some location is
        not on the local file system (its size is not measured).
    kept : dict of str to str
        Deleted runs, and logged models of deleted runs, that stay because something
        not deleted still needs them; each id maps to the reason.
    """

    dry_run: bool
    run_ids: tuple[str, ...] = ()
    logged_model_ids: tuple[str, ...] = ()
    artifact_locations: tuple[str, ...] = ()
    bytes_freed: int | None = 0
    kept: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        verb = "Would remove" if self.dry_run else "Removed"
        size = "size unknown" if self.bytes_freed is None else f"{self.bytes_freed} bytes"
        lines = [
            f"{verb} {len(self.run_ids)} deleted run(s) and "
            f"{len(self.logged_model_ids)} logged model(s) ({size})."
        ]
        lines += [f"  run {run_id}" for run_id in self.run_ids]
        lines += [f"  model {model_id}" for model_id in self.logged_model_ids]
        if self.kept:
            lines.append(f"Kept {len(self.kept)}:")
            lines += [f"  {key}: {reason}" for key, reason in self.kept.items()]
        return "\n".join(lines)


def collect_garbage(
    *,
    dry_run: bool = False,
    older_than: dt.timedelta | None = None,
    backend_store_uri: str | None = None,
) -> GcReport:
    """Remove deleted runs for good, with the logged models they produced and all their files.

    Looks at every experiment of the tracking store, deleted ones included, for runs in
    the ``deleted`` lifecycle stage and for the logged models whose source run is one of
    them (whether the model itself is marked deleted or not). Each such model is marked
    deleted, its files are removed through MLflow's artifact repository and its row is
    dropped; then each run's files and row go the same way. Runs that are not deleted
    are never touched, nor are their models; experiments are never removed.

    A deleted run stays (and is listed in :attr:`GcReport.kept`) while something that is
    not deleted needs it: a live run names it upstream (``mlpipe.upstream``: its lineage)
    or stands for its fitted stage (``mlpipe.reused_from``: the stage's file is in the
    deleted run), or a registered model version was created from it. A logged model stays
    while its source run stays or a live run serves it (``mlpipe.model_uri``). What a
    kept run needs is kept in turn.

    Parameters
    ----------
    dry_run : bool, default=False
        Only report what would be removed; change nothing.
    older_than : datetime.timedelta, optional
        Only remove runs deleted at least this long ago (``mlflow gc --older-than``).
    backend_store_uri : str, optional
        Database of the tracking store, for removing rows for good. Defaults to the
        tracking URI (``MLFLOW_TRACKING_URI``, else MLflow's default store).

    Returns
    -------
    GcReport
        The runs, logged models and artifact locations removed (or to be removed), the
        bytes freed, and what was kept and why.

    Raises
    ------
    StageError
        If ``older_than`` is negative, or if the database is needed (``dry_run`` false,
        or ``older_than`` given) and the store is not one MLflow can hard-delete from
        (an ``http(s)`` tracking server without ``backend_store_uri``).

    Notes
    -----
    This does what ``mlflow gc --run-ids … --logged-model-ids …`` does for each run and
    model, through the same store (its private hard-delete methods) and artifact
    repositories, but it does not run ``mlflow gc`` itself: in MLflow 3.17 that command,
    whatever ids it is given, also permanently deletes every deleted experiment with
    all its runs (of any age unless ``--older-than`` is passed, which in turn refuses
    logged models marked deleted more recently than that), and without
    ``--logged-model-ids`` every deleted logged model, even one of a run not deleted.
    It never looks for the logged models of the runs it removes: they stay active, with
    their files.

    With a SQLite (or other database) tracking URI everything works as described. With
    an ``http(s)`` tracking server, a dry run works through the server alone (without
    ``older_than``: the deletion time of a run is only stored in the database); to
    remove anything, pass the server's database as ``backend_store_uri`` and run where
    that database and the artifact store are reachable. Artifacts behind the server's
    proxy (``mlflow-artifacts:``) are removed through the server (the empty ``<id>/``
    folders stay there), so it must be running. Logged models already marked deleted
    are only found with the database. Workspaces (``MLFLOW_ENABLE_WORKSPACES``) were
    not tried.

    Examples
    --------
    ::

        report = collect_garbage(dry_run=True, older_than=datetime.timedelta(days=30))
        print(report)
        collect_garbage(older_than=datetime.timedelta(days=30))
    """
    if older_than is not None and older_than < dt.timedelta(0):
        raise StageError(f"older_than must be zero or positive, got {older_than}.")
    client = store_client()
    uri = backend_store_uri or mlflow.get_tracking_uri()
    found = _compat.HardDeleteStore(uri)
    store = found if found.supported else None
    if store is None and (not dry_run or older_than is not None):
        raise StageError(
            f"The tracking store {redact(uri)!r} cannot remove rows for good "
            f"({found.kind}). Pass the tracking server's database as "
            "backend_store_uri (`mlpipe gc --backend-store-uri`), for example "
            "'postgresql://…' or 'sqlite:///…/mlflow.db', or use dry_run=True "
            "without older_than to only list what would go."
        )

    experiment_ids = [e.experiment_id for e in _experiments(client)]
    deleted = {r.info.run_id: r for r in _deleted_runs(client, experiment_ids)}
    if older_than is not None and deleted:
        assert store is not None
        old_enough = set(store.deleted_run_ids(_millis(older_than)))
        deleted = {run_id: r for run_id, r in deleted.items() if run_id in old_enough}
    models = {m.model_id: m for m in _models_of(client, experiment_ids, list(deleted))}
    if store is not None and deleted:
        # Models already marked deleted are invisible to search_logged_models; `mlflow gc`
        # would sweep them, with every other deleted model. Take those of these runs only.
        for model_id in store.deleted_logged_model_ids():
            model = store.logged_model(model_id)
            if model.source_run_id in deleted:
                models[model_id] = model
    kept = _kept(client, experiment_ids, deleted, models)

    run_ids = [run_id for run_id in deleted if run_id not in kept]
    model_ids = [model_id for model_id in models if model_id not in kept]
    # The report lists all of it; its caller shows it (mlpipe gc prints it once).
    for key, reason in kept.items():
        logger.debug("Keeping %s: %s", key, reason)
    if not dry_run:
        run_ids, model_ids = _still_deleted(client, run_ids, model_ids, models)
    targets = [(m, models[m].artifact_location) for m in model_ids]
    targets += [(r, deleted[r].info.artifact_uri) for r in run_ids]
    sizes = [_size(location) for _, location in targets]
    bytes_freed = None if None in sizes else sum(s or 0 for s in sizes)

    if not dry_run:
        assert store is not None
        for model_id in model_ids:
            client.delete_logged_model(model_id)
            _delete_artifacts(models[model_id].artifact_location, model_id)
            store.hard_delete_logged_model(model_id)
            logger.debug("Removed logged model %s", model_id)
        for run_id in run_ids:
            _delete_artifacts(deleted[run_id].info.artifact_uri, run_id)
            store.hard_delete_run(run_id)
            logger.debug("Removed run %s", run_id)

    report = GcReport(
        dry_run=dry_run,
        run_ids=tuple(run_ids),
        logged_model_ids=tuple(model_ids),
        artifact_locations=tuple(location for _, location in targets),
        bytes_freed=bytes_freed,
        kept=kept,
    )
    return report


def _millis(delta: dt.timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def _experiments(client: mlflow.MlflowClient) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_experiments(
            view_type=ViewType.ALL, max_results=_PAGE, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def _runs(
    client: mlflow.MlflowClient,
    experiment_ids: list[str],
    filter_string: str,
    view: int,
    limit: int | None = None,
) -> Iterator[Any]:
    if not experiment_ids:
        return
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            run_view_type=view,
            max_results=limit or _PAGE,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token or limit:
            return


def _deleted_runs(client: mlflow.MlflowClient, experiment_ids: list[str]) -> Iterator[Any]:
    return _runs(client, experiment_ids, "", ViewType.DELETED_ONLY)


def _batches(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), _BATCH):
        yield ids[start : start + _BATCH]


def _quoted(ids: Iterable[str]) -> str:
    return ", ".join(f"'{i}'" for i in ids)


def _models_of(
    client: mlflow.MlflowClient, experiment_ids: list[str], run_ids: list[str]
) -> Iterator[Any]:
    """The logged models (not yet deleted) whose source run is one of ``run_ids``."""
    for batch in _batches(run_ids):
        token = None
        while True:
            page = client.search_logged_models(
                experiment_ids=experiment_ids,
                filter_string=f"source_run_id IN ({_quoted(batch)})",
                max_results=_PAGE,
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                break


def _live(client: mlflow.MlflowClient, experiment_ids: list[str], filter_string: str) -> list[str]:
    found = _runs(client, experiment_ids, filter_string, ViewType.ACTIVE_ONLY, limit=3)
    return [run.info.run_id for run in found]


def _kept(
    client: mlflow.MlflowClient,
    experiment_ids: list[str],
    deleted: dict[str, Any],
    models: dict[str, Any],
) -> dict[str, str]:
    """Deleted runs and their models that something not deleted still needs, with why."""
    kept: dict[str, str] = {}
    for run_id in deleted:
        users = _live(
            client, experiment_ids, f"tags.`{schema.UPSTREAM}` LIKE '%{run_id}%'"
        ) + _live(client, experiment_ids, f"tags.`{schema.REUSED_FROM}` = '{run_id}'")
        if users:
            kept[run_id] = f"run(s) not deleted stand on it: {', '.join(users)}"
    for batch in _batches(list(deleted)):
        for version in client.search_model_versions(f"run_id IN ({_quoted(batch)})"):
            if version.run_id:
                kept.setdefault(
                    version.run_id, f"registered as {version.name!r} version {version.version}"
                )
    for model_id in models:
        users = _live(client, experiment_ids, f"tags.`{schema.MODEL_URI}` = 'models:/{model_id}'")
        if users:
            kept[model_id] = f"run(s) not deleted serve it: {', '.join(users)}"

    by_run: dict[str, list[str]] = {}
    for model_id, model in models.items():
        by_run.setdefault(model.source_run_id, []).append(model_id)
    # What a kept run or model needs is kept too, until nothing changes.
    pending = list(kept)
    while pending:
        key = pending.pop()
        needs: list[str] = []
        if key in models:
            needs.append(models[key].source_run_id)
        if key in deleted:
            tags = deleted[key].data.tags
            needs += [r for r in tags.get(schema.UPSTREAM, "").split(",") if r]
            needs += [tags[schema.REUSED_FROM]] if tags.get(schema.REUSED_FROM) else []
            uri = tags.get(schema.MODEL_URI, "")
            needs += [uri.removeprefix("models:/")] if uri.startswith("models:/") else []
            needs += by_run.get(key, [])
        for need in needs:
            if need not in kept and (need in deleted or need in models):
                kept[need] = f"kept {key} needs it"
                pending.append(need)
    return kept


def _still_deleted(
    client: mlflow.MlflowClient,
    run_ids: list[str],
    model_ids: list[str],
    models: dict[str, Any],
) -> tuple[list[str], list[str]]:
    """Drop runs restored since the search, with their models."""
    restored = set()
    for run_id in run_ids:
        if client.get_run(run_id).info.lifecycle_stage != LifecycleStage.DELETED:
            logger.warning("Run %s was restored while collecting garbage: keeping it", run_id)
            restored.add(run_id)
    return (
        [r for r in run_ids if r not in restored],
        [m for m in model_ids if models[m].source_run_id not in restored],
    )


def _local_path(uri: str) -> Path | None:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(urllib.request.url2pathname(parts.path))
    if parts.scheme == "" or (len(parts.scheme) == 1 and os.name == "nt"):
        return Path(uri)
    return None


def _size(uri: str) -> int | None:
    path = _local_path(uri)
    if path is None:
        return None
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


def _delete_artifacts(uri: str, owner: str) -> None:
    _compat.delete_artifacts(uri)
    path = _local_path(uri)
    if path is None:
        return
    # MLflow removes `<owner id>/artifacts` and leaves `<owner id>/` behind, empty.
    folder = path.parent
    if folder.name == owner and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
