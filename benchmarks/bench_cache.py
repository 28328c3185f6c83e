"""What does the stage cache save?

On Palmer penguins resampled to ``--rows`` (default 13,000) rows: a cold fit into a
fresh store, a warm refit with only the model's ``C`` changed (the processing stage
is reused) and an identical refit (every stage reused), next to ``pipe.predict(X)``
and a plain scikit-learn ``Pipeline.fit``; with ``cv=None`` (``--repeat`` rounds),
then with the default ``cv=5`` (``--cv-repeat`` rounds); then one cold, warm and
identical fit timed piece by piece. (Its former part (a), the queries on a store of
10,000 runs, is ``bench_lookups.py``.)

    .venv/bin/python benchmarks/bench_cache.py
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import platform
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import sklearn
import sqlalchemy
from _breakdown import Breakdown  # benchmarks/ is on sys.path when a script runs
from palmerpenguins import load_penguins
from sklearn.compose import ColumnTransformer
from sklearn.impute import KNNImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlpipe
import mlpipe._cache
import mlpipe._chain
import mlpipe._pipeline
import mlpipe.model._raw
import mlpipe.tracking._store

TARGET = "species"
SEED = 0
NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
TEXT = ["island", "sex"]


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
    parser.add_argument("--rows", type=int, default=13_000, help="rows of the fitted frame")
    parser.add_argument("--repeat", type=int, default=7, help="repetitions (median)")
    parser.add_argument("--cv-repeat", type=int, default=3, help="rounds with cv=5")
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

    frame = penguin_frame(args.rows)
    X, y = frame.drop(columns=TARGET), frame[TARGET]
    print(
        f"{args.rows} rows (penguins resampled, seed {SEED}); processing: ColumnTransformer"
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
