"""How fast are mlpipe's lookups as the tracking store grows from 1,000 to 100,000 runs?

Stores. One SQLite store per size (``--sizes``, default 1,000, 10,000 and 100,000
stage runs) in ``benchmarks/results/bench_lookups/<size>/`` (git-ignored), kept and
reused (``--rebuild`` makes new ones). Each holds synthetic chains in the
``load``, ``processing`` and ``model`` experiments, shaped as mlpipe writes them
(tags, parameters and metrics named as in ``mlpipe/schema.py``, the real
estimators' flattened parameters and cache keys, chains linked through
``mlpipe.upstream.<run id>``, about 5 % FAILED, a dataset input on every run),
spread over ``3 * size / 1,000`` days so that a day holds as many data pulls at
every size (the store grows by time, not by density), plus two real
``LineagePipeline.fit`` chains. The synthetic runs are written with bulk SQL
inserts into MLflow's own tables, row for row as ``MlflowClient.create_run`` /
``log_batch`` / ``log_inputs`` / ``set_terminated`` write them: before each
build the script writes the same 40 runs both ways into two scratch stores and
checks that ``MlflowClient`` reads back the same runs (info, tags, parameters,
metrics, metric history, dataset inputs) and that every table holds the same
rows apart from ids.

Queries. Per store: MLflow's own filtered ``search_runs`` (100 model runs of one
type; the baseline), ``mlpipe.runs`` (one type and date), ``mlpipe.lineage``,
``mlpipe.find_chain`` (the real chain; the synthetic chain found deepest on a
mid date; an algorithm that has no run, so every candidate is searched) and the
stage cache's ``lookup`` (a hit, a key on several runs, an absent key). Each is
called 3 times untimed, then ``--calls`` times, all interleaved; the table gives
the median and its ratio to the baseline's median in the same store. Then the
MLflow calls each query makes (one call each).

With ``--server``, the same queries go through a real ``mlflow server``
(``--workers 1``, as ``tests/_server.py`` starts it) on each store: mlpipe then has
only MLflow's REST API, as for any tracking server.

    .venv/bin/python benchmarks/bench_lookups.py [--sizes 1000 10000 100000] [--calls 30]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import sklearn
import sqlalchemy
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from palmerpenguins import load_penguins
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

import mlpipe
import mlpipe._cache
import mlpipe._chain
import mlpipe.tracking._store
from mlpipe import schema
from mlpipe._cache import cache_key, data_key
from mlpipe.data._dataset import dataset_entity

TARGET = "species"
SEED = 0
NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
TEXT = ["island", "sex"]
RESULTS = Path(__file__).resolve().parent / "results" / "bench_lookups"
TABLES = ("frame", "transactions", "customers", "orders")
STAGES = (schema.LOAD_STAGE, "processing", "model")
# Targets at 10,000 runs (issue 12, item 3), milliseconds.
TARGETS = {"runs": 20.0, "find_chain": 50.0, "lookup": 10.0}


# --- chains ------------------------------------------------------------------------------


def penguin_frame(rows: int) -> pd.DataFrame:
    """The raw penguins (344 rows, missing values, text columns) resampled to ``rows``."""
    raw = load_penguins()
    return raw.sample(n=rows, replace=True, random_state=SEED).reset_index(drop=True)


def processing(numeric: Any = None) -> ColumnTransformer:
    """Numeric columns scaled and KNN-imputed (or ``numeric``), text columns one-hot encoded."""
    numeric = make_pipeline(StandardScaler(), KNNImputer()) if numeric is None else numeric
    return ColumnTransformer(
        [("numeric", numeric, NUMERIC), ("text", OneHotEncoder(handle_unknown="ignore"), TEXT)]
    )


def steps(C: float) -> list[tuple[str, Any]]:
    """The real chain: KNN-imputing ColumnTransformer, then LogisticRegression(C)."""
    return [("processing", processing()), ("model", LogisticRegression(max_iter=1000, C=C))]


# Processing logics and model algorithms of the synthetic runs: real estimators, so
# that parameters, classes and cache keys look exactly like mlpipe's.
LOGICS: dict[str, Callable[[float], Any]] = {
    "knn_impute": lambda v: processing(
        make_pipeline(StandardScaler(), KNNImputer(n_neighbors=int(v)))
    ),
    "median_impute": lambda v: processing(
        make_pipeline(SimpleImputer(strategy="median"), StandardScaler(with_std=v > 3))
    ),
    "mean_impute": lambda v: processing(SimpleImputer(strategy="mean", add_indicator=v > 3)),
}
LOGIC_VALUES = (3, 5, 7)
ALGORITHMS: dict[str, Callable[[float], Any]] = {
    "logreg": lambda v: LogisticRegression(max_iter=1000, C=v),
    "random_forest": lambda v: RandomForestClassifier(n_estimators=int(100 * v) + 50),
    "hist_gbm": lambda v: HistGradientBoostingClassifier(learning_rate=v / 10),
    "svc": lambda v: SVC(C=v),
}
ALGORITHM_VALUES = (0.1, 0.3, 1.0, 3.0)
CV_METRICS = ("accuracy", "balanced_accuracy", "f1_macro")


def days_for(n_runs: int) -> int:
    """Days the runs are spread over: about 1,000 runs per 3 days at every size."""
    return max(3, round(3 * n_runs / 1000))


def _key(type_: str, when: dt.datetime) -> str:
    return mlpipe.tracking._store.format_key(type_, when)


def _midnight(now: dt.datetime) -> dt.datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _params(estimator: Any) -> dict[str, str]:
    fmt = mlpipe.tracking._store.format_param
    return {k: fmt(v) for k, v in mlpipe._chain._flat_params(estimator).items()}


def plan_store(
    n_runs: int, today: dt.date, now: dt.datetime, days: int
) -> list[list[dict[str, Any]]]:
    """The synthetic chains: each a load run, 1-2 processing runs on it, 1-3 models on each.

    Every run is a dict of what to write; ``parent`` is the index (in its chain) of
    the run it was fitted on. Runs on ``today`` start before ``now``.
    """
    rng = random.Random(SEED)
    day_list = [today - dt.timedelta(days=days - 1 - i) for i in range(days)]
    taken: set[tuple[str, str]] = set()
    fingerprints: dict[str, list[str]] = defaultdict(list)
    logic_params = {
        (name, v): _params(make(v)) for name, make in LOGICS.items() for v in LOGIC_VALUES
    }
    algorithm_params = {
        (name, v): _params(make(v)) for name, make in ALGORITHMS.items() for v in ALGORITHM_VALUES
    }
    classes = {
        **{name: type(make(LOGIC_VALUES[0])) for name, make in LOGICS.items()},
        **{name: type(make(ALGORITHM_VALUES[0])) for name, make in ALGORITHMS.items()},
    }
    keys: dict[tuple[str, Any, str], str] = {}

    def key_of(stage: str, type_: str, make: Callable[[float], Any], v: Any, upstream: str) -> str:
        if (type_, v, upstream) not in keys:
            keys[type_, v, upstream] = cache_key(
                stage=stage, type_=type_, estimator=make(v), fit_params={}, upstream=upstream
            )
        return keys[type_, v, upstream]

    def new_run(stage: str, type_: str, start: dt.datetime, parent: int | None) -> dict[str, Any]:
        while (stage, _key(type_, start)) in taken:  # keys are unique within a stage
            start += dt.timedelta(seconds=1)
        key = _key(type_, start)
        taken.add((stage, key))
        start_ms = int(start.timestamp() * 1000)
        failed = rng.random() < (0.03 if stage == schema.LOAD_STAGE else 0.05)
        return {
            "stage": stage,
            "type": type_,
            "key": key,
            "start_ms": start_ms,
            "end_ms": start_ms + rng.randint(50, 5000),
            "status": "FAILED" if failed else "FINISHED",
            "parent": parent,
            "tags": {},
            "params": {},
            "metrics": {schema.KEY_TIME: mlpipe.tracking._store.key_time(key)},
        }

    chains: list[list[dict[str, Any]]] = []
    total = 0
    while total < n_runs:
        day = rng.choice(day_list)
        latest = 86_399 if day < today else max(0, (now - _midnight(now)).seconds - 600)
        start = _midnight(now) - dt.timedelta(days=(today - day).days)
        start += dt.timedelta(seconds=rng.randint(0, latest))
        table = rng.choice(TABLES)
        chain = [new_run(schema.LOAD_STAGE, table, start, None)]
        load = chain[0]
        # One load in ten is the same data as an earlier load of that table.
        seen = fingerprints[table]
        fp = (
            rng.choice(seen)
            if seen and rng.random() < 0.1
            else uuid.UUID(int=rng.getrandbits(128)).hex
        )
        seen.append(fp)
        load["fingerprint"] = fp
        source = "frame:fit" if table == "frame" else "sqlite:////srv/warehouse.db"
        load["tags"] = {
            schema.FINGERPRINT: fp,
            schema.SOURCE: source,
            schema.VERSION: mlpipe.__version__,
        }
        if load["status"] == "FINISHED":
            load["tags"][schema.SNAPSHOT] = f"{schema.SNAPSHOT_DIR}/{schema.SNAPSHOT_FILE}"
            load["params"] = {
                schema.SOURCE_PARAM: source,
                schema.ROWS: str(rng.randint(5_000, 50_000)),
                schema.COLUMNS: "8",
                schema.TARGET: TARGET,
                **({} if table == "frame" else {"table": table}),
            }
            upstream_data = data_key(fp, TARGET)
            for _ in range(rng.choice((1, 1, 2))):
                logic, v = rng.choice(list(LOGICS)), rng.choice(LOGIC_VALUES)
                when = dt.datetime.fromtimestamp(load["start_ms"] / 1000, dt.UTC)
                run = new_run(
                    "processing", logic, when + dt.timedelta(seconds=rng.randint(2, 30)), 0
                )
                chain.append(run)
                pkey = key_of("processing", logic, LOGICS[logic], v, upstream_data)
                _stage_fields(run, pkey, classes[logic], logic_params[logic, v], rng)
                if run["status"] != "FINISHED":
                    continue
                parent = len(chain) - 1
                for _ in range(rng.choice((1, 2, 3))):
                    algorithm, a = rng.choice(list(ALGORITHMS)), rng.choice(ALGORITHM_VALUES)
                    pwhen = dt.datetime.fromtimestamp(run["start_ms"] / 1000, dt.UTC)
                    model = new_run(
                        "model", algorithm, pwhen + dt.timedelta(seconds=rng.randint(2, 60)), parent
                    )
                    chain.append(model)
                    mkey = key_of("model", algorithm, ALGORITHMS[algorithm], a, pkey)
                    _stage_fields(
                        model, mkey, classes[algorithm], algorithm_params[algorithm, a], rng
                    )
                    if model["status"] == "FINISHED":
                        model["tags"][schema.MODEL_URI] = (
                            f"models:/m-{uuid.UUID(int=rng.getrandbits(128)).hex}"
                        )
                        model["tags"][schema.EVALUATION] = schema.EVALUATED_BY_CROSS_VALIDATION
                        score = rng.uniform(0.8, 1.0)
                        model["metrics"][schema.TRAINING_SCORE] = score
                        for name in CV_METRICS:
                            model["metrics"][f"{schema.CV_PREFIX}{name}_mean"] = score - 0.02
                            model["metrics"][f"{schema.CV_PREFIX}{name}_std"] = 0.01
        chain = chain[: n_runs - total]
        chains.append(chain)
        total += len(chain)
    return chains


def _stage_fields(
    run: dict[str, Any], key: str, cls: type, params: dict[str, str], rng: random.Random
) -> None:
    """The tags, parameters and metrics mlpipe writes on a processing or model run."""
    run["tags"] = {
        schema.VERSION: mlpipe.__version__,
        schema.GIT_COMMIT: "5e5dea1" + "0" * 33,
        schema.CLASS: f"{cls.__module__}.{cls.__qualname__}",
        schema.CACHE_KEY: key,
        schema.cache_key_tag(key): run["stage"],
    }
    if run["status"] == "FINISHED":  # a failed fit never reaches its parameters
        run["tags"][schema.SERIALIZER] = "cloudpickle"
        run["params"] = params
        run["metrics"][schema.FIT_TIME] = rng.uniform(0.01, 3.0)


def run_tags(chain: list[dict[str, Any]], ids: list[str], spec: dict[str, Any]) -> dict[str, str]:
    """Every tag of a planned run, its upstream already written (its id in ``ids``)."""
    parent = spec["parent"]
    upstream = [] if parent is None else [(chain[parent], ids[parent])]
    return {
        schema.STAGE: spec["stage"],
        schema.TYPE: spec["type"],
        schema.UPSTREAM: ",".join(run_id for _, run_id in upstream),
        schema.UPSTREAM_KEYS: ",".join(f"{s['stage']}:{s['key']}" for s, _ in upstream),
        **{schema.upstream_tag(r): f"{s['stage']}:{s['key']}" for s, r in upstream},
        schema.SCHEMA_VERSION_TAG: schema.SCHEMA_VERSION,
        schema.KEY: spec["key"],
        **spec["tags"],
    }


# --- writing a store ------------------------------------------------------------------------


def write_with_client(
    uri: str, experiments: dict[str, str], entity: dict[str, Any], chains: list[list[dict]]
) -> list[list[str]]:
    """Write ``chains`` through ``MlflowClient``, one call per thing (the reference)."""
    client = mlflow.MlflowClient(uri)
    context = [InputTag(key="mlflow.data.context", value=schema.TRAINING_CONTEXT)]
    out = []
    for chain in chains:
        dataset = DatasetEntity(
            name=chain[0]["type"], digest=chain[0]["fingerprint"][:36], **entity
        )
        ids: list[str] = []
        for spec in chain:
            run = client.create_run(
                experiments[spec["stage"]],
                start_time=spec["start_ms"],
                tags=run_tags(chain, ids, spec),
                run_name=spec["key"],
            )
            run_id = run.info.run_id
            client.log_batch(
                run_id,
                metrics=[
                    Metric(k, float(v), spec["start_ms"], 0) for k, v in spec["metrics"].items()
                ],
                params=[Param(k, v) for k, v in spec["params"].items()],
                tags=[],
            )
            client.log_inputs(run_id, datasets=[DatasetInput(dataset=dataset, tags=context)])
            client.set_terminated(run_id, status=spec["status"], end_time=spec["end_ms"])
            ids.append(run_id)
        out.append(ids)
    return out


def write_bulk(
    db: Path,
    experiments: dict[str, str],
    entity: dict[str, Any],
    chains: list[list[dict]],
    seed: int = SEED,
) -> list[list[str]]:
    """Write ``chains`` with bulk inserts into MLflow's tables: the rows ``write_with_client``
    makes, in one transaction. ``check_bulk_writer`` proves the two agree."""
    rng = random.Random(seed)

    def new_id() -> str:
        return uuid.UUID(int=rng.getrandbits(128), version=4).hex

    with contextlib.closing(sqlite3.connect(db)) as connection:
        locations = dict(
            connection.execute("SELECT experiment_id, artifact_location FROM experiments")
        )
        runs, tags, params, metrics, inputs, input_tags = [], [], [], [], [], []
        datasets: dict[tuple[int, str, str], str] = {
            (e, n, d): u
            for u, e, n, d in connection.execute(
                "SELECT dataset_uuid, experiment_id, name, digest FROM datasets"
            )
        }
        new_datasets = []
        out = []
        for chain in chains:
            name, digest = chain[0]["type"], chain[0]["fingerprint"][:36]
            ids: list[str] = []
            for spec in chain:
                run_id = new_id()
                experiment = int(experiments[spec["stage"]])
                runs.append(
                    (
                        run_id,
                        spec["key"],
                        "UNKNOWN",
                        "",
                        "",
                        "unknown",
                        spec["status"],
                        spec["start_ms"],
                        spec["end_ms"],
                        "",
                        "active",
                        f"{locations[experiment]}/{run_id}/artifacts",
                        experiment,
                    )
                )
                all_tags = {**run_tags(chain, ids, spec), "mlflow.runName": spec["key"]}
                tags += [(k, v, run_id) for k, v in all_tags.items()]
                params += [(k, v, run_id) for k, v in spec["params"].items()]
                metrics += [
                    (k, float(v), spec["start_ms"], 0, 0, run_id)
                    for k, v in spec["metrics"].items()
                ]
                dataset = datasets.get((experiment, name, digest))
                if dataset is None:
                    dataset = datasets[experiment, name, digest] = new_id()
                    new_datasets.append(
                        (
                            dataset,
                            experiment,
                            name,
                            digest,
                            entity["source_type"],
                            entity["source"],
                            entity["schema"],
                            entity["profile"],
                        )
                    )
                input_id = new_id()
                inputs.append((input_id, "DATASET", dataset, "RUN", run_id, 0))
                input_tags.append((input_id, "mlflow.data.context", schema.TRAINING_CONTEXT))
                ids.append(run_id)
            out.append(ids)
        with connection:
            connection.executemany(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
                "user_id, status, start_time, end_time, source_version, lifecycle_stage, "
                "artifact_uri, experiment_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                runs,
            )
            connection.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?,?,?)", tags)
            connection.executemany(
                "INSERT INTO params (key, value, run_uuid) VALUES (?,?,?)", params
            )
            for table in ("metrics", "latest_metrics"):
                connection.executemany(
                    f"INSERT INTO {table} (key, value, timestamp, step, is_nan, run_uuid) "
                    "VALUES (?,?,?,?,?,?)",
                    metrics,
                )
            connection.executemany(
                "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, "
                "dataset_source_type, dataset_source, dataset_schema, dataset_profile) "
                "VALUES (?,?,?,?,?,?,?,?)",
                new_datasets,
            )
            connection.executemany(
                "INSERT INTO inputs (input_uuid, source_type, source_id, destination_type, "
                "destination_id, step) VALUES (?,?,?,?,?,?)",
                inputs,
            )
            connection.executemany(
                "INSERT INTO input_tags (input_uuid, name, value) VALUES (?,?,?)", input_tags
            )
    return out


def new_store(directory: Path) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A new SQLite store in ``directory`` with the three stage experiments; its URI,
    experiment ids and the dataset entity every synthetic run logs."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiments = {
        stage: mlpipe.tracking._store.get_or_create_experiment(client, stage) for stage in STAGES
    }
    template = dataset_entity(penguin_frame(100), name="frame", digest="0" * 32, source="frame:fit")
    entity = {
        "source_type": template.source_type,
        "source": template.source,
        "schema": template.schema,
        "profile": template.profile,
    }
    return uri, experiments, entity


def _comparable(run: Any, positions: dict[str, str]) -> dict[str, Any]:
    """What MLflow reads back of a run, run ids replaced by their position."""

    def plain(text: str) -> str:
        for run_id, position in positions.items():
            text = text.replace(run_id, position)
        return text

    info = run.info
    return {
        "info": (
            info.run_name,
            info.status,
            info.start_time,
            info.end_time,
            info.lifecycle_stage,
            info.user_id,
            info.artifact_uri.rsplit("/", 3)[-1],
        ),
        "tags": {plain(k): plain(v) for k, v in run.data.tags.items()},
        "params": run.data.params,
        "metrics": run.data.metrics,
        "inputs": [
            (
                d.dataset.name,
                d.dataset.digest,
                d.dataset.source_type,
                d.dataset.source,
                d.dataset.schema,
                d.dataset.profile,
                [(t.key, t.value) for t in d.tags],
            )
            for d in run.inputs.dataset_inputs
        ],
    }


def _table_rows(db: Path, ids: dict[str, str]) -> dict[str, Counter]:
    """Every row of MLflow's run tables, ids replaced by their position (not the uuids)."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        names = {
            (u,): f"dataset:{e}:{n}:{d}"
            for u, e, n, d in connection.execute(
                "SELECT dataset_uuid, experiment_id, name, digest FROM datasets"
            )
        }
        inputs = {
            u: f"input:{ids[r]}"
            for u, r in connection.execute("SELECT input_uuid, destination_id FROM inputs")
        }
        found = {}
        for table in (
            "runs",
            "tags",
            "params",
            "metrics",
            "latest_metrics",
            "datasets",
            "inputs",
            "input_tags",
            "experiments",
        ):
            cursor = connection.execute(f"SELECT * FROM {table}")
            columns = [c[0] for c in cursor.description]
            rows: Counter = Counter()
            for row in cursor:
                clean = []
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, str):
                        value = value.replace(str(db.parent), "<store>")
                        for uid, pos in ids.items():
                            value = value.replace(uid, pos)
                        value = inputs.get(value, names.get((value,), value))
                    if column in ("creation_time", "last_update_time"):
                        value = "<ignored>"
                    clean.append(value)
                rows[tuple(clean)] += 1
            found[table] = rows
        return found


def check_bulk_writer() -> None:
    """Write 40 runs through ``MlflowClient`` and through ``write_bulk`` into two new
    stores; raise unless MLflow reads back the same runs and the tables hold the same rows."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    chains = plan_store(40, now.date(), now, 3)
    with tempfile.TemporaryDirectory(prefix="bench_lookups_check_") as tmp:
        results = []
        for how in ("client", "bulk"):
            directory = Path(tmp) / how
            uri, experiments, entity = new_store(directory)
            if how == "client":
                ids = write_with_client(uri, experiments, entity, chains)
            else:
                ids = write_bulk(directory / "mlflow.db", experiments, entity, chains)
            flat = [r for chain in ids for r in chain]
            positions = {r: f"run{i}" for i, r in enumerate(flat)}
            client = mlflow.MlflowClient(uri)
            runs = [_comparable(client.get_run(r), positions) for r in flat]
            history = [
                [
                    (m.key, m.value, m.timestamp, m.step)
                    for m in client.get_metric_history(r, schema.KEY_TIME)
                ]
                for r in flat
            ]
            found = client.search_runs(
                list(experiments.values()),
                filter_string=f"tags.`{schema.TYPE}` = 'logreg' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
            )
            order = [flat.index(r.info.run_id) for r in found]
            rows = _table_rows(directory / "mlflow.db", positions)
            results.append((runs, history, order, rows))
    (runs_a, history_a, order_a, rows_a), (runs_b, history_b, order_b, rows_b) = results
    for i, (a, b) in enumerate(zip(runs_a, runs_b, strict=True)):
        if a != b:
            raise RuntimeError(f"Run {i} differs between client and bulk writes:\n{a}\n{b}")
    if history_a != history_b or order_a != order_b:
        raise RuntimeError("Metric history or search results differ between client and bulk.")
    for table, rows in rows_a.items():
        if rows != rows_b[table]:
            raise RuntimeError(
                f"Table {table} differs: client only {list((rows - rows_b[table]).items())[:3]}, "
                f"bulk only {list((rows_b[table] - rows).items())[:3]}"
            )


def real_chains(uri: str) -> dict[str, Any]:
    """Two real fits into the populated store: C=1, then C=0.5 (processing reused)."""
    mlflow.set_tracking_uri(uri)
    frame = penguin_frame(2_000)
    X, y = frame.drop(columns=TARGET), frame[TARGET]
    types = {"processing": "knn_impute", "model": "logreg"}
    pipes = [mlpipe.LineagePipeline(steps(C), types=types, cv=None).fit(X, y) for C in (1.0, 0.5)]
    client = mlflow.MlflowClient(uri)
    last = pipes[-1]
    processing_run = client.get_run(last.run_ids_["processing"])
    load_key = client.get_run(last.run_ids_["load"]).data.tags[schema.KEY]
    return {
        "date": mlpipe.tracking._store.key_datetime(load_key).date().isoformat(),
        "run_ids": last.run_ids_,
        "reused": last.reused_,
        "processing_cache_key": processing_run.data.tags[schema.CACHE_KEY],
    }


def synthetic_targets(
    chains: list[list[dict[str, Any]]], ids: list[list[str]], today: dt.date, days: int
) -> dict[str, Any]:
    """What to ask about the synthetic runs: a mid date, a model run, the deepest chain,
    a repeated cache key."""
    day = today - dt.timedelta(days=days // 2)
    stamp = f"{day:%Y%m%d}"
    table = "transactions"
    loads = sorted(
        (
            (c, i)
            for c, i in zip(chains, ids, strict=True)
            if c[0]["type"] == table
            and c[0]["key"].split("@")[1].startswith(stamp)
            and c[0]["status"] == "FINISHED"
        ),
        key=lambda ci: -int(ci[0][0]["key"].split("@")[1]),
    )

    def position(logic: str, algorithm: str) -> int | None:
        for n, (chain, _) in enumerate(loads, start=1):
            for p, proc in enumerate(chain):
                if proc["stage"] != "processing" or proc["type"] != logic:
                    continue
                if proc["status"] != "FINISHED":
                    continue
                if any(
                    m["parent"] == p and m["type"] == algorithm and m["status"] == "FINISHED"
                    for m in chain
                ):
                    return n
        return None

    combos = {(lo, al): position(lo, al) for lo in LOGICS for al in ALGORITHMS}
    found = {k: v for k, v in combos.items() if v is not None}
    (logic, algorithm), deepest = max(found.items(), key=lambda kv: (kv[1], kv[0]))
    model_id = next(
        i[n]
        for c, i in zip(chains, ids, strict=True)
        for n, s in enumerate(c)
        if s["stage"] == "model"
        and s["status"] == "FINISHED"
        and s["key"].split("@")[1].startswith(stamp)
    )
    repeated = Counter(
        s["tags"][schema.CACHE_KEY]
        for c in chains
        for s in c
        if s["stage"] == "processing" and s["status"] == "FINISHED"
    ).most_common(1)[0]
    return {
        "date": day.isoformat(),
        "model_run_id": model_id,
        "table": table,
        "loads_that_day": len(loads),
        "logic": logic,
        "algorithm": algorithm,
        "chain_at_load": deepest,
        "repeated_processing_key": repeated[0],
        "repeated_processing_key_runs": repeated[1],
    }


def build_store(directory: Path, n_runs: int) -> dict[str, Any]:
    """Populate a new store in ``directory``; return its manifest (what the queries ask for)."""
    uri, experiments, entity = new_store(directory)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    days = days_for(n_runs)
    start = time.perf_counter()
    chains = plan_store(n_runs, now.date(), now, days)
    planned = time.perf_counter() - start
    ids = write_bulk(directory / "mlflow.db", experiments, entity, chains)
    written = time.perf_counter() - start - planned
    manifest: dict[str, Any] = {
        "runs": n_runs,
        "days": days,
        "built": now.isoformat(),
        "plan_seconds": round(planned, 1),
        "write_seconds": round(written, 1),
        "mlflow": mlflow.__version__,
        "counts": dict(Counter(s["stage"] for c in chains for s in c)),
        "failed": sum(s["status"] == "FAILED" for c in chains for s in c),
        "synthetic": synthetic_targets(chains, ids, now.date(), days),
        "real": real_chains(uri),
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def open_store(n_runs: int, rebuild: bool) -> tuple[str, dict[str, Any], str]:
    """The store of ``n_runs`` runs (built when missing or ``rebuild``): URI, manifest, note."""
    directory = RESULTS / str(n_runs)
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    if rebuild or manifest is None:
        print(f"Populating {directory} ...", file=sys.stderr)
        manifest = build_store(directory, n_runs)
        note = "built now"
    else:
        note = f"reused from {manifest['built']}"
    note += f" (planned in {manifest['plan_seconds']} s, written in {manifest['write_seconds']} s)"
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return uri, manifest, note


# --- timing ------------------------------------------------------------------------------


def queries(uri: str, manifest: dict[str, Any]) -> list[tuple[str, str, Callable[[], Any]]]:
    """(label, target group, call) per query; the first is the baseline."""
    client = mlflow.MlflowClient(uri)
    experiments = {s: client.get_experiment_by_name(s).experiment_id for s in STAGES}
    syn, real = manifest["synthetic"], manifest["real"]

    def baseline() -> Any:
        return client.search_runs(
            [experiments["model"]],
            filter_string=f"tags.`{schema.TYPE}` = 'logreg'",
            max_results=100,
        )

    def lookup(key: str) -> Callable[[], Any]:
        return lambda: mlpipe._cache.lookup(
            client, experiments["processing"], key, need_model=False
        )

    n = syn["loads_that_day"]
    at = syn["chain_at_load"]
    return [
        ("MLflow search_runs(type, max_results=100)", "", baseline),
        (
            "runs(model, logreg, synthetic date)",
            "runs",
            lambda: mlpipe.runs(stage="model", type="logreg", date=syn["date"]),
        ),
        ("lineage(real model run)", "", lambda: mlpipe.lineage(real["run_ids"]["model"])),
        (
            "find_chain(real: newest load)",
            "find_chain",
            lambda: mlpipe.find_chain("frame", real["date"], "knn_impute", "logreg"),
        ),
        (
            f"find_chain(deep: load {at} of {n})",
            "find_chain",
            lambda: mlpipe.find_chain(syn["table"], syn["date"], syn["logic"], syn["algorithm"]),
        ),
        (
            f"find_chain(absent: {n} loads)",
            "find_chain",
            lambda: mlpipe.find_chain(syn["table"], syn["date"], syn["logic"], "no_such_algorithm"),
        ),
        ("lookup(real key, hit)", "lookup", lookup(real["processing_cache_key"])),
        (
            f"lookup(key on {syn['repeated_processing_key_runs']} runs)",
            "lookup",
            lookup(syn["repeated_processing_key"]),
        ),
        ("lookup(absent key)", "lookup", lookup("0" * 64)),
    ]


def describe(result: Any) -> str:
    if isinstance(result, pd.DataFrame):
        return f"{len(result)} rows"
    if isinstance(result, list):
        return f"{len(result)} runs"
    if isinstance(result, mlpipe.Chain):
        return "chain"
    return "None" if result is None else "1 run"


def time_queries(
    named: list[tuple[str, str, Callable[[], Any]]], calls: int
) -> dict[str, dict[str, Any]]:
    """Median and min milliseconds per query over ``calls`` calls, every query interleaved."""
    returns = {}
    for label, _, query in named:  # warm-up: imports, connection pool, SQLite page cache
        for _ in range(3):
            returns[label] = describe(query())
    times: dict[str, list[float]] = defaultdict(list)
    for i in range(calls):
        for label, _, query in named if i % 2 == 0 else named[::-1]:
            start = time.perf_counter()
            query()
            times[label].append((time.perf_counter() - start) * 1000)
    return {
        label: {
            "returns": returns[label],
            "median": statistics.median(times[label]),
            "min": min(times[label]),
        }
        for label, _, _ in named
    }


class CallCounter:
    """Counts the MlflowClient calls and mlpipe's SQL reads one query makes (calls MLflow
    makes itself excluded)."""

    METHODS = ("get_experiment_by_name", "search_experiments", "search_runs", "get_run")
    # runs loaded: by search_runs and SQL reads, one per get_run; experiments not counted.

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.runs_loaded = 0
        self._depth = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        client = mlflow.MlflowClient
        originals = {name: client.__dict__[name] for name in self.METHODS}
        for name, method in originals.items():
            setattr(client, name, self._wrap(name, method))
        # mlpipe's direct reads of MLflow's SQL store (None through a server).
        sql_read = mlpipe.tracking._store.search_runs_sql
        mlpipe.tracking._store.search_runs_sql = self._wrap("SQL read", sql_read)
        try:
            yield
        finally:
            for name, method in originals.items():
                setattr(client, name, method)
            mlpipe.tracking._store.search_runs_sql = sql_read

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            try:
                result = method(*args, **kwargs)
            finally:
                self._depth -= 1
            if result is None:  # not a SQL store: search_runs follows
                return result
            self.calls[name] += 1
            loaded = name in ("search_runs", "SQL read")
            self.runs_loaded += len(result) if loaded else name == "get_run"
            return result

        return counted


def count_calls(named: list[tuple[str, str, Callable[[], Any]]]) -> pd.DataFrame:
    rows = []
    for label, _, query in named:
        counter = CallCounter()
        with counter.installed():
            query()
        rows.append(
            {
                "query": label,
                "MLflow calls": ", ".join(f"{n} {k}" for k, n in counter.calls.items()),
                "runs loaded": counter.runs_loaded,
            }
        )
    return pd.DataFrame(rows)


@contextlib.contextmanager
def served(uri: str, server: bool) -> Iterator[str]:
    """``uri``, or with ``server`` the URL of an ``mlflow server`` on that store."""
    if not server:
        yield uri
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests._server import TrackingServer

    directory = Path(uri.removeprefix("sqlite:///")).parent
    process = TrackingServer(uri, directory / "mlruns", directory / "server.log").start()
    try:
        mlflow.set_tracking_uri(process.url)
        print(f"   Through mlflow server --workers 1 at {process.url} on that store.")
        yield process.url
    finally:
        process.stop()
        mlflow.set_tracking_uri(uri)


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--calls", type=int, default=30, help="timed calls per query")
    parser.add_argument("--rebuild", action="store_true", help="populate new stores")
    parser.add_argument("--server", action="store_true", help="query through mlflow server")
    args = parser.parse_args()

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")

    print(f"bench_lookups.py, {dt.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}")
    print(
        f"python {platform.python_version()}, mlflow {mlflow.__version__}, "
        f"scikit-learn {sklearn.__version__}, sqlalchemy {sqlalchemy.__version__}, "
        f"mlpipe from {Path(mlpipe.__file__).parent} "
        f"(repository HEAD {mlpipe.tracking._store.git_commit()}); "
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    needs_build = args.rebuild or any(
        not (RESULTS / str(n) / "manifest.json").exists() for n in args.sizes
    )
    if needs_build:
        start = time.perf_counter()
        check_bulk_writer()
        print(
            f"Bulk writer checked against MlflowClient on 40 runs "
            f"({time.perf_counter() - start:.1f} s): same runs read back, same table rows."
        )
    medians: dict[int, dict[str, dict[str, Any]]] = {}
    groups: dict[str, str] = {}
    for n_runs in args.sizes:
        uri, manifest, note = open_store(n_runs, args.rebuild)
        syn, real = manifest["synthetic"], manifest["real"]
        counts = ", ".join(f"{n} {s}" for s, n in manifest["counts"].items())
        print(
            f"\n== {n_runs:,} runs: {counts}; {manifest['failed']} FAILED; over "
            f"{manifest['days']} days; store {note}.\n"
            f"   Mid date {syn['date']}: {syn['loads_that_day']} FINISHED loads of "
            f"{syn['table']!r}; find_chain({syn['logic']}, {syn['algorithm']}) is at the "
            f"{syn['chain_at_load']}. newest. Real chains on {real['date']} "
            f"(2nd reused {real['reused']})."
        )
        with served(uri, args.server) as uri:
            named = queries(uri, manifest)
            result = time_queries(named, args.calls)
            calls = count_calls(named)
        groups.update({label: group for label, group, _ in named})
        medians[n_runs] = result
        base = result[named[0][0]]["median"]
        rows = [
            {
                "query": label,
                "returns": r["returns"],
                "min ms": f"{r['min']:.1f}",
                "median ms": f"{r['median']:.1f}",
                "vs search_runs": f"{r['median'] / base:.2f}",
                "target": f"< {TARGETS[groups[label]]:.0f}" if groups[label] else "",
            }
            for label, r in result.items()
        ]
        print(f"Latency over {args.calls} calls per query (interleaved), milliseconds:")
        print(pd.DataFrame(rows).to_string(index=False))
        print("MLflow calls and SQL reads per query:")
        print(calls.to_string(index=False))

    if len(medians) > 1:
        print("\nThe curve: median ms per query by store size (ratio to search_runs in brackets)")
        sizes = list(medians)
        curve = []
        for position, label in enumerate(next(iter(medians.values()))):
            row = {"query": label.split("(")[0] + "(" + label.split("(")[1].split(":")[0]}
            for n in sizes:
                labels = list(medians[n])
                cell = medians[n][labels[position]]
                base = medians[n][labels[0]]["median"]
                row[f"{n:,} runs"] = f"{cell['median']:.1f} ({cell['median'] / base:.2f})"
            curve.append(row)
        print(pd.DataFrame(curve).to_string(index=False))
    print(f"load average at the end {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
