"""What does registering the model cost a cold fit, against a real ``mlflow server``?

The demo's chain (the ``plain`` logic, then ``logreg``) is fitted on the Palmer
penguins, resampled with replacement to ``--rows`` with a new seed for every fit, so
that every fit is cold (every stage fitted and logged, the script checks
``reused_``). Fits alternate between ``registered_model_name=None`` and
``registered_model_name="penguins"`` (a new version each time), against one
``mlflow server`` (SQLite backend, proxied artifacts, one worker) started for the
run. Both kinds of fit log the same named model with its scores on its dataset and
the same run descriptions: the difference is the registration alone (one
``create_registered_model``, already existing after the first, and one
``create_model_version`` carrying the chain as tags; the server tags the logged model
with its version itself).

It prints each kind's median, min and max wall time, and the ratio of medians, in the
same run:

    .venv/bin/python benchmarks/bench_register.py --repeat 5
    .venv/bin/python benchmarks/bench_register.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests._server: the server helper the tests use

import mlflow  # noqa: E402
from _breakdown import git_state  # noqa: E402  # benchmarks/ is on sys.path
from palmerpenguins import load_penguins  # noqa: E402

import mlpipe  # noqa: E402
from mlpipe.cli._demo import penguins_pipeline  # noqa: E402
from tests._server import TrackingServer  # noqa: E402


def _fit(frame, registered: str | None, cv: int | None) -> float:
    pipe = penguins_pipeline().set_params(registered_model_name=registered, cv=cv)
    start = time.perf_counter()
    pipe.fit(frame.drop(columns="species"), frame["species"])
    seconds = time.perf_counter() - start
    assert pipe.reused_ == [], pipe.reused_  # cold: nothing taken from the cache
    assert (pipe.model_version_ is not None) == (registered is not None)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="fits of each kind")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--cv", type=int, default=5, help="folds (0: cv=None)")
    parser.add_argument("--quick", action="store_true", help="--repeat 2 --rows 344")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.rows = 2, 344
    cv = args.cv or None
    raw = load_penguins()
    with tempfile.TemporaryDirectory() as tmp:
        server = TrackingServer(
            f"sqlite:///{tmp}/server.db", Path(tmp, "artifacts"), Path(tmp, "server.log")
        ).start()
        try:
            os.environ["MLFLOW_TRACKING_URI"] = server.url
            mlflow.set_tracking_uri(server.url)
            times: dict[str, list[float]] = {"not registered": [], "registered": []}
            seed = 0
            # One warm-up fit of each kind: imports, the experiments, the registered model.
            for registered in (None, "penguins"):
                seed += 1
                _fit(raw.sample(n=args.rows, replace=True, random_state=seed), registered, cv)
            for _ in range(args.repeat):
                for label, registered in (("not registered", None), ("registered", "penguins")):
                    seed += 1
                    frame = raw.sample(n=args.rows, replace=True, random_state=seed)
                    times[label].append(_fit(frame, registered, cv))
        finally:
            server.stop()
    print(f"mlpipe {mlpipe.__version__}, {git_state()}, mlflow {mlflow.__version__}")
    print(f"cold fits against mlflow server, rows={args.rows}, cv={cv}, repeat={args.repeat}")
    print(f"{'fit':>15} {'median s':>9} {'min s':>7} {'max s':>7}")
    for label, values in times.items():
        print(f"{label:>15} {statistics.median(values):9.3f} {min(values):7.3f} {max(values):7.3f}")
    base = statistics.median(times["not registered"])
    extra = statistics.median(times["registered"]) - base
    print(
        f"ratio registered / not registered: {statistics.median(times['registered']) / base:.3f}"
        f" ({extra * 1000:+.0f} ms median)"
    )


if __name__ == "__main__":
    main()
