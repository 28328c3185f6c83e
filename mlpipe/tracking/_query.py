"""Finding stage runs and chains: indexed ``search_runs`` filters, never a scan in Python."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Run, ViewType

from mlpipe import schema
from mlpipe._compat import RunQuery
from mlpipe.exceptions import NotFoundError
from mlpipe.tracking import _store as store

__all__ = [
    "Chain",
    "LineageEntry",
    "descendants",
    "find_chain",
    "find_run",
    "lineage",
    "newest_chain",
    "runs",
]

logger = logging.getLogger("mlpipe")

_MAX_RESULTS = 1000
# find_chain asks for a model on each of this many newest processing candidates
# before it falls back to one search over every model of the algorithm.
_DIRECT_CANDIDATES = 4
_STAGE_PREFIX_FILTER = f"tags.`{schema.STAGE}` != ''"
# What a LineageEntry reads of a run, besides its info.
_LINEAGE_TAGS = (
    schema.STAGE,
    schema.TYPE,
    schema.KEY,
    schema.UPSTREAM,
    schema.UPSTREAM_KEYS,
    schema.REUSED_FROM,
)


@dataclasses.dataclass(frozen=True)
class LineageEntry:
    """One stage run in a chain.

    Attributes
    ----------
    stage, type, key, run_id : str
    upstream : tuple of str
        Run ids of the runs it was fitted on.
    status : str
        ``FINISHED``, ``FAILED``, ``RUNNING`` or ``KILLED``.
    reused_from : str or None
        When this run took its fitted stage from an earlier run (same cache key),
        that run's id.
    """

    stage: str
    type: str
    key: str
    run_id: str
    upstream: tuple[str, ...]
    status: str
    reused_from: str | None = None

    @classmethod
    def from_run(cls, run: Run) -> LineageEntry:
        tags = run.data.tags
        return cls(
            stage=tags.get(schema.STAGE, ""),
            type=tags.get(schema.TYPE, ""),
            key=tags.get(schema.KEY, run.info.run_name or ""),
            run_id=run.info.run_id,
            upstream=tuple(u for u in tags.get(schema.UPSTREAM, "").split(",") if u),
            status=run.info.status,
            reused_from=tags.get(schema.REUSED_FROM),
        )


@dataclasses.dataclass(frozen=True)
class Chain:
    """A coherent chain: a load run and the stage runs on top of it, each on the one before.

    Attributes
    ----------
    entries : tuple of LineageEntry
        Oldest (the load run) first.
    """

    entries: tuple[LineageEntry, ...]

    @property
    def run_ids(self) -> dict[str, str]:
        """Stage name to run id."""
        return {e.stage: e.run_id for e in self.entries}

    def __getitem__(self, stage: str) -> LineageEntry:
        for entry in self.entries:
            if entry.stage == stage:
                return entry
        raise KeyError(f"No stage {stage!r} in this chain; it has {list(self.run_ids)}.")


def _experiments(client: mlflow.MlflowClient, stage: str | None, project: str | None) -> list[str]:
    if stage is not None:
        experiment = client.get_experiment_by_name(store.experiment_name(stage, project))
        return [experiment.experiment_id] if experiment is not None else []
    prefix = f"{project}/" if project else ""
    found = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50_000)
    return [
        e.experiment_id
        for e in found
        if e.name.startswith(prefix) and (project or "/" not in e.name) and e.name != "Default"
    ]


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


_RUN_ID = re.compile(r"^[0-9A-Za-z_-]+$")


def _fitted_on_tag(run_id: str) -> str:
    """The tag that every run fitted on ``run_id`` has set (and no other run)."""
    if not _RUN_ID.match(run_id):
        raise ValueError(f"Expected a run id (letters, digits, '_' and '-'), got {run_id!r}.")
    return schema.upstream_tag(run_id)


def _fitted_on(run_id: str) -> str:
    """The exact filter clause for the runs fitted on ``run_id``."""
    return f"tags.`{_fitted_on_tag(run_id)}` != ''"


def _filter(
    *,
    type: str | None = None,
    date: str | dt.date | None = None,
    upstream: str | None = None,
    finished: bool = False,
    any_stage: bool = False,
) -> str:
    # Within a stage's own experiment every run is a stage run; the clause that says
    # so costs a join, so it is only added when several experiments are searched.
    clauses = [_STAGE_PREFIX_FILTER] if any_stage else []
    if type is not None:
        clauses.append(f"tags.`{schema.TYPE}` = '{_quote(store.safe_type(type))}'")
    if date is not None:
        head = f"{store.safe_type(type)}@" if type is not None else "%@"
        clauses.append(f"tags.`{schema.KEY}` LIKE '{head}{store.day(date)}%'")
    if upstream is not None:
        clauses.append(_fitted_on(upstream))
    if finished:
        clauses.append("attributes.status = 'FINISHED'")
    return " and ".join(clauses)


def _search(
    client: mlflow.MlflowClient,
    experiment_ids: list[str],
    filter_string: str,
    max_results: int = _MAX_RESULTS,
) -> list[Run]:
    if not experiment_ids:
        return []
    return list(
        client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            # Newest first. The start time is a column of the runs table; ordering by
            # the key_time metric would make SQL collect that metric for every run.
            order_by=["attributes.start_time DESC"],
            max_results=max_results,
        )
    )


def _query(
    *,
    experiment_names: tuple[str, ...] = (),
    experiment_ids: tuple[str, ...] = (),
    type: str | None = None,
    date: str | dt.date | None = None,
    upstream: str | None = None,
    finished: bool = False,
    any_stage: bool = False,
    max_results: int = _MAX_RESULTS,
) -> RunQuery:
    """The search :func:`_filter` writes as a filter string, as a RunQuery."""
    tags_like = []
    if date is not None:
        head = f"{store.safe_type(type)}@" if type is not None else "%@"
        tags_like.append((schema.KEY, f"{head}{store.day(date)}%"))
    return RunQuery(
        experiment_names=experiment_names,
        experiment_ids=experiment_ids,
        tags_equal=((schema.TYPE, store.safe_type(type)),) if type is not None else (),
        tags_like=tuple(tags_like),
        tags_set=((schema.STAGE,) if any_stage else ())
        + ((_fitted_on_tag(upstream),) if upstream is not None else ()),
        status="FINISHED" if finished else None,
        max_results=max_results,
    )


def _filter_string(query: RunQuery) -> str:
    """``query`` as a ``search_runs`` filter string (``any_tag_set`` has none)."""
    if query.any_tag_set:
        raise ValueError("A search_runs filter cannot say 'any of these tags is set'.")
    clauses = [f"tags.`{key}` = '{_quote(value)}'" for key, value in query.tags_equal]
    clauses += [f"tags.`{key}` LIKE '{_quote(pattern)}'" for key, pattern in query.tags_like]
    clauses += [f"tags.`{key}` != ''" for key in query.tags_set]
    if query.status is not None:
        clauses.append(f"attributes.status = '{query.status}'")
    if query.run_ids:
        ids = ", ".join(f"'{_quote(run_id)}'" for run_id in query.run_ids)
        clauses.append(f"attributes.run_id IN ({ids})")
    return " and ".join(clauses)


def _find(
    client: mlflow.MlflowClient,
    query: RunQuery,
    *,
    tags: tuple[str, ...] | None = None,
    metrics: bool = False,
) -> list[Run]:
    """The runs ``query`` finds, newest first.

    On MLflow's SQL store, one read of exactly what is asked (the runs' info, the
    ``tags`` named, else all, their latest metrics with ``metrics``); elsewhere (a
    tracking server), ``search_runs`` with the same filter, whose runs carry
    everything. The same runs either way (``tests/test_compat.py``).
    """
    found = store.search_runs_sql(client, query, tags=tags, metrics=metrics)
    if found is not None:
        return found
    experiment_ids = list(query.experiment_ids)
    for name in query.experiment_names:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_ids.append(experiment.experiment_id)
    return _search(client, experiment_ids, _filter_string(query), query.max_results)


def runs(
    stage: str | None = None,
    type: str | None = None,
    date: str | dt.date | None = None,
    upstream: str | None = None,
    *,
    project: str | None = None,
    max_results: int = _MAX_RESULTS,
    sort: str | None = None,
) -> pd.DataFrame:
    """Stage runs, newest first, with the data version each was fitted on.

    Parameters
    ----------
    stage : str, optional
        ``"load"``, ``"processing"``, ``"model"``, ...; default: every stage.
    type : str, optional
        Table, logic or algorithm name.
    date : str or datetime.date, optional
        UTC date of the stage key, ``"2019-02-09"``.
    upstream : str, optional
        Only runs fitted on this run id.
    project : str, optional
        Experiment prefix.
    max_results : int, default=1000
        At most this many runs: the newest that match.
    sort : str, optional
        A metric to order them by, best first: highest first for a score (every
        metric but those below), lowest first for a spread (``*_std``) or a time
        (``fit_time_seconds``); runs without it last, ties newest first. Among the
        ``max_results`` newest runs that match.

    Returns
    -------
    pandas.DataFrame
        Columns ``run_id, stage, type, key, started, status, upstream`` (a
        comma-separated list of run ids), ``data`` (the key of the load run the
        chain was fitted on, following ``upstream`` back: for a load run its own
        key; comma-separated when several), ``data_fingerprint`` (that load run's
        fingerprint), ``reused_from``, ``abandoned``, then the runs' metrics:
        ``cv_<scorer>_mean`` and ``_std`` for every scorer the chain was
        cross-validated with, ``training_score``, ``best_score`` and
        ``best_threshold`` where logged. ``abandoned`` is True for a run whose fit can no longer end
        it: ``RUNNING`` with its lease expired (no heartbeat for longer than its
        ``mlpipe.lease_seconds``) or its process on this host dead, which the next
        fit of its stage ends; or ``FAILED`` by such a fit, the tag
        ``mlpipe.ended_because`` saying why.

        When a type or date matches no run, the table is empty and a warning on the
        ``mlpipe`` logger says what exists (the dates of that type, or the types).

    Raises
    ------
    ValueError
        If ``sort`` is not a metric of the runs found.

    Examples
    --------
    >>> import mlpipe
    >>> mlpipe.runs(stage="model").columns[:9].tolist()
    ['run_id', 'stage', 'type', 'key', 'started', 'status', 'upstream', 'data', 'data_fingerprint']
    """
    client = store.client()
    ids: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    if stage is None:
        ids = tuple(_experiments(client, None, project))
    else:
        names = (store.experiment_name(stage, project),)
    query = _query(
        experiment_names=names,
        experiment_ids=ids,
        type=type,
        date=date,
        upstream=upstream,
        any_stage=stage is None,
        max_results=max_results,
    )
    found = _find(client, query, metrics=True) if ids or names else []
    data = _data_versions(client, found, project)
    rows: list[dict[str, Any]] = []
    for run in found:
        entry = LineageEntry.from_run(run)
        abandoned = (
            store.abandoned_because(run) is not None
            if entry.status == "RUNNING"
            else entry.status == "FAILED" and schema.ENDED_BECAUSE in run.data.tags
        )
        metrics = {k: v for k, v in run.data.metrics.items() if k != schema.KEY_TIME}
        rows.append(
            {
                "run_id": entry.run_id,
                "stage": entry.stage,
                "type": entry.type,
                "key": entry.key,
                "started": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
                "status": entry.status,
                "upstream": ",".join(entry.upstream),
                "data": ",".join(key for key, _ in data[entry.run_id]),
                "data_fingerprint": ",".join(fp for _, fp in data[entry.run_id]),
                "reused_from": entry.reused_from,
                "abandoned": abandoned,
                **metrics,
            }
        )
    columns = [
        "run_id",
        "stage",
        "type",
        "key",
        "started",
        "status",
        "upstream",
        "data",
        "data_fingerprint",
        "reused_from",
        "abandoned",
    ]
    metric_names = sorted({k for r in rows for k in r} - set(columns))
    frame = pd.DataFrame(rows, columns=columns + metric_names)
    if not rows and (type is not None or date is not None):
        experiments = f"experiment {names[0]!r}" if names else "any stage's experiment"
        logger.warning(
            "%s",
            _missing(
                client,
                list(ids) or _experiments(client, stage, project),
                experiments,
                stage=stage,
                name=type,
                date=date,
            ),
        )
    if sort is None or frame.empty:
        return frame
    if sort not in metric_names:
        raise ValueError(
            f"Cannot sort by {sort!r}: it is not a metric of these runs. "
            f"Their metrics: {', '.join(metric_names) or 'none'}."
        )
    return frame.sort_values(
        sort, ascending=_lower_is_better(sort), na_position="last", kind="stable"
    ).reset_index(drop=True)


def _lower_is_better(metric: str) -> bool:
    """Whether a lower value of ``metric`` is better: a spread or a time. Scores of
    scikit-learn are higher-is-better (errors are negated: ``neg_...``)."""
    return metric.endswith("_std") or metric in (schema.FIT_TIME, schema.KEY_TIME)


def _data_versions(
    client: mlflow.MlflowClient, found: list[Run], project: str | None
) -> dict[str, list[tuple[str, str]]]:
    """For each run of ``found``: the (key, fingerprint) of every load run it stands on.

    The keys come from the ``upstream_keys`` tags along the way; the runs upstream of
    ``found`` are read level by level, one read of only their lineage tags each (a
    model table: its processing runs, then their load runs). A run no longer there
    gives what its child's tag says: the key, with an empty fingerprint.
    """
    tags: dict[str, dict[str, str]] = {run.info.run_id: run.data.tags for run in found}

    def upstream(run_tags: dict[str, str]) -> list[tuple[str, str, str]]:
        ids = [u for u in run_tags.get(schema.UPSTREAM, "").split(",") if u]
        keys = run_tags.get(schema.UPSTREAM_KEYS, "").split(",")
        return [
            (run_id, *(keys[i].split(":", 1) if i < len(keys) and ":" in keys[i] else ("", "")))
            for i, run_id in enumerate(ids)
        ]

    pending = {
        (run_id, stage)
        for run_tags in tags.values()
        for run_id, stage, _ in upstream(run_tags)
        if run_id not in tags
    }
    while pending:
        ids = tuple(sorted({run_id for run_id, _ in pending}))
        names = tuple(sorted({store.experiment_name(stage, project) for _, stage in pending}))
        query = RunQuery(experiment_names=names, run_ids=ids, max_results=len(ids))
        fetched = _find(client, query, tags=_DATA_TAGS)
        for run_id in ids:
            tags.setdefault(run_id, {})
        for run in fetched:
            tags[run.info.run_id] = run.data.tags
        pending = {
            (run_id, stage)
            for run in fetched
            for run_id, stage, _ in upstream(run.data.tags)
            if run_id not in tags
        }

    memo: dict[str, list[tuple[str, str]]] = {}

    def loads(run_id: str, seen: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
        if run_id not in memo:
            run_tags = tags.get(run_id, {})
            if run_tags.get(schema.STAGE) == schema.LOAD_STAGE:
                own = (run_tags.get(schema.KEY, ""), run_tags.get(schema.FINGERPRINT, ""))
                memo[run_id] = [own]
            else:
                out: list[tuple[str, str]] = []
                for parent, stage, key in upstream(run_tags):
                    if parent in seen:
                        continue
                    if stage == schema.LOAD_STAGE and not tags.get(parent):
                        found_loads = [(key, "")]  # the load run is gone: its key stays
                    else:
                        found_loads = loads(parent, seen | {run_id})
                    out += [pair for pair in found_loads if pair not in out]
                memo[run_id] = out
        return memo[run_id]

    return {run_id: loads(run_id) for run_id in (run.info.run_id for run in found)}


# What _data_versions reads of the runs upstream.
_DATA_TAGS = (schema.STAGE, schema.KEY, schema.UPSTREAM, schema.UPSTREAM_KEYS, schema.FINGERPRINT)


def lineage(run_id: str) -> list[LineageEntry]:
    """The chain upstream of a run, oldest first, ending with the run itself.

    A run fitted on several load runs lists all of them first.

    Parameters
    ----------
    run_id : str

    Returns
    -------
    list of LineageEntry

    Raises
    ------
    NotFoundError
        If a run upstream was removed from the store for good (deleted, then
        ``mlflow gc``). A deleted run still there is listed with its status.
    """
    client = store.client()
    ordered: list[LineageEntry] = []
    seen: set[str] = set()

    def visit(current: str, child: str | None = None) -> None:
        if current in seen:
            return
        seen.add(current)
        run = client.get_run(current) if child is None else store.get_run_if_there(client, current)
        if run is None:
            raise NotFoundError(
                f"Run {current}, upstream of run {child}, no longer exists: it was deleted "
                "and then removed from the tracking store for good (mlflow gc), so the "
                f"lineage of run {run_id} cannot be followed past it."
            )
        entry = LineageEntry.from_run(run)
        for parent in entry.upstream:
            visit(parent, current)
        ordered.append(entry)

    visit(run_id)
    return ordered


def descendants(run_id: str) -> list[LineageEntry]:
    """Every stage run fitted on ``run_id``, directly or not, nearest first."""
    client = store.client()
    experiment_ids = _experiments(client, None, None)
    root = client.get_run(run_id)
    project = _project_of(client, root)
    if project:
        experiment_ids = _experiments(client, None, project)
    found: list[LineageEntry] = []
    frontier = [run_id]
    seen = {run_id}
    while frontier:
        current = frontier.pop(0)
        for run in _search(
            client, experiment_ids, _filter(upstream=current, any_stage=True), 50_000
        ):
            entry = LineageEntry.from_run(run)
            if current in entry.upstream and entry.run_id not in seen:
                seen.add(entry.run_id)
                found.append(entry)
                frontier.append(entry.run_id)
    return found


def _project_of(client: mlflow.MlflowClient, run: Run) -> str | None:
    name = client.get_experiment(run.info.experiment_id).name
    return name.rsplit("/", 1)[0] if "/" in name else None


def find_chain(
    table: str,
    date: str | dt.date,
    logic: str,
    algorithm: str,
    *,
    project: str | None = None,
    stages: tuple[str, str] = ("processing", "model"),
) -> Chain | None:
    """The newest coherent chain for a table, a date, a logic and an algorithm.

    Coherent means: a FINISHED load run of ``table`` retrieved on ``date``, a
    FINISHED processing run of ``logic`` fitted on that very load run, and a
    FINISHED model run of ``algorithm`` fitted on that very processing run. A newer
    processing run on another data version is never picked.

    Parameters
    ----------
    table : str
        The load run's type (table, query, file or frame name).
    date : str or datetime.date
        UTC retrieval date, ``"2019-02-09"``.
    logic, algorithm : str
        Types of the processing and model runs.
    project : str, optional
        Experiment prefix.
    stages : (str, str), default=("processing", "model")
        The names of the processing and model steps.

    Returns
    -------
    Chain or None
        None when no such chain exists; then a warning on the ``mlpipe`` logger says
        which link is missing and what exists instead (the dates of the table's
        loads, the logics fitted on them, the algorithms fitted on those).
    """
    chain = newest_chain(table, date, logic, algorithm, project=project, stages=stages)
    if chain is None:
        client = store.client()
        logger.warning("%s", _chain_missing(client, table, date, logic, algorithm, project, stages))
    return chain


def _chain_missing(
    client: mlflow.MlflowClient,
    table: str,
    date: str | dt.date,
    logic: str,
    algorithm: str,
    project: str | None,
    stages: tuple[str, str],
) -> str:
    """Which link of the chain :func:`find_chain` looked for is missing, and what exists.

    Reads as find_chain does: only the tags it needs, through the exact upstream tags.
    """
    load_name = store.experiment_name(schema.LOAD_STAGE, project)
    loads = _find(
        client,
        _query(experiment_names=(load_name,), type=table, date=date, finished=True, max_results=1),
        tags=(schema.TYPE,),
    )
    if not loads:
        load_ids = _experiments(client, schema.LOAD_STAGE, project)
        where = f"experiment {load_name!r}"
        return _missing(client, load_ids, where, stage=schema.LOAD_STAGE, name=table, date=date)
    on_loads = f"{schema.LOAD_STAGE}:{store.safe_type(table)}@{store.day(date)}%"
    processing = _find(
        client,
        dataclasses.replace(
            _query(
                experiment_names=(store.experiment_name(stages[0], project),),
                finished=True,
                max_results=50_000,
            ),
            tags_like=((schema.UPSTREAM_KEYS, on_loads),),
        ),
        tags=(schema.TYPE,),
    )
    of_logic = [r for r in processing if r.data.tags.get(schema.TYPE) == store.safe_type(logic)]
    where = f"the loads of {table!r} on {date}"
    if not of_logic:
        logics = ", ".join(sorted({r.data.tags.get(schema.TYPE, "") for r in processing}))
        return (
            f"No coherent chain: no FINISHED {stages[0]} run of {logic!r} on {where}. "
            f"Logics fitted on them: {logics or 'none'}."
        )
    model_name = store.experiment_name(stages[1], project)
    models = store.search_runs_sql(
        client,
        dataclasses.replace(
            _query(experiment_names=(model_name,), finished=True, max_results=50_000),
            any_tag_set=tuple(_fitted_on_tag(r.info.run_id) for r in of_logic),
        ),
        tags=(schema.TYPE,),
    )
    if models is None:  # a tracking server: the models on the logic, then on these runs
        candidates = {r.info.run_id for r in of_logic}
        on_logic = f"{stages[0]}:{store.safe_type(logic)}@%"
        query = dataclasses.replace(
            _query(experiment_names=(model_name,), finished=True, max_results=50_000),
            tags_like=((schema.UPSTREAM_KEYS, on_logic),),
        )
        models = [
            r for r in _find(client, query) if set(LineageEntry.from_run(r).upstream) & candidates
        ]
    if not any(r.data.tags.get(schema.TYPE) == store.safe_type(algorithm) for r in models):
        algorithms = ", ".join(sorted({r.data.tags.get(schema.TYPE, "") for r in models}))
        return (
            f"No coherent chain: no FINISHED {stages[1]} run of {algorithm!r} on the "
            f"{stages[0]} runs of {logic!r} on {where}. Algorithms fitted on them: "
            f"{algorithms or 'none'}."
        )
    return (
        f"No coherent chain: the {stages[1]} runs of {algorithm!r} on {where} stand on "
        "runs that did not finish or were deleted."
    )


def newest_chain(
    table: str,
    date: str | dt.date,
    logic: str,
    algorithm: str,
    *,
    project: str | None = None,
    stages: tuple[str, str] = ("processing", "model"),
) -> Chain | None:
    """:func:`find_chain` without the warning on a miss: for a caller that fits what is
    missing (``mlpipe main``), to which a miss is no news. The same chain, or None."""
    client = store.client()
    processing_name = store.experiment_name(stages[0], project)
    model_name = store.experiment_name(stages[1], project)
    # Processing runs of the logic on a load of the table that day (their upstream
    # keys say so); then the model runs of the algorithm fitted on them. The chains
    # are where the two meet.
    load_prefix = f"{schema.LOAD_STAGE}:{store.safe_type(table)}@{store.day(date)}"
    processing_query = dataclasses.replace(
        _query(experiment_names=(processing_name,), type=logic, finished=True),
        tags_like=((schema.UPSTREAM_KEYS, f"{load_prefix}%"),),
    )
    sql = store.search_runs_sql(client, processing_query, tags=_LINEAGE_TAGS)
    if sql is None:
        return _find_chain_searching(client, processing_query, model_name, logic, algorithm, stages)
    ordered = _newest_data_first(sql)
    if not ordered:
        return None
    # One read for the models on every candidate, through the exact upstream tags.
    models = store.search_runs_sql(
        client,
        dataclasses.replace(
            _query(experiment_names=(model_name,), type=algorithm, finished=True),
            any_tag_set=tuple(_fitted_on_tag(run.info.run_id) for run in ordered),
            max_results=50_000,
        ),
        tags=(*_LINEAGE_TAGS, *(schema.upstream_tag(run.info.run_id) for run in ordered)),
    )
    return _pick_chain(client, ordered, models or [], logic, stages)


def _newest_data_first(processings: list[Run]) -> list[Run]:
    """The candidate processing runs: on one load each; the newest data version first,
    then the newest processing run on it."""
    single = [r for r in processings if "," not in r.data.tags.get(schema.UPSTREAM_KEYS, ",")]
    return sorted(
        single,
        key=lambda run: (run.data.tags[schema.UPSTREAM_KEYS], run.data.tags.get(schema.KEY, "")),
        reverse=True,
    )


def _like(pattern: str, value: str) -> bool:
    """SQL ``LIKE`` as MLflow's stores apply it to tags: case-sensitive, ``%`` and ``_``."""
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch("".join(parts), value, flags=re.DOTALL) is not None


def _pick_chain(
    client: mlflow.MlflowClient,
    ordered: list[Run],
    models: list[Run],
    logic: str,
    stages: tuple[str, str],
) -> Chain | None:
    """The chain :func:`_find_chain_searching` picks, from the candidate processing runs
    (``ordered``) and every FINISHED model of the algorithm fitted on one of them
    (``models``, newest first), read at once."""
    on: dict[str, list[Run]] = {run.info.run_id: [] for run in ordered}
    for model in models:
        for key, value in model.data.tags.items():
            fitted_on = key[len(schema.UPSTREAM_PREFIX) :]
            if key.startswith(schema.UPSTREAM_PREFIX) and value and fitted_on in on:
                on[fitted_on].append(model)
    checked: dict[str, LineageEntry | None] = {}
    for run in ordered[:_DIRECT_CANDIDATES]:
        # The newest model fitted on it, as one search with max_results=1 finds it.
        if on[run.info.run_id]:
            newest = LineageEntry.from_run(on[run.info.run_id][0])
            chain = _chain_on(client, checked, LineageEntry.from_run(run), newest)
            if chain is not None:
                return chain
    if len(ordered) <= _DIRECT_CANDIDATES:
        return None
    # Past those, as the one search over every model of the algorithm on the logic:
    # a model on one run only, ranked by its candidate, then by its key's time.
    rank = {run.info.run_id: i for i, run in enumerate(ordered[_DIRECT_CANDIDATES:])}
    upstream_keys = f"{stages[0]}:{store.safe_type(logic)}@%"
    pairs = []
    for model in models:
        entry = LineageEntry.from_run(model)
        if (
            len(entry.upstream) == 1
            and entry.upstream[0] in rank
            and _like(upstream_keys, model.data.tags.get(schema.UPSTREAM_KEYS, ""))
        ):
            pairs.append((rank[entry.upstream[0]], entry))
    pairs.sort(key=lambda pair: (pair[0], -store.key_time(pair[1].key)))
    for position, model_entry in pairs:
        processing = LineageEntry.from_run(ordered[_DIRECT_CANDIDATES + position])
        chain = _chain_on(client, checked, processing, model_entry)
        if chain is not None:
            return chain
    return None


def _chain_on(
    client: mlflow.MlflowClient,
    checked: dict[str, LineageEntry | None],
    processing: LineageEntry,
    model: LineageEntry,
) -> Chain | None:
    """The chain of ``processing`` and ``model`` if its load run is FINISHED and active."""
    load_id = processing.upstream[0]
    if load_id not in checked:
        load_run = store.get_run_if_there(client, load_id)  # None: removed for good
        checked[load_id] = None
        if load_run is not None and load_run.info.status == "FINISHED":
            if load_run.info.lifecycle_stage == "active":
                checked[load_id] = LineageEntry.from_run(load_run)
    load = checked[load_id]
    return Chain((load, processing, model)) if load is not None else None


def _find_chain_searching(
    client: mlflow.MlflowClient,
    processing_query: RunQuery,
    model_name: str,
    logic: str,
    algorithm: str,
    stages: tuple[str, str],
) -> Chain | None:
    """find_chain through ``search_runs`` only, for stores other than MLflow's SQL store
    (a tracking server): there, every run found costs its parameters and metrics."""
    ordered = _newest_data_first(_find(client, processing_query))
    model_experiment = client.get_experiment_by_name(model_name)
    if not ordered or model_experiment is None:
        return None
    model_ids = [model_experiment.experiment_id]
    checked: dict[str, LineageEntry | None] = {}
    model_filter = _filter(type=algorithm, finished=True)
    # The newest candidates first, one small exact search each: the usual answer
    # costs one or two searches.
    for run in ordered[:_DIRECT_CANDIDATES]:
        found = _search(
            client,
            model_ids,
            f"{model_filter} and {_fitted_on(run.info.run_id)}",
            max_results=1,
        )
        if found:
            processing, newest = LineageEntry.from_run(run), LineageEntry.from_run(found[0])
            chain = _chain_on(client, checked, processing, newest)
            if chain is not None:
                return chain
    if len(ordered) <= _DIRECT_CANDIDATES:
        return None
    # Many candidates: one search for every model of the algorithm on that logic.
    rank = {run.info.run_id: i for i, run in enumerate(ordered[_DIRECT_CANDIDATES:])}
    pairs = []
    for model_run in _search(
        client,
        model_ids,
        f"{model_filter} and tags.`{schema.UPSTREAM_KEYS}` LIKE "
        f"'{stages[0]}:{store.safe_type(logic)}@%'",
        max_results=50_000,
    ):
        entry = LineageEntry.from_run(model_run)
        if len(entry.upstream) == 1 and entry.upstream[0] in rank:
            pairs.append((rank[entry.upstream[0]], entry))
    pairs.sort(key=lambda pair: (pair[0], -store.key_time(pair[1].key)))
    for position, model in pairs:
        processing = LineageEntry.from_run(ordered[_DIRECT_CANDIDATES + position])
        chain = _chain_on(client, checked, processing, model)
        if chain is not None:
            return chain
    return None


def find_run(
    stage: str,
    name: str,
    date: str | dt.date | None = None,
    *,
    project: str | None = None,
) -> LineageEntry:
    """The newest FINISHED run of ``stage`` of type ``name`` on ``date``, or of an exact key.

    Parameters
    ----------
    stage : str
        ``"load"``, ``"processing"``, ``"model"``, ...
    name : str
        A type (table, logic or algorithm name), or an exact stage key such as
        ``"plain@20190209153000"``.
    date : str or datetime.date, optional
        UTC date of the stage key, ``"2019-02-09"``; default: any date. Ignored for
        an exact key.
    project : str, optional
        Experiment prefix.

    Returns
    -------
    LineageEntry

    Raises
    ------
    NotFoundError
        If there is none. The message lists the dates on which runs of that type
        exist, or else the types that exist.

    Examples
    --------
    >>> import mlpipe, pandas as pd
    >>> ds = mlpipe.load(pd.DataFrame({"x": [1, 2]}), name="toy")
    >>> mlpipe.find_run("load", "toy").run_id == ds.run_id
    True
    """
    client = store.client()
    experiment_ids = _experiments(client, stage, project)
    experiment = store.experiment_name(stage, project)
    if experiment_ids:
        exact = "@" in name
        if exact:
            wanted = f"tags.`{schema.KEY}` = '{_quote(name)}' and attributes.status = 'FINISHED'"
        else:
            wanted = _filter(type=name, date=date, finished=True)
        found = _search(client, experiment_ids, wanted, max_results=1)
        if found:
            return LineageEntry.from_run(found[0])
    raise NotFoundError(
        _missing(
            client, experiment_ids, f"experiment {experiment!r}", stage=stage, name=name, date=date
        )
    )


def _missing(
    client: mlflow.MlflowClient,
    experiment_ids: list[str],
    experiments: str,
    *,
    stage: str | None,
    name: str | None,
    date: str | dt.date | None,
) -> str:
    """Why no FINISHED run of ``stage`` of type (or exact key) ``name`` on ``date`` is in
    ``experiment_ids`` (called ``experiments``), and what is there instead: the dates
    of that type, or else the types. One message for every lookup that misses."""
    load = stage == schema.LOAD_STAGE
    what = "load" if load else f"{stage} run" if stage else "run"
    if not experiment_ids:
        hint = " Load one with mlpipe.load(...)." if load else ""
        where = f"stage {stage!r}" if stage else "any stage"
        return f"Nothing was logged to {where} yet (no {experiments}).{hint}"
    exact = name is not None and "@" in name
    type_ = None if name is None else store.safe_type(name.rsplit("@", 1)[0] if exact else name)
    when = f" on {date}" if date is not None and not exact else ""
    # Only the keys and types of the newest 5,000: the SQL read where there is one.
    ids, shown_tags = tuple(experiment_ids), (schema.KEY, schema.TYPE)
    same_type = _find(
        client,
        _query(experiment_ids=ids, type=type_, finished=True, max_results=5000),
        tags=shown_tags,
    )
    if same_type:
        dates = sorted({LineageEntry.from_run(r).key.rsplit("@", 1)[-1][:8] for r in same_type})
        shown = ", ".join(f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in dates)
        of = f" of {name!r}" if name is not None else ""
        runs_of = (
            f"Loads of {type_!r}" if load and type_ else "Runs of that type" if type_ else "Runs"
        )
        return f"No {what}{of}{when} in {experiments}. {runs_of} exist on: {shown}."
    others = (
        same_type
        if type_ is None
        else _find(
            client, _query(experiment_ids=ids, finished=True, max_results=5000), tags=shown_tags
        )
    )
    types = ", ".join(sorted({LineageEntry.from_run(r).type for r in others})) or "none"
    there = f"Loaded data: {types}" if load else f"Types there: {types}"
    of = f" of {type_!r}" if type_ is not None else when
    return f"No {what}{of} in {experiments}. {there}."
