"""How much faster is a refit that changes only the model, with the default evaluation on?

A chain with an expensive processing stage (KNN imputation) is fitted cold into a fresh
SQLite store, then refitted with only the model's ``C`` changed: the processing stage
is reused and, with ``cv=5``, so are its five folds (their outputs were kept on its
run by the cold fit). The same is done by hand with scikit-learn's own answer to this,
``Pipeline(memory=joblib.Memory(...))`` under ``cross_validate`` plus a final fit,
whose fold transforms joblib caches on disk; and with mlpipe's folds one at a time
(``n_jobs=1``) next to its default (``n_jobs=None``: every core when it pays).

    .venv/bin/python benchmarks/bench_folds.py [--repeat 5] [--rows 13000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections import defaultdict

import joblib
import mlflow
import numpy as np
import pandas as pd
import sklearn
from palmerpenguins import load_penguins
from sklearn.compose import ColumnTransformer
from sklearn.impute import KNNImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_validate
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlpipe

NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
TEXT = ["island", "sex"]


def frame(rows: int) -> tuple[pd.DataFrame, pd.Series]:
    raw = load_penguins().sample(n=rows, replace=True, random_state=0).reset_index(drop=True)
    return raw.drop(columns="species"), raw["species"]


def steps(C: float) -> list[tuple[str, object]]:
    # Scaled first: unscaled, body_mass_g alone decides every neighbour.
    processing = ColumnTransformer(
        [
            ("numeric", make_pipeline(StandardScaler(), KNNImputer()), NUMERIC),
            ("text", OneHotEncoder(handle_unknown="ignore"), TEXT),
        ]
    )
    return [("processing", processing), ("model", LogisticRegression(C=C, max_iter=1000))]


def mlpipe_pair(
    X: pd.DataFrame, y: pd.Series, cv: int | None, n_jobs: int | None
) -> tuple[float, float]:
    """(cold, warm) seconds in a fresh store; checks that the warm fit reused processing."""
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.MlflowClient().search_experiments()  # tables created untimed
        times = []
        for C in (1.0, 0.5):
            start = time.perf_counter()
            pipe = mlpipe.LineagePipeline(steps(C), cv=cv, n_jobs=n_jobs).fit(X, y)
            times.append(time.perf_counter() - start)
        assert pipe.reused_ == ["processing"], pipe.reused_
        mlflow.set_tracking_uri(None)
    return times[0], times[1]


def by_hand_pair(X: pd.DataFrame, y: pd.Series, cv: int | None) -> tuple[float, float]:
    """(cold, warm) seconds of Pipeline(memory=...): cross_validate (when cv) then fit."""
    with tempfile.TemporaryDirectory() as tmp:
        memory = joblib.Memory(tmp, verbose=0)
        times = []
        for C in (1.0, 0.5):
            start = time.perf_counter()
            chain = Pipeline(steps(C), memory=memory)
            if cv is not None:
                cross_validate(
                    chain, X, y, cv=cv, scoring=("accuracy", "balanced_accuracy", "f1_macro")
                )
            chain.fit(X, y)
            times.append(time.perf_counter() - start)
    return times[0], times[1]


PATHS = {
    "mlpipe, cv=5": lambda X, y: mlpipe_pair(X, y, 5, None),
    "mlpipe, cv=5, n_jobs=1": lambda X, y: mlpipe_pair(X, y, 5, 1),
    "Pipeline(memory=...) + cross_validate": lambda X, y: by_hand_pair(X, y, 5),
    "mlpipe, cv=None": lambda X, y: mlpipe_pair(X, y, None, None),
    "Pipeline(memory=...), no cv": lambda X, y: by_hand_pair(X, y, None),
}
TARGETS = {"mlpipe, cv=5": "3x (stretch 5x)", "mlpipe, cv=None": "5x"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rows", type=int, default=13_000)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")

    print(f"bench_folds.py, {dt.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}")
    print(
        f"python {platform.python_version()}, mlflow {mlflow.__version__}, "
        f"scikit-learn {sklearn.__version__}, joblib {joblib.__version__}, "
        f"mlpipe {mlpipe.__version__}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    X, y = frame(args.rows)
    print(f"{args.rows} rows, repeat={args.repeat} (median), a fresh store per pair\n")
    # Warm-up, untimed: imports, and joblib's worker processes, which a session starts
    # at its first parallel evaluation and keeps (the first one costs a few seconds more).
    small_X, small_y = frame(500)
    for path in PATHS.values():
        path(small_X, small_y)
    mlpipe_pair(small_X, small_y, 5, 2)

    cold: dict[str, list[float]] = defaultdict(list)
    warm: dict[str, list[float]] = defaultdict(list)
    for repetition in range(args.repeat):
        names = list(PATHS) if repetition % 2 == 0 else list(PATHS)[::-1]
        for name in names:
            c, w = PATHS[name](X, y)
            cold[name].append(c)
            warm[name].append(w)
    rows = []
    for name in PATHS:
        c, w = statistics.median(cold[name]), statistics.median(warm[name])
        within = statistics.median(np.array(cold[name]) / np.array(warm[name]))
        rows.append(
            {
                "path": name,
                "cold s": f"{c:.2f}",
                "warm s": f"{w:.2f}",
                "cold/warm": f"{c / w:.1f}x",
                "per round": f"{within:.1f}x",
                "target": TARGETS.get(name, ""),
            }
        )
    print("Cold fit (C=1) and warm refit (C=0.5, processing reused), seconds, medians:")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
