"""How long does ``LineagePipeline.fit`` take next to doing the same by hand with MLflow?

Both paths fit the same chain (the demo's ColumnTransformer + LogisticRegression,
cloned from one template) on the same raw Palmer penguins frame, resampled with
replacement to each size in ``--rows``:

* by hand: one ``mlflow.start_run()``, ``mlflow.log_input(mlflow.data.from_pandas(...))``,
  ``Pipeline.fit``, ``mlflow.sklearn.log_model(..., input_example=X.head(5))``, and a
  ``cross_validate`` of the same pipeline (5 folds, mlpipe's three default scorers)
  whose mean and standard deviation are logged with ``mlflow.log_metrics``;
* by hand without the ``cross_validate``;
* mlpipe, default settings (5-fold evaluation of the whole chain, folds on every core
  when it pays), compared with the first;
* mlpipe with ``n_jobs=1`` (folds one after another);
* mlpipe with ``cv=None`` (no evaluation), compared with by hand without cross_validate.

Every repetition of every path gets a fresh SQLite store whose tables are created
before the clock starts. The order of the paths alternates between repetitions.
Then one mlpipe fit on the largest frame is timed piece by piece.

    .venv/bin/python benchmarks/bench_fit.py --repeat 5
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
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
import mlflow.sklearn
import pandas as pd
import sklearn
from _breakdown import Breakdown, git_state  # benchmarks/ is on sys.path when a script runs
from mlflow.exceptions import MlflowException
from palmerpenguins import load_penguins
from sklearn.base import clone
from sklearn.model_selection import cross_validate
from sklearn.pipeline import Pipeline

import mlpipe
import mlpipe._chain
import mlpipe._evaluation
import mlpipe._pipeline
import mlpipe.data._dataset
import mlpipe.model._raw
import mlpipe.tracking._store
from mlpipe.cli._demo import penguins_pipeline

TARGET = "species"
SEED = 0
BY_HAND = "by hand, cross_validate"
BY_HAND_NO_CV = "by hand, no cv"
MLPIPE_CV5 = "mlpipe (cv=5)"
MLPIPE_SEQUENTIAL = "mlpipe (cv=5, n_jobs=1)"
MLPIPE_NO_CV = "mlpipe (cv=None)"
PATHS = (BY_HAND, MLPIPE_CV5, MLPIPE_SEQUENTIAL, BY_HAND_NO_CV, MLPIPE_NO_CV)
# Each path's time is compared with this one's.
BASELINE = {
    BY_HAND: BY_HAND,
    MLPIPE_CV5: BY_HAND,
    MLPIPE_SEQUENTIAL: BY_HAND,
    BY_HAND_NO_CV: BY_HAND_NO_CV,
    MLPIPE_NO_CV: BY_HAND_NO_CV,
}
SCORING = ("accuracy", "balanced_accuracy", "f1_macro")  # mlpipe's default for a classifier


# --- data, template and stores ------------------------------------------------------


def penguin_frame(rows: int) -> pd.DataFrame:
    """The raw penguins (344 rows, missing values, text columns) resampled to ``rows``."""
    raw = load_penguins()
    return raw.sample(n=rows, replace=True, random_state=SEED).reset_index(drop=True)


def template() -> Pipeline:
    """The demo chain as a plain, unfitted scikit-learn Pipeline."""
    return Pipeline(penguins_pipeline().steps)


@contextlib.contextmanager
def fresh_store() -> Iterator[str]:
    """A new SQLite store, tables already created, set as the tracking URI.

    Yields the id of an experiment for the by-hand run, created here (untimed)
    with its artifacts beside the database rather than in ``./mlruns``.
    """
    with tempfile.TemporaryDirectory(prefix="bench_fit_") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        client.search_experiments()  # creates the tables
        experiment_id = client.create_experiment(
            "by-hand", artifact_location=Path(tmp, "by-hand").as_uri()
        )
        try:
            yield experiment_id
        finally:
            left = mlflow.active_run()
            while mlflow.active_run() is not None:
                mlflow.end_run()
            if left is not None:
                raise RuntimeError(f"Run {left.info.run_id} was left active.")


# --- the paths ---------------------------------------------------------------------


def fit_by_hand(
    chain: Pipeline,
    frame: pd.DataFrame,
    experiment_id: str,
    serialization: str | None,
    laps: dict[str, float] | None = None,
    cv: int | None = 5,
) -> None:
    """The by-hand path; ``laps`` receives the seconds of each step."""
    laps = {} if laps is None else laps
    X, y = frame.drop(columns=TARGET), frame[TARGET]
    extra = {} if serialization is None else {"serialization_format": serialization}
    start = time.perf_counter()
    with mlflow.start_run(experiment_id=experiment_id):
        laps["start_run"] = time.perf_counter() - start
        mlflow.log_input(mlflow.data.from_pandas(frame, targets=TARGET), context="training")
        laps["log_input(from_pandas(...))"] = time.perf_counter() - start - sum(laps.values())
        chain.fit(X, y)
        laps["Pipeline.fit"] = time.perf_counter() - start - sum(laps.values())
        mlflow.sklearn.log_model(chain, name="model", input_example=X.head(5), **extra)
        laps["mlflow.sklearn.log_model"] = time.perf_counter() - start - sum(laps.values())
        if cv is not None:
            scores = cross_validate(clone(chain), X, y, cv=cv, scoring=SCORING)
            mlflow.log_metrics(
                {
                    f"cv_{name}_{stat}": float(getattr(scores[f"test_{name}"], stat)())
                    for name in SCORING
                    for stat in ("mean", "std")
                }
            )
            laps["cross_validate + log_metrics"] = time.perf_counter() - start - sum(laps.values())
    laps["end_run"] = time.perf_counter() - start - sum(laps.values())


def fit_mlpipe(
    chain: Pipeline, frame: pd.DataFrame, cv: int | None, n_jobs: int | None = None
) -> mlpipe.LineagePipeline:
    X, y = frame.drop(columns=TARGET), frame[TARGET]
    return mlpipe.LineagePipeline(chain.steps, cv=cv, n_jobs=n_jobs).fit(X, y)


def run_path(path: str, frame: pd.DataFrame, serialization: str | None) -> float:
    """Seconds one fit of ``path`` takes on a fresh store."""
    chain = clone(template())
    with fresh_store() as experiment_id:
        start = time.perf_counter()
        if path in (BY_HAND, BY_HAND_NO_CV):
            fit_by_hand(
                chain, frame, experiment_id, serialization, cv=5 if path == BY_HAND else None
            )
        else:
            fit_mlpipe(
                chain,
                frame,
                cv=None if path == MLPIPE_NO_CV else 5,
                n_jobs=1 if path == MLPIPE_SEQUENTIAL else None,
            )
        return time.perf_counter() - start


def by_hand_serialization(frame: pd.DataFrame) -> tuple[str | None, str]:
    """MLflow 3's default (skops) if it accepts the chain, else cloudpickle, and why."""
    try:
        run_path(BY_HAND, frame, None)
    except MlflowException as error:
        if "untrusted types" not in str(error):
            raise
        first = str(error).split(". ")[0]
        return "cloudpickle", f"skops refused the chain ({first}: {_untrusted(error)})"
    return None, "MLflow's default (skops)"


def _untrusted(error: Exception) -> str:
    text = str(error)
    return text[text.find("[") : text.find("]") + 1] if "[" in text else "?"


# --- where mlpipe's time goes --------------------------------------------------------


@contextlib.contextmanager
def patched(breakdown: Breakdown) -> Iterator[None]:
    """Time mlpipe's parts by wrapping the names ``LineagePipeline.fit`` calls."""
    chain_module = mlpipe._chain
    dataset = mlpipe.data._dataset
    client = mlflow.MlflowClient
    stage_names = {}

    def fit_label(est: Any, *args: Any, **kwargs: Any) -> str:
        return f"fit stage {stage_names.get(id(est), '?')} ({type(est).__name__})"

    targets: list[tuple[Any, str, str | Callable[..., str], bool]] = [
        (mlpipe._pipeline, "prepare", "prepare raw input (normalise missing values)", False),
        (mlpipe.model._raw, "prepare", "prepare raw input (normalise missing values)", False),
        (chain_module, "as_frame", "load run: join X and y", False),
        (dataset, "fingerprint", "load run: fingerprint", False),
        (dataset, "dataset_entity", "load run: dataset entity (schema of 100 rows)", False),
        (chain_module, "log_load", "load run: MLflow logging", False),
        (chain_module, "find_frame_load", "load run: look for an identical frame", False),
        (chain_module, "training_inputs", "stage runs: read the load's dataset inputs", False),
        (mlpipe.tracking._store, "git_commit", "git rev-parse HEAD (subprocess)", False),
        (chain_module, "lookup", "cache lookups", False),
        (chain_module, "dumps", "stage runs: serialize fitted stages", False),
        (chain_module, "fit_step", fit_label, False),
        (chain_module, "evaluate", "evaluation: folds, scores, predictions table", False),
        (chain_module, "log_raw_model", "log_raw_model (model logging)", False),
        (chain_module, "render", "lineage picture", False),
    ]
    # Stage-run logging: every MlflowClient call made by the stage loop itself
    # (calls made inside the load run or the model logging count there).
    for method in (
        "get_experiment_by_name",
        "create_experiment",
        "create_run",
        "set_tag",
        "search_runs",
        "log_batch",
        "log_inputs",
        "log_artifact",
        "log_table",
        "set_terminated",
    ):
        targets.append((client, method, "stage runs: MLflow logging", True))
    # The plots: their logging, once drawn (in the workers, meanwhile, when folds run in
    # parallel; then this is mostly waiting for them).
    evaluation = mlpipe._evaluation
    targets.append((evaluation, "_start_plots", "evaluation: start the plots", False))
    originals = [(owner, name, owner.__dict__[name]) for owner, name, _, _ in targets]
    start_plots = evaluation._start_plots

    def timed_plots(*args: Any, **kwargs: Any) -> Callable[[], None]:
        return breakdown.wrap("evaluation: plots (drawn and logged)", start_plots(*args, **kwargs))

    try:
        for owner, name, label, top_only in targets:
            setattr(owner, name, breakdown.wrap(label, getattr(owner, name), top_only=top_only))
        evaluation._start_plots = timed_plots
        yield stage_names
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def breakdown_table(frame: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """One default mlpipe fit on ``frame``, split into parts; and its total seconds."""
    breakdown = Breakdown()
    chain = clone(template())
    with fresh_store(), patched(breakdown) as stage_names:
        stage_names.update({id(est): name for name, est in chain.steps})
        start = time.perf_counter()
        fit_mlpipe(chain, frame, cv=5)
        total = time.perf_counter() - start
    rows = [
        {"part": name, "calls": breakdown.calls[name], "seconds": seconds}
        for name, seconds in breakdown.seconds.items()
    ]
    rest = total - sum(breakdown.seconds.values())
    rows.append({"part": "the rest (not timed above)", "calls": "", "seconds": rest})
    table = pd.DataFrame(rows)
    table["share"] = (table["seconds"] / total).map("{:.0%}".format)
    table["seconds"] = table["seconds"].map("{:.4f}".format)
    return table, total


# --- main -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per cell (median)")
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[20_000, 1_000], help="frame sizes to fit on"
    )
    args = parser.parse_args()

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    # MLflow's hint about integer columns (``year``) in inferred schemas, once per log.
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")

    print(f"bench_fit.py, {dt.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}")
    print(
        f"python {platform.python_version()}, mlflow {mlflow.__version__}, "
        f"scikit-learn {sklearn.__version__}, pandas {pd.__version__}, mlpipe {mlpipe.__version__}"
    )
    print(f"{git_state()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"repeat={args.repeat} (median), rows={args.rows}, fresh SQLite store per fit\n")

    # Warm-up (imports, lazy MLflow setup), untimed; it also finds out whether
    # MLflow's default skops serialization takes the chain.
    small = penguin_frame(200)
    serialization, why = by_hand_serialization(small)
    for path in PATHS:
        run_path(path, small, serialization)
    # joblib's worker processes, which a session starts at its first parallel
    # evaluation and keeps (that first one costs a few seconds more).
    with fresh_store():
        fit_mlpipe(clone(template()), small, cv=5, n_jobs=-1)
    print(f"By-hand log_model serialization: {serialization or 'skops'}: {why}.\n")

    results: dict[tuple[int, str], list[float]] = defaultdict(list)
    for rows in args.rows:
        frame = penguin_frame(rows)
        for repetition in range(args.repeat):
            order = PATHS if repetition % 2 == 0 else PATHS[::-1]
            for path in order:
                results[rows, path].append(run_path(path, frame, serialization))

    table = []
    for rows in args.rows:
        for path in PATHS:
            by_hand = statistics.median(results[rows, BASELINE[path]])
            times = results[rows, path]
            median = statistics.median(times)
            table.append(
                {
                    "rows": rows,
                    "path": path,
                    "median s": f"{median:.3f}",
                    "min s": f"{min(times):.3f}",
                    "max s": f"{max(times):.3f}",
                    "ratio": f"{median / by_hand:.2f}",
                    "vs": BASELINE[path],
                }
            )
    print("Fit, log and model logging, seconds per fit:")
    print(pd.DataFrame(table).to_string(index=False))

    largest = max(args.rows)
    frame = penguin_frame(largest)
    parts, total = breakdown_table(frame)
    print(f"\nWhere one mlpipe fit (cv=5) on {largest} rows spends its {total:.2f} s:")
    print(parts.to_string(index=False))

    laps: dict[str, float] = {}
    with fresh_store() as experiment_id:
        fit_by_hand(clone(template()), frame, experiment_id, serialization, laps)
    print(f"\nWhere one by-hand fit on {largest} rows spends its {sum(laps.values()):.2f} s:")
    steps = pd.DataFrame({"step": list(laps), "seconds": list(laps.values())})
    steps["seconds"] = steps["seconds"].map("{:.4f}".format)
    print(steps.to_string(index=False))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
