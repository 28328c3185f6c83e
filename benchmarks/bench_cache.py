"""How fast are run queries on 10,000 stage runs, and what does the stage cache save?

(a) Queries. A SQLite store holds ``--runs`` (default 10,000) stage runs in the
    ``load``, ``processing`` and ``model`` experiments, written with
    ``MlflowClient.create_run`` / ``log_batch`` / ``log_inputs`` / ``set_terminated``
    in the shape mlpipe writes (tags, parameters and metrics named as in
    ``mlpipe/schema.py``; chains linked through ``mlpipe.upstream.<run id>``;
    about 5 % FAILED), spread over 30 days, plus two real ``LineagePipeline.fit``
    chains. Each query is timed ``--calls`` times, all queries interleaved, next to
    MLflow's own filtered ``search_runs`` (the baseline). Then each query is run
    again with every MLflow call and every SQL statement counted and timed, and
    one of find_chain's searches is taken apart (SQL statements, query plan, the
    same search without parts of its filter).
    The populated store is kept in ``benchmarks/results/bench_cache/`` (git-ignored)
    and reused; ``--rebuild`` makes a new one.

(b) Cache. On Palmer penguins resampled to ``--rows`` (default 13,000) rows: a
    cold fit into a fresh store, a warm refit with only the model's ``C`` changed
    (the processing stage is reused) and an identical refit (every stage reused),
    next to ``pipe.predict(X)`` and a plain scikit-learn ``Pipeline.fit``; with
    ``cv=None`` (``--repeat`` rounds), then with the default ``cv=5``
    (``--cv-repeat`` rounds); then one cold, warm and identical fit timed piece
    by piece.

    .venv/bin/python benchmarks/bench_cache.py
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import json
import logging
import multiprocessing
import platform
import pstats
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
import numpy as np
import pandas as pd
import sklearn
import sqlalchemy
from _breakdown import Breakdown  # benchmarks/ is on sys.path when a script runs
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Metric, Param
from palmerpenguins import load_penguins
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sqlalchemy.engine.cursor import CursorFetchStrategy

import mlpipe
import mlpipe._cache
import mlpipe._chain
import mlpipe._pipeline
import mlpipe.model._raw
import mlpipe.tracking._store
from mlpipe import schema
from mlpipe._cache import cache_key, data_key
from mlpipe.data._dataset import dataset_entity
from mlpipe.tracking._query import _STAGE_PREFIX_FILTER, _filter, _search

TARGET = "species"
SEED = 0
NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
TEXT = ["island", "sex"]
RESULTS = Path(__file__).resolve().parent / "results" / "bench_cache"
DAYS = 30
TABLES = ("frame", "transactions", "customers", "orders")
STAGES = (schema.LOAD_STAGE, "processing", "model")
TARGET_MS = 50.0


# --- data and chains -------------------------------------------------------------------


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
    """The benchmark chain: KNN-imputing ColumnTransformer, then LogisticRegression(C)."""
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


# --- (a) the populated store -------------------------------------------------------------


def store_uri(directory: Path) -> str:
    return f"sqlite:///{directory / 'mlflow.db'}"


def _key(type_: str, when: dt.datetime) -> str:
    return mlpipe.tracking._store.format_key(type_, when)


def plan_store(n_runs: int, today: dt.date, now: dt.datetime) -> list[list[dict[str, Any]]]:
    """The synthetic chains: each a load run, 1-2 processing runs on it, 1-3 models on each.

    Every run is a dict of what to write; ``parent`` is the index (in its chain) of
    the run it was fitted on. Runs on ``today`` start before ``now``.
    """
    rng = random.Random(SEED)
    days = [today - dt.timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    taken: set[tuple[str, str]] = set()
    fingerprints: dict[str, list[str]] = defaultdict(list)
    logic_params = {
        (name, v): _params(make(v)) for name, make in LOGICS.items() for v in LOGIC_VALUES
    }
    algorithm_params = {
        (name, v): _params(make(v)) for name, make in ALGORITHMS.items() for v in ALGORITHM_VALUES
    }
    keys: dict[tuple[str, Any, str], str] = {}

    def key_of(stage: str, type_: str, make: Callable[[float], Any], v: Any, upstream: str) -> str:
        if (type_, v, upstream) not in keys:
            estimator = make(v)
            keys[type_, v, upstream] = cache_key(
                stage=stage, type_=type_, estimator=estimator, fit_params={}, upstream=upstream
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
        day = rng.choice(days)
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
                _stage_fields(run, pkey, type(LOGICS[logic](v)), logic_params[logic, v], rng)
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
                    estimator_class = type(ALGORITHMS[algorithm](a))
                    _stage_fields(model, mkey, estimator_class, algorithm_params[algorithm, a], rng)
                    if model["status"] == "FINISHED":
                        model["tags"][schema.MODEL_URI] = f"models:/m-{uuid.uuid4().hex}"
                        model["tags"][schema.EVALUATION] = (
                            "5-fold cross-validation (StratifiedKFold), "
                            "the whole chain refitted on each fold"
                        )
                        score = rng.uniform(0.8, 1.0)
                        model["metrics"][schema.TRAINING_SCORE] = score
                        for name in CV_METRICS:
                            model["metrics"][f"{schema.CV_PREFIX}{name}_mean"] = score - 0.02
                            model["metrics"][f"{schema.CV_PREFIX}{name}_std"] = 0.01
        chain = chain[: n_runs - total]
        chains.append(chain)
        total += len(chain)
    return chains


def _midnight(now: dt.datetime) -> dt.datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _params(estimator: Any) -> dict[str, str]:
    fmt = mlpipe.tracking._store.format_param
    return {k: fmt(v) for k, v in mlpipe._chain._flat_params(estimator).items()}


def _stage_fields(
    run: dict[str, Any], key: str, cls: type, params: dict[str, str], rng: random.Random
) -> None:
    """The tags, parameters and metrics mlpipe writes on a processing or model run."""
    run["tags"] = {
        schema.VERSION: mlpipe.__version__,
        schema.GIT_COMMIT: "5e5dea1" + "0" * 33,
        schema.CLASS: f"{cls.__module__}.{cls.__qualname__}",
        schema.CACHE_KEY: key,
    }
    if run["status"] == "FINISHED":  # a failed fit never reaches its parameters
        run["tags"][schema.SERIALIZER] = "cloudpickle"
        run["params"] = params
        run["metrics"][schema.FIT_TIME] = rng.uniform(0.01, 3.0)


def _fast_sqlite() -> None:
    """No fsync per commit in this process (population only; queries run with defaults)."""

    @sqlalchemy.event.listens_for(sqlalchemy.engine.Engine, "connect")
    def _pragma(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.close()


def populate_chains(
    uri: str,
    experiments: dict[str, str],
    entity: dict[str, Any],
    chains: list[list[dict[str, Any]]],
) -> list[list[str]]:
    """Write ``chains`` to the store (in a worker process); return their run ids."""
    _fast_sqlite()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    client = mlflow.MlflowClient(uri)
    context = [InputTag(key="mlflow.data.context", value=schema.TRAINING_CONTEXT)]
    out = []
    for chain in chains:
        load = chain[0]
        dataset = DatasetEntity(name=load["type"], digest=load["fingerprint"][:36], **entity)
        ids: list[str] = []
        for spec in chain:
            parent = spec["parent"]
            upstream = [] if parent is None else [(chain[parent], ids[parent])]
            tags = {
                schema.STAGE: spec["stage"],
                schema.TYPE: spec["type"],
                schema.UPSTREAM: ",".join(run_id for _, run_id in upstream),
                schema.UPSTREAM_KEYS: ",".join(f"{s['stage']}:{s['key']}" for s, _ in upstream),
                **{schema.upstream_tag(r): f"{s['stage']}:{s['key']}" for s, r in upstream},
                schema.SCHEMA_VERSION_TAG: schema.SCHEMA_VERSION,
                schema.KEY: spec["key"],
                **spec["tags"],
            }
            run = client.create_run(
                experiments[spec["stage"]],
                start_time=spec["start_ms"],
                tags=tags,
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


def build_store(directory: Path, n_runs: int, workers: int) -> dict[str, Any]:
    """Populate a new store in ``directory``; return its manifest (what the queries ask for)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    uri = store_uri(directory)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiments = {
        stage: mlpipe.tracking._store.get_or_create_experiment(client, stage) for stage in STAGES
    }
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    today = now.date()
    chains = plan_store(n_runs, today, now)
    template = dataset_entity(penguin_frame(100), name="frame", digest="0" * 32, source="frame:fit")
    entity = {
        "source_type": template.source_type,
        "source": template.source,
        "schema": template.schema,
        "profile": template.profile,
    }
    start = time.perf_counter()
    batches = [chains[i : i + 40] for i in range(0, len(chains), 40)]
    context = multiprocessing.get_context("spawn")
    ids: list[list[str]] = []
    with context.Pool(workers) as pool:
        jobs = [
            pool.apply_async(populate_chains, (uri, experiments, entity, batch))
            for batch in batches
        ]
        for i, job in enumerate(jobs):
            ids += job.get()
            if (i + 1) % max(1, len(jobs) // 10) == 0:
                done = sum(len(c) for c in chains[: len(ids)])
                print(
                    f"  {done} runs written, {time.perf_counter() - start:.0f} s", file=sys.stderr
                )
    seconds = time.perf_counter() - start

    manifest: dict[str, Any] = {
        "runs": n_runs,
        "built": now.isoformat(),
        "populate_seconds": round(seconds, 1),
        "workers": workers,
        "mlflow": mlflow.__version__,
        "mlpipe": str(Path(mlpipe.__file__).parent),
        "counts": dict(Counter(s["stage"] for c in chains for s in c)),
        "failed": sum(s["status"] == "FAILED" for c in chains for s in c),
    }
    manifest.update(synthetic_targets(chains, ids, today))
    manifest.update(real_chains(uri))
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def synthetic_targets(
    chains: list[list[dict[str, Any]]], ids: list[list[str]], today: dt.date
) -> dict[str, Any]:
    """What to ask about the synthetic runs: a mid date, a model run, a chain, a repeated key."""
    day = today - dt.timedelta(days=DAYS // 2)
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
        "synthetic": {
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
    }


def real_chains(uri: str) -> dict[str, Any]:
    """Two real fits into the populated store: C=1, then C=0.5 (processing reused)."""
    mlflow.set_tracking_uri(uri)
    frame = penguin_frame(2_000)
    X, y = frame.drop(columns=TARGET), frame[TARGET]
    types = {"processing": "knn_impute", "model": "logreg"}
    pipes = [mlpipe.LineagePipeline(steps(C), types=types).fit(X, y) for C in (1.0, 0.5)]
    client = mlflow.MlflowClient(uri)
    last = pipes[-1]
    processing_run = client.get_run(last.run_ids_["processing"])
    load_key = client.get_run(last.run_ids_["load"]).data.tags[schema.KEY]
    return {
        "real": {
            "date": dt.datetime.strptime(load_key.split("@")[1], "%Y%m%d%H%M%S").date().isoformat(),
            "run_ids": last.run_ids_,
            "reused": last.reused_,
            "processing_cache_key": processing_run.data.tags[schema.CACHE_KEY],
        }
    }


def open_store(args: argparse.Namespace) -> tuple[str, dict[str, Any], str]:
    """The populated store (built when missing, outdated or ``--rebuild``): URI, manifest, note."""
    manifest_path = RESULTS / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    if args.rebuild or manifest is None or manifest.get("runs") != args.runs:
        reason = (
            "--rebuild" if args.rebuild else "no store" if manifest is None else "--runs changed"
        )
        print(f"Populating {RESULTS} ({reason}) ...", file=sys.stderr)
        manifest = build_store(RESULTS, args.runs, args.workers)
        note = (
            f"populated now ({reason}) in {manifest['populate_seconds']} s "
            f"with {manifest['workers']} worker processes"
        )
    else:
        note = (
            f"reused from {manifest['built']} (populated then in {manifest['populate_seconds']} s "
            f"with {manifest['workers']} worker processes)"
        )
    uri = store_uri(RESULTS)
    mlflow.set_tracking_uri(uri)
    return uri, manifest, note


# --- (a) timing and profiling the queries ----------------------------------------------


def queries(uri: str, manifest: dict[str, Any]) -> list[tuple[str, Callable[[], Any]]]:
    client = mlflow.MlflowClient(uri)
    experiments = {s: client.get_experiment_by_name(s).experiment_id for s in STAGES}
    syn, real = manifest["synthetic"], manifest["real"]
    missing_key = "0" * 32

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
        ("MLflow search_runs(type, max_results=100)", baseline),
        (
            "runs(model, logreg, synthetic date)",
            lambda: mlpipe.runs(stage="model", type="logreg", date=syn["date"]),
        ),
        (
            "runs(model, logreg, real date)",
            lambda: mlpipe.runs(stage="model", type="logreg", date=real["date"]),
        ),
        ("lineage(real model run)", lambda: mlpipe.lineage(real["run_ids"]["model"])),
        ("lineage(synthetic model run)", lambda: mlpipe.lineage(syn["model_run_id"])),
        (
            "find_chain(real: 1st load)",
            lambda: mlpipe.find_chain("frame", real["date"], "knn_impute", "logreg"),
        ),
        (
            f"find_chain(synthetic: load {at} of {n})",
            lambda: mlpipe.find_chain(syn["table"], syn["date"], syn["logic"], syn["algorithm"]),
        ),
        (
            f"find_chain(miss: all {n} loads)",
            lambda: mlpipe.find_chain(syn["table"], syn["date"], syn["logic"], "no_such_algorithm"),
        ),
        ("lookup(real key, hit)", lookup(real["processing_cache_key"])),
        (
            f"lookup(synthetic key on {syn['repeated_processing_key_runs']} runs)",
            lookup(syn["repeated_processing_key"]),
        ),
        ("lookup(absent key, miss)", lookup(missing_key)),
    ]


def describe(result: Any) -> str:
    if isinstance(result, pd.DataFrame):
        return f"{len(result)} rows"
    if isinstance(result, list):
        return f"{len(result)} runs"
    if isinstance(result, mlpipe.Chain):
        return "chain"
    if result is None:
        return "None"
    return "1 run"


def time_queries(named: list[tuple[str, Callable[[], Any]]], calls: int) -> pd.DataFrame:
    """Median and p90 milliseconds per query over ``calls`` calls, every query interleaved."""
    results = {}
    for label, query in named:  # warm-up: imports, connection pool, SQLite page cache
        for _ in range(3):
            results[label] = describe(query())
    times: dict[str, list[float]] = defaultdict(list)
    for i in range(calls):
        order = named if i % 2 == 0 else named[::-1]
        for label, query in order:
            start = time.perf_counter()
            query()
            times[label].append((time.perf_counter() - start) * 1000)
    base = statistics.median(times[named[0][0]])
    rows = []
    for label, _ in named:
        median = statistics.median(times[label])
        rows.append(
            {
                "query": label,
                "returns": results[label],
                "min ms": f"{min(times[label]):.1f}",
                "median ms": f"{median:.1f}",
                "p90 ms": f"{np.percentile(times[label], 90):.1f}",
                "vs search_runs": f"{median / base:.2f}",
                f"< {TARGET_MS:.0f} ms": "yes" if median < TARGET_MS else "NO",
            }
        )
    return pd.DataFrame(rows)


class Counters:
    """Counts and times MLflow client calls and SQL statements during one query."""

    CLIENT_METHODS = (
        "get_experiment_by_name",
        "get_experiment",
        "search_experiments",
        "search_runs",
        "get_run",
    )

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.client_s = 0.0
        self.runs_loaded = 0
        self.statements = 0
        self.pragmas = 0
        self.sql_s = 0.0
        self._depth = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        client = mlflow.MlflowClient
        originals = {name: client.__dict__[name] for name in self.CLIENT_METHODS}
        fetches = {
            n: CursorFetchStrategy.__dict__[n] for n in ("fetchone", "fetchmany", "fetchall")
        }
        for name, method in originals.items():
            setattr(client, name, self._client_call(name, method))
        for name, method in fetches.items():
            setattr(CursorFetchStrategy, name, self._sql_call(method))
        engine = sqlalchemy.engine.Engine
        sqlalchemy.event.listen(engine, "before_cursor_execute", self._before)
        sqlalchemy.event.listen(engine, "after_cursor_execute", self._after)
        try:
            yield
        finally:
            sqlalchemy.event.remove(engine, "before_cursor_execute", self._before)
            sqlalchemy.event.remove(engine, "after_cursor_execute", self._after)
            for name, method in originals.items():
                setattr(client, name, method)
            for name, method in fetches.items():
                setattr(CursorFetchStrategy, name, method)

    def _client_call(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return method(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                result = method(*args, **kwargs)
            finally:
                self._depth -= 1
                self.client_s += time.perf_counter() - start
            self.calls[name] += 1
            if name == "search_runs":
                self.runs_loaded += len(result)
            elif name == "get_run":
                self.runs_loaded += 1
            return result

        return timed

    def _sql_call(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.sql_s += time.perf_counter() - start

        return timed

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements += 1
        self.pragmas += statement.lstrip().upper().startswith("PRAGMA")
        conn.info["bench_start"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sql_s += time.perf_counter() - conn.info.pop("bench_start")


def profile_queries(named: list[tuple[str, Callable[[], Any]]], repeat: int = 5) -> pd.DataFrame:
    """Where each query's time goes: MLflow calls, SQL statements, SQLite (median of runs)."""
    rows = []
    for label, query in named:
        samples = []
        for _ in range(repeat):
            counters = Counters()
            with counters.installed():
                start = time.perf_counter()
                query()
                total = time.perf_counter() - start
            samples.append((total, counters))
        total, counters = sorted(samples, key=lambda s: s[0])[len(samples) // 2]
        rows.append(
            {
                "query": label,
                "total ms": f"{total * 1000:.1f}",
                "MLflow calls": ", ".join(f"{n} {k}" for k, n in counters.calls.items()),
                "in them ms": f"{counters.client_s * 1000:.1f}",
                "SQL stmts (PRAGMA)": f"{counters.statements} ({counters.pragmas})",
                "SQLite ms": f"{counters.sql_s * 1000:.1f}",
                "runs loaded": counters.runs_loaded,
            }
        )
    return pd.DataFrame(rows)


def search_runs_sql(uri: str, manifest: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, float]]:
    """find_chain's processing search on the real load, split by SQL statement."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("processing").experiment_id
    where = _filter(type="knn_impute", upstream=manifest["real"]["run_ids"]["load"], finished=True)
    per: dict[str, list[float]] = defaultdict(list)

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["bench_start"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        text = " ".join(statement.split())
        per[_statement_label(text)].append(time.perf_counter() - conn.info.pop("bench_start"))

    engine = sqlalchemy.engine.Engine
    rounds = 20
    sqlalchemy.event.listen(engine, "before_cursor_execute", before)
    sqlalchemy.event.listen(engine, "after_cursor_execute", after)
    try:
        start = time.perf_counter()
        for _ in range(rounds):
            _search(client, [experiment], where)
        total = (time.perf_counter() - start) / rounds
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", before)
        sqlalchemy.event.remove(engine, "after_cursor_execute", after)
    rows = [
        {"statement": k, "per search": len(v) / rounds, "ms per search": sum(v) / rounds * 1000}
        for k, v in per.items()
    ]
    rows.append(
        {
            "statement": "whole search_runs call",
            "per search": "",
            "ms per search": total * 1000,
        }
    )
    sql = sum(sum(v) for v in per.values()) / rounds
    rows.append(
        {"statement": "  of which SQLite (execute)", "per search": "", "ms per search": sql * 1000}
    )
    rows.append(
        {
            "statement": "  the rest: SQLAlchemy and MLflow Python",
            "per search": "",
            "ms per search": (total - sql) * 1000,
        }
    )
    table = pd.DataFrame(rows)
    table["ms per search"] = table["ms per search"].map("{:.2f}".format)
    shares = python_split(lambda: _search(client, [experiment], where))
    return table, shares


def filter_variants(uri: str, manifest: dict[str, Any], rounds: int = 15) -> pd.DataFrame:
    """Two of mlpipe's searches as sent, and without the parts of the filter one at a time."""
    client = mlflow.MlflowClient(uri)
    experiments = {s: client.get_experiment_by_name(s).experiment_id for s in STAGES}
    syn, real = manifest["synthetic"], manifest["real"]
    by_key_time = [f"metrics.`{schema.KEY_TIME}` DESC", "attributes.start_time DESC"]
    by_start = ["attributes.start_time DESC"]
    searches = {
        "runs(model, logreg, synthetic date)": (
            experiments["model"],
            _filter(type="logreg", date=syn["date"]),
        ),
        "find_chain: processing runs of a load": (
            experiments["processing"],
            _filter(type="knn_impute", upstream=real["run_ids"]["load"], finished=True),
        ),
    }
    variants = {}
    for label, (experiment, where) in searches.items():
        bare = where.replace(f"{_STAGE_PREFIX_FILTER} and ", "")
        variants[label, "as mlpipe sends it"] = (experiment, where, by_key_time)
        variants[label, "without stage != ''"] = (experiment, bare, by_key_time)
        variants[label, "without ORDER BY key_time"] = (experiment, where, by_start)
        variants[label, "without either"] = (experiment, bare, by_start)
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    found: dict[tuple[str, str], int] = {}
    for _ in range(rounds):
        for name, (experiment, where, order) in variants.items():
            start = time.perf_counter()
            result = client.search_runs(
                [experiment], filter_string=where, order_by=order, max_results=1000
            )
            times[name].append((time.perf_counter() - start) * 1000)
            found[name] = len(result)
    return pd.DataFrame(
        [
            {
                "search": label,
                "variant": variant,
                "runs": found[label, variant],
                "min ms": f"{min(times[label, variant]):.1f}",
                "median ms": f"{statistics.median(times[label, variant]):.1f}",
            }
            for label, variant in variants
        ]
    )


def query_plan(uri: str, manifest: dict[str, Any]) -> list[str]:
    """SQLite's plan for find_chain's processing search (EXPLAIN QUERY PLAN)."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("processing").experiment_id
    where = _filter(type="knn_impute", upstream=manifest["real"]["run_ids"]["load"], finished=True)
    captured: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT DISTINCT RUNS."):
            captured.append((statement, parameters))

    engine = sqlalchemy.engine.Engine
    sqlalchemy.event.listen(engine, "before_cursor_execute", before)
    try:
        _search(client, [experiment], where)
    finally:
        sqlalchemy.event.remove(engine, "before_cursor_execute", before)
    statement, parameters = captured[0]
    with contextlib.closing(sqlite3.connect(RESULTS / "mlflow.db")) as connection:
        plan = connection.execute("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
    return [row[-1] for row in plan]


def _statement_label(text: str) -> str:
    upper = text.upper()
    if upper.startswith("PRAGMA"):
        return text.split(";")[0] + " (every session)"
    if upper.startswith("SELECT DISTINCT RUNS."):
        return "SELECT DISTINCT runs JOIN tags ... (filter, order, limit)"
    if "JOIN DATASETS" in upper:
        return "dataset inputs of the found runs (inputs JOIN datasets)"
    if "FROM INPUTS WHERE INPUTS.SOURCE_TYPE" in upper:
        return "model outputs of the found runs (inputs)"
    for table in ("latest_metrics", "params", "tags", "experiments"):
        if f"FROM {table.upper()} WHERE" in upper:
            return f"{table} of the found runs"
    return text[:60]


def python_split(search: Callable[[], Any], rounds: int = 20) -> dict[str, float]:
    """Shares of one search's time under cProfile (which inflates Python), by package."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        search()
    profiler.disable()
    shares: dict[str, float] = defaultdict(float)
    for (filename, _, name), row in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        tottime = row[2]
        if "sqlite3" in name or "sqlite3" in filename:
            shares["sqlite3 (C)"] += tottime
        elif "/sqlalchemy/" in filename:
            shares["SQLAlchemy (Python)"] += tottime
        elif "/mlflow/" in filename:
            shares["MLflow (Python)"] += tottime
        else:
            shares["other (builtins, stdlib, mlpipe)"] += tottime
    total = sum(shares.values())
    return {k: v / total for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


# --- (b) cold fit, warm refit, full cache hit ---------------------------------------------


@contextlib.contextmanager
def fresh_store() -> Iterator[str]:
    """A new SQLite store, tables already created, set as the tracking URI."""
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.MlflowClient(uri).search_experiments()  # creates the tables
        yield uri


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def cache_round(X: pd.DataFrame, y: pd.Series, cv: Any) -> dict[str, float]:
    """Cold fit, warm refit (C changed), identical refit and predict in one fresh store."""
    seconds = {}
    with fresh_store():
        seconds["cold fit (C=1.0)"], cold = timed(
            lambda: mlpipe.LineagePipeline(steps(1.0), cv=cv).fit(X, y)
        )
        seconds["warm refit (C=0.5)"], warm = timed(
            lambda: mlpipe.LineagePipeline(steps(0.5), cv=cv).fit(X, y)
        )
        seconds["identical refit (C=0.5)"], hit = timed(
            lambda: mlpipe.LineagePipeline(steps(0.5), cv=cv).fit(X, y)
        )
        seconds["pipe.predict(X)"], _ = timed(lambda: hit.predict(X))
    for pipe, expected in ((cold, []), (warm, ["processing"]), (hit, ["processing", "model"])):
        if pipe.reused_ != expected:
            raise RuntimeError(f"Expected reused_ == {expected}, got {pipe.reused_}.")
    return seconds


def sklearn_fit(X: pd.DataFrame, y: pd.Series) -> float:
    """A plain scikit-learn Pipeline of the same steps, on the same prepared input."""
    Xp = mlpipe.model._raw.prepare(X, None)
    return timed(lambda: Pipeline(steps(0.5)).fit(Xp, y))[0]


def cache_table(X: pd.DataFrame, y: pd.Series, cv: Any, repeat: int) -> tuple[pd.DataFrame, str]:
    """Seconds per path over ``repeat`` rounds, and the per-round ratios (robust to noise)."""
    results: dict[str, list[float]] = defaultdict(list)
    for repetition in range(repeat):
        if repetition % 2:
            results["sklearn Pipeline.fit (C=0.5)"].append(sklearn_fit(X, y))
        for label, seconds in cache_round(X, y, cv).items():
            results[label].append(seconds)
        if not repetition % 2:
            results["sklearn Pipeline.fit (C=0.5)"].append(sklearn_fit(X, y))
    cold = statistics.median(results["cold fit (C=1.0)"])
    plain = statistics.median(results["sklearn Pipeline.fit (C=0.5)"])
    predict = statistics.median(results["pipe.predict(X)"])
    rows = []
    for label, times in results.items():
        median = statistics.median(times)
        rows.append(
            {
                "path": label,
                "median s": f"{median:.3f}",
                "min s": f"{min(times):.3f}",
                "max s": f"{max(times):.3f}",
                "cold / this": f"{cold / median:.2f}",
                "this / sklearn fit": f"{median / plain:.2f}",
                "this / predict": f"{median / predict:.2f}",
            }
        )

    def per_round(numerator: str, denominator: str) -> str:
        ratios = [a / b for a, b in zip(results[numerator], results[denominator], strict=True)]
        return (
            f"median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
        )

    note = (
        f"Per round: cold / warm {per_round('cold fit (C=1.0)', 'warm refit (C=0.5)')}; "
        f"identical / predict {per_round('identical refit (C=0.5)', 'pipe.predict(X)')}; "
        f"identical / sklearn fit "
        f"{per_round('identical refit (C=0.5)', 'sklearn Pipeline.fit (C=0.5)')}."
    )
    return pd.DataFrame(rows), note


@contextlib.contextmanager
def patched(breakdown: Breakdown) -> Iterator[None]:
    """Time the parts of ``LineagePipeline.fit`` by wrapping the names it calls."""
    pipeline = mlpipe._pipeline
    chain = mlpipe._chain
    logger = chain._ChainLogger
    mlflow_calls = "other MLflow calls (experiments, stage runs, reuse runs)"
    targets: list[tuple[Any, str, str | Callable[..., str], bool]] = [
        (pipeline, "prepare", "prepare raw input", False),
        (chain, "find_frame_load", "find an earlier load of the frame", False),
        (chain, "log_load", "log a new load run (fingerprint, snapshot)", False),
        (chain, "training_inputs", "read the load's dataset inputs", False),
        (mlpipe.tracking._store, "git_commit", "git rev-parse HEAD", False),
        (chain, "cache_key", "cache keys", False),
        (chain, "lookup", "cache lookups", False),
        (chain, "load_step", "load cached stage (artifact, unpickle)", False),
        (ColumnTransformer, "transform", "reused processing: transform training rows", True),
        (chain, "dumps", "serialize fitted stages", False),
        (pipeline.LineagePipeline, "score", "training score (predict on all rows)", False),
        (Pipeline, "score", "training score (predict on all rows)", False),
        (chain, "evaluate", "cross-validation", False),
        (chain, "log_raw_model", "log raw-input model", False),
        (logger, "_log_graph", "lineage picture", False),
    ]
    for method in (
        "get_experiment_by_name",
        "create_experiment",
        "create_run",
        "set_tag",
        "search_runs",
        "get_run",
        "log_batch",
        "log_inputs",
        "log_artifact",
        "set_terminated",
    ):
        targets.append((mlflow.MlflowClient, method, mlflow_calls, True))
    originals = [(owner, name, owner.__dict__[name]) for owner, name, _, _ in targets]
    fit_step = chain.fit_step

    def fit_label(est: Any, *args: Any, **kwargs: Any) -> str:
        return f"fit {type(est).__name__}"

    try:
        for owner, name, label, top_only in targets:
            setattr(owner, name, breakdown.wrap(label, getattr(owner, name), top_only=top_only))
        chain.fit_step = breakdown.wrap(fit_label, fit_step)
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
        chain.fit_step = fit_step


def breakdown_table(X: pd.DataFrame, y: pd.Series) -> pd.DataFrame:
    """One cold fit, warm refit and identical refit (cv=None), each split into parts."""
    columns = {}
    with fresh_store():
        for label, C in (("cold s", 1.0), ("warm s", 0.5), ("identical s", 0.5)):
            breakdown = Breakdown()
            with patched(breakdown):
                total, _ = timed(lambda C=C: mlpipe.LineagePipeline(steps(C), cv=None).fit(X, y))
            parts = dict(breakdown.seconds)
            parts["the rest (not timed above)"] = total - sum(parts.values())
            parts["total"] = total
            columns[label] = parts
    table = pd.DataFrame(columns).fillna(0.0)
    order = [i for i in table.index if i not in ("the rest (not timed above)", "total")]
    table = table.loc[order + ["the rest (not timed above)", "total"]]
    table = table.map("{:.3f}".format)
    table.index.name = "part"
    return table.reset_index()


# --- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="stage runs in the store")
    parser.add_argument("--rebuild", action="store_true", help="populate a new store")
    parser.add_argument("--workers", type=int, default=2, help="processes that populate")
    parser.add_argument("--calls", type=int, default=50, help="timed calls per query")
    parser.add_argument("--rows", type=int, default=13_000, help="rows of the fitted frame")
    parser.add_argument("--repeat", type=int, default=7, help="repetitions in (b) (median)")
    parser.add_argument("--cv-repeat", type=int, default=3, help="rounds in (b) with cv=5")
    parser.add_argument("--only", choices=("a", "b"), help="run one part only")
    args = parser.parse_args()

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")

    print(f"bench_cache.py, {dt.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}")
    print(
        f"python {platform.python_version()}, mlflow {mlflow.__version__}, "
        f"scikit-learn {sklearn.__version__}, pandas {pd.__version__}, "
        f"sqlalchemy {sqlalchemy.__version__}, mlpipe {mlpipe.__version__} "
        f"from {Path(mlpipe.__file__).parent} "
        f"(repository HEAD {mlpipe.tracking._store.git_commit()})\n"
    )

    if args.only != "b":
        uri, manifest, note = open_store(args)
        syn, real = manifest["synthetic"], manifest["real"]
        counts = ", ".join(f"{n} {s}" for s, n in manifest["counts"].items())
        print(f"(a) Store: {RESULTS.name}/mlflow.db, {note}.")
        print(
            f"    {manifest['runs']} synthetic stage runs ({counts}; {manifest['failed']} FAILED) "
            f"over {DAYS} days, plus 2 real LineagePipeline.fit chains on {real['date']} "
            f"(reused in the 2nd: {real['reused']})."
        )
        print(
            f"    Synthetic date {syn['date']}: {syn['loads_that_day']} FINISHED loads of "
            f"{syn['table']!r}; find_chain({syn['logic']}, {syn['algorithm']}) is found at the "
            f"{syn['chain_at_load']}. newest.\n"
        )
        named = queries(uri, manifest)
        print(f"Latency over {args.calls} calls per query (interleaved), milliseconds:")
        print(time_queries(named, args.calls).to_string(index=False))
        print("\nWhere the time goes (one call each, median of 5; SQLite = execute + fetch):")
        print(profile_queries(named).to_string(index=False))
        print("\nfind_chain's search for the processing runs of the real load, by SQL statement:")
        table, shares = search_runs_sql(uri, manifest)
        print(table.to_string(index=False))
        split = ", ".join(f"{k} {v:.0%}" for k, v in shares.items())
        print(f"Under cProfile (20 searches), own time by package: {split}.")
        print("SQLite's plan for it: " + "; ".join(query_plan(uri, manifest)) + ".")
        print("\nWhat the parts of mlpipe's filter cost (MLflow search_runs, 15 rounds):")
        print(filter_variants(uri, manifest).to_string(index=False))
        print()

    if args.only != "a":
        frame = penguin_frame(args.rows)
        X, y = frame.drop(columns=TARGET), frame[TARGET]
        print(
            f"(b) {args.rows} rows (penguins resampled, seed {SEED}); processing: ColumnTransformer"
            "(StandardScaler + KNNImputer on 5 numeric columns, OneHotEncoder on 2 text columns); "
            "model: LogisticRegression(max_iter=1000). Fresh SQLite store per round.\n"
        )
        # Warm-up: imports, lazy MLflow setup.
        cache_round(penguin_frame(300).drop(columns=TARGET), penguin_frame(300)[TARGET], None)
        for cv, repeat in ((None, args.repeat), (5, args.cv_repeat)):
            title = "cv=None" if cv is None else "cv=5 (the default)"
            print(f"{title}, median of {repeat} rounds, seconds:")
            table, note = cache_table(X, y, cv, repeat)
            print(table.to_string(index=False))
            print(f"{note}\n")
        print("Where one cold fit, warm refit and identical refit (cv=None) spend their time, s:")
        print(breakdown_table(X, y).to_string(index=False))


if __name__ == "__main__":
    main()
