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
from mlflow.utils import rest_utils  # noqa: E402
from palmerpenguins import load_penguins  # noqa: E402

import mlpipe  # noqa: E402
from mlpipe import _chain  # noqa: E402
from mlpipe.cli._demo import penguins_pipeline  # noqa: E402
from tests._server import TrackingServer  # noqa: E402


class _Counted:
    """Counts the HTTP requests MLflow's client sends, and times mlpipe's register()."""

    def __init__(self) -> None:
        self.requests = 0
        self.register_seconds = 0.0
        send, register = rest_utils.http_request, _chain.register

        def counted(*args, **kwargs):
            self.requests += 1
            return send(*args, **kwargs)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return register(*args, **kwargs)
            finally:
                self.register_seconds += time.perf_counter() - start

        rest_utils.http_request = counted
        _chain.register = timed

    def reset(self) -> None:
        self.requests, self.register_seconds = 0, 0.0


def _fit(frame, registered: str | None, cv: int | None, counted: _Counted) -> tuple[float, ...]:
    pipe = penguins_pipeline().set_params(registered_model_name=registered, cv=cv)
    counted.reset()
    start = time.perf_counter()
    pipe.fit(frame.drop(columns="species"), frame["species"])
    seconds = time.perf_counter() - start
    assert pipe.reused_ == [], pipe.reused_  # cold: nothing taken from the cache
    assert (pipe.model_version_ is not None) == (registered is not None)
    return seconds, counted.requests, counted.register_seconds


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
            counted = _Counted()
            times: dict[str, list[tuple[float, ...]]] = {"not registered": [], "registered": []}
            seed = 0
            # One warm-up fit of each kind: imports, the experiments, the registered model.
            for registered in (None, "penguins"):
                seed += 1
                frame = raw.sample(n=args.rows, replace=True, random_state=seed)
                _fit(frame, registered, cv, counted)
            for _ in range(args.repeat):
                for label, registered in (("not registered", None), ("registered", "penguins")):
                    seed += 1
                    frame = raw.sample(n=args.rows, replace=True, random_state=seed)
                    times[label].append(_fit(frame, registered, cv, counted))
        finally:
            server.stop()
    print(f"mlpipe {mlpipe.__version__}, {git_state()}, mlflow {mlflow.__version__}")
    print(f"cold fits against mlflow server, rows={args.rows}, cv={cv}, repeat={args.repeat}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end (2 cores here)")
    print(
        f"{'fit':>15} {'median s':>9} {'min s':>7} {'max s':>7} {'requests':>9} "
        f"{'in register ms':>15}"
    )
    for label, rows in times.items():
        wall = [r[0] for r in rows]
        print(
            f"{label:>15} {statistics.median(wall):9.3f} {min(wall):7.3f} {max(wall):7.3f} "
            f"{statistics.median(r[1] for r in rows):9.0f} "
            f"{statistics.median(r[2] for r in rows) * 1000:15.1f}"
        )
    base = statistics.median(r[0] for r in times["not registered"])
    with_ = statistics.median(r[0] for r in times["registered"])
    inside = statistics.median(r[2] for r in times["registered"])
    print(f"ratio of medians, registered / not registered: {with_ / base:.3f}")
    print(
        f"registration itself: {inside * 1000:.0f} ms median, "
        f"{inside / with_:.1%} of a registered fit's median"
    )


if __name__ == "__main__":
    main()
