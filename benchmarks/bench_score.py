"""Batch scoring: rows per second and peak memory of one predict call against ``mlpipe.score``.

The demo chain (the ``plain`` logic, then ``logreg``; ``cv=None``) is fitted once on
the raw Palmer penguins into a SQLite store in a temporary directory. For each size
in ``--rows`` (default 1,000,000 and 10,000,000) a Parquet file of raw records is
generated once, untimed, in its own process: the penguins resampled with
replacement (seed 0), and 2 % of the cells of every feature column set missing on
top of the penguins' own missing values, written 500,000 rows at a time in row
groups of 100,000 rows. The files are generated, not committed.

Then every path runs in a FRESH Python process, so that its peak memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own. Both paths do the same
job, from the file to a Parquet file of predictions, and both load the model inside
the clock:

* ``one predict call``: ``pd.read_parquet`` of the whole file,
  ``mlflow.pyfunc.load_model``, one ``predict`` on the whole frame, ``to_parquet``
  of the predictions (its ``predict`` alone is timed too);
* ``mlpipe.score``: ``mlpipe.score(run_id, path, output=..., chunk_rows=...)``,
  which also fingerprints the input, hashes the output and logs a score run.

Every process imports pandas, MLflow and mlpipe and opens the store before the
clock starts; "peak - before" is what the work added. The order of the paths
alternates between repetitions. The goal (issue 16): ``mlpipe.score`` within 1.2x
of the single call's rows per second, and its peak memory flat as the input grows
10x.

    .venv/bin/python benchmarks/bench_score.py --rows 1000000 10000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEED = 0
MB = 1e6
MISSING_SHARE = 0.02
ONE_CALL = "one predict call"
CHUNKED = "mlpipe.score"
PATHS = (ONE_CALL, CHUNKED)


def peak_rss_mb() -> float:
    """``ru_maxrss`` of this process in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


# --- set-up, each in its own process ----------------------------------------------------


def fit(store: Path) -> str:
    """Fit the demo chain into ``store``; return its final stage's run id."""
    import mlflow
    from palmerpenguins import load_penguins

    from mlpipe.cli._demo import penguins_pipeline

    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    raw = load_penguins()
    pipe = penguins_pipeline().set_params(cv=None).fit(raw.drop(columns="species"), raw["species"])
    return str(pipe.run_ids_["model"])


def generate(path: Path, rows: int) -> None:
    """Resampled penguins with more missing values, written in pieces (bounded memory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from palmerpenguins import load_penguins

    raw = load_penguins().drop(columns="species")
    rng = np.random.default_rng(SEED)
    writer = None
    step = 500_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        piece = raw.iloc[rng.integers(0, len(raw), n)].reset_index(drop=True)
        for name in piece.columns:
            if name == "year":  # kept whole: an integer column, as the model was trained on
                continue
            missing = rng.random(n) < MISSING_SHARE
            piece[name] = piece[name].mask(missing)
        table = pa.Table.from_pandas(piece, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table, row_group_size=100_000)
    assert writer is not None
    writer.close()


# --- one path, in a fresh process ------------------------------------------------------


def child(path: str, data: Path, store: Path, run_id: str, chunk_rows: int) -> dict[str, Any]:
    import gc
    import logging
    import warnings

    import mlflow
    import pandas as pd

    import mlpipe

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ["MLPIPE_PROGRESS"] = "0"
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    run = mlflow.MlflowClient().get_run(run_id)  # the store opened, untimed
    uri = run.data.tags["mlpipe.model_uri"]
    output = Path(tempfile.mkdtemp(dir=store)) / "predictions.parquet"
    gc.collect()
    before = rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    predict_s = None
    start = time.perf_counter()
    if path == ONE_CALL:
        frame = pd.read_parquet(data)
        model = mlflow.pyfunc.load_model(uri)
        started = time.perf_counter()
        predictions = model.predict(frame)
        predict_s = time.perf_counter() - started
        pd.DataFrame({"prediction": predictions}).to_parquet(output, index=False)
        rows = len(frame)
    else:
        done = mlpipe.score(run_id, data, output=output, chunk_rows=chunk_rows)
        rows = int(mlflow.get_run(done).data.params["rows"])
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    shutil.rmtree(output.parent, ignore_errors=True)
    return {
        "path": path,
        "rows": rows,
        "seconds": seconds,
        "predict_s": predict_s,
        "user_s": after.ru_utime - usage.ru_utime,
        "sys_s": after.ru_stime - usage.ru_stime,
        "rss_before_mb": before,
        "peak_mb": peak_rss_mb(),
    }


def run_child(*args: str) -> dict[str, Any]:
    command = [sys.executable, __file__, *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as error:
        sys.stderr.write(error.stderr)
        raise
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the parent ------------------------------------------------------------------------


def table(results: dict[int, dict[str, list[dict[str, Any]]]]) -> Any:
    import pandas as pd

    rows = []
    sizes = sorted(results)
    for size in sizes:
        base = results[size][ONE_CALL]
        base_rate = statistics.median(r["rows"] / r["seconds"] for r in base)
        base_peak = statistics.median(r["peak_mb"] - r["rss_before_mb"] for r in base)
        for path in PATHS:
            runs = results[size][path]
            seconds = statistics.median(r["seconds"] for r in runs)
            rate = statistics.median(r["rows"] / r["seconds"] for r in runs)
            added = statistics.median(r["peak_mb"] - r["rss_before_mb"] for r in runs)
            first = results[sizes[0]][path]
            added_first = statistics.median(r["peak_mb"] - r["rss_before_mb"] for r in first)
            predict = [r["predict_s"] for r in runs if r["predict_s"] is not None]
            rows.append(
                {
                    "rows": f"{size:,}",
                    "path": path,
                    "median s": f"{seconds:.1f}",
                    "of which predict s": f"{statistics.median(predict):.1f}" if predict else "",
                    "rows/s": f"{rate:,.0f}",
                    "peak MB": f"{statistics.median(r['peak_mb'] for r in runs):,.0f}",
                    "peak - before MB": f"{added:,.0f}",
                    "rows/s vs one call": f"{rate / base_rate:.2f}",
                    "memory vs one call": f"{added / base_peak:.2f}",
                    f"memory vs {sizes[0]:,} rows": f"{added / added_first:.2f}",
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[1_000_000, 10_000_000], help="input sizes"
    )
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per path")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="mlpipe.score's chunks")
    parser.add_argument(
        "--workdir", type=Path, help="keep the store and the inputs here (default: a temp dir)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--fit", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.fit:
        print(json.dumps(fit(args.store)))
        return
    if args.generate:
        generate(args.generate, args.rows[0])
        print(json.dumps(None))
        return
    if args.child:
        result = child(args.child, args.data, args.store, args.run_id, args.chunk_rows)
        print(json.dumps(result))
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_score_"))
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store"
    store.mkdir(exist_ok=True)
    import mlflow  # noqa: F401  (only for the version line)

    print(f"bench_score.py, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.platform()}")
    print(
        f"python {platform.python_version()}, mlflow {mlflow.__version__}, cores {os.cpu_count()}"
    )
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    run_id = run_child("--fit", "--store", str(store))
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for size in args.rows:
        data = work / f"penguins_{size}.parquet"
        if not data.exists():
            started = time.perf_counter()
            run_child("--generate", str(data), "--rows", str(size))
            print(
                f"generated {data.name} ({data.stat().st_size / MB:,.0f} MB) in "
                f"{time.perf_counter() - started:.0f} s"
            )
        results[size] = {path: [] for path in PATHS}
        for repetition in range(args.repeat):
            order = PATHS if repetition % 2 == 0 else PATHS[::-1]
            for path in order:
                result = run_child(
                    "--child",
                    path,
                    "--data",
                    str(data),
                    "--store",
                    str(store),
                    "--run-id",
                    run_id,
                    "--chunk-rows",
                    str(args.chunk_rows),
                )
                results[size][path].append(result)
                print(
                    f"  {size:>11,} {path:<17} {result['seconds']:7.1f} s, "
                    f"peak {result['peak_mb']:,.0f} MB",
                    flush=True,
                )
    print(f"\nchunk_rows={args.chunk_rows}, repeat={args.repeat} (medians)")
    print(table(results).to_string(index=False))
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
