"""How long does ``mlpipe.reproduce`` take against the fit it reproduces, and what does
recording the rebuild recipe cost a fit?

Two chains on the Palmer penguins, resampled with replacement to ``--rows`` (a new
seed for every fit, so every fit is cold: every stage fitted and logged, checked with
``reused_``):

- the demo's chain (the ``plain`` logic, then ``logreg``), with mlpipe's default
  5-fold evaluation;
- the same with the ``rf`` algorithm (a seeded random forest of 100 trees).

For each, it times the fit, then ``mlpipe.reproduce`` of its model run (which reads
the snapshot, refits every stage, compares every stage's output and the predictions,
recomputes the 5-fold evaluation and logs a ``reproduce`` run), and a fit with the
recipe left out (``_chain.write_recipe`` replaced by one that writes nothing), in the
same process on the same SQLite store. The goal (issue 15): reproduce at most 1.2x the
fit, the refit being the floor.

    .venv/bin/python benchmarks/bench_reproduce.py --repeat 3 --rows 344 100000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
from _breakdown import git_state  # benchmarks/ is on sys.path
from palmerpenguins import load_penguins

import mlpipe
from mlpipe import _chain


def _pipeline(algorithm: str) -> mlpipe.LineagePipeline:
    return mlpipe.LineagePipeline(
        [
            ("processing", mlpipe.LOGICS.build("plain")),
            ("model", mlpipe.ALGORITHMS.build(algorithm, target_type="multiclass")),
        ],
        types={"processing": "plain", "model": algorithm},
    )


def _fit(frame: pd.DataFrame, algorithm: str) -> tuple[float, mlpipe.LineagePipeline]:
    pipe = _pipeline(algorithm)
    start = time.perf_counter()
    pipe.fit(frame.drop(columns="species"), frame["species"])
    seconds = time.perf_counter() - start
    assert pipe.reused_ == [], pipe.reused_
    return seconds, pipe


def _without_recipe(*args, **kwargs) -> dict[str, str]:
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, nargs="+", default=[344, 100_000])
    parser.add_argument("--algorithms", nargs="+", default=["logreg", "rf"])
    args = parser.parse_args()
    penguins = load_penguins()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp, 'mlflow.db')}")
        seed = 0
        for n in args.rows:
            for algorithm in args.algorithms:
                fits, reproductions, bare = [], [], []
                for _ in range(args.repeat):
                    seed += 1
                    frame = penguins.sample(n=n, replace=n > len(penguins), random_state=seed)
                    seconds, pipe = _fit(frame.reset_index(drop=True), algorithm)
                    fits.append(seconds)
                    start = time.perf_counter()
                    report = mlpipe.reproduce(pipe.run_ids_["model"])
                    reproductions.append(time.perf_counter() - start)
                    assert report.identical, str(report)
                    seed += 1
                    frame = penguins.sample(n=n, replace=n > len(penguins), random_state=seed)
                    written = _chain.write_recipe
                    _chain.write_recipe = _without_recipe
                    try:
                        bare.append(_fit(frame.reset_index(drop=True), algorithm)[0])
                    finally:
                        _chain.write_recipe = written
                fit = statistics.median(fits)
                for path, times, against in (
                    ("fit (recipe recorded)", fits, fit),
                    ("fit without the recipe", bare, fit),
                    ("reproduce", reproductions, fit),
                ):
                    rows.append(
                        {
                            "rows": n,
                            "chain": f"plain+{algorithm}",
                            "path": path,
                            "median s": f"{statistics.median(times):.3f}",
                            "min s": f"{min(times):.3f}",
                            "max s": f"{max(times):.3f}",
                            "ratio": f"{statistics.median(times) / against:.2f}",
                            "vs": "fit (recipe recorded)",
                        }
                    )
    print(pd.DataFrame(rows).to_string(index=False))
    print(git_state())


if __name__ == "__main__":
    sys.exit(main())
