"""Batch scoring on Spark ``local[2]`` against ``mlpipe.score`` chunked on one machine.

The same chain, inputs and seed as ``bench_score.py`` (whose set-up this reuses): the
demo chain fitted once into a SQLite store, and for each size in ``--rows`` a Parquet
file of the penguins resampled with 2 % more missing values, generated (not committed).

Each path runs in a FRESH process, from the file to Parquet predictions, and logs its
score run:

* ``mlpipe.score chunked``: ``mlpipe.score(run_id, path, output=..., chunk_rows=100000)``;
* ``spark local[2]``: ``mlpipe.score(run_id, path, output=..., spark="local[2]")``:
  Spark reads the file, ``mlflow.pyfunc.spark_udf`` predicts in two Python workers and
  Spark writes a Parquet folder. ``start s`` is the Spark session's start (the JVM),
  outside the job's clock: a cluster is up before a job comes; ``with start`` adds it.

Memory: the peak of the summed resident memory of the process and all its descendants
(the JVM, the Python workers), sampled from ``/proc`` every 0.2 s by the parent, minus
the process's own before the job; for Spark the "before" includes the started JVM.
The load average before and after is printed: on a shared machine it matters.

    .venv/bin/python benchmarks/bench_spark.py --rows 1000000 10000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import bench_score  # noqa: E402  (the same set-up: fit, generate)

MB = 1e6
CHUNKED = "mlpipe.score chunked"
SPARK = "spark local[2]"
PATHS = (CHUNKED, SPARK)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(entry.name)] = int(line.split()[1]) * 1024 / MB
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


def child(path: str, data: Path, store: Path, run_id: str) -> dict[str, Any]:
    import logging
    import warnings

    import mlflow

    import mlpipe

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ["MLPIPE_PROGRESS"] = "0"
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.MlflowClient().get_run(run_id)  # the store opened, untimed
    output = Path(tempfile.mkdtemp(dir=store)) / "predictions.parquet"
    start_s = 0.0
    options: dict[str, Any] = {"chunk_rows": 100_000}
    if path == SPARK:
        from pyspark.sql import SparkSession

        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        started = time.perf_counter()
        session = SparkSession.builder.master("local[2]").getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        start_s = time.perf_counter() - started
        options = {"spark": "local[2]"}
    print(json.dumps({"ready": bench_score.rss_mb()}), flush=True)  # the parent: "before"
    sys.stdin.readline()
    start = time.perf_counter()
    done = mlpipe.score(run_id, data, output=output, **options)
    seconds = time.perf_counter() - start
    rows = int(mlflow.get_run(done).data.params["rows"])
    shutil.rmtree(output.parent, ignore_errors=True)
    return {"path": path, "rows": rows, "seconds": seconds, "start_s": start_s}


def run_child(path: str, data: Path, store: Path, run_id: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", path, "--data", str(data)]
    command += ["--store", str(store), "--run-id", run_id]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdin and process.stdout and process.stderr
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    reader.start()
    line = process.stdout.readline()
    if not line:
        process.wait()
        sys.stderr.write("".join(errors))
        raise RuntimeError(f"{path} failed before its job")
    before = tree_rss_mb(process.pid)
    peak = before
    process.stdin.write("go\n")
    process.stdin.flush()
    finished = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not finished.is_set():
            peak = max(peak, tree_rss_mb(process.pid))
            finished.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = process.stdout.read()
    process.wait()
    finished.set()
    sampler.join()
    if process.returncode:
        reader.join()
        sys.stderr.write("".join(errors))
        raise RuntimeError(f"{path} failed")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "before_mb": before, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per path")
    parser.add_argument("--workdir", type=Path, help="keep the store and inputs here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.store, args.run_id)))
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_spark_"))
    store = work / "store"
    store.mkdir(parents=True, exist_ok=True)
    import pyspark

    print(f"bench_spark.py, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.platform()}")
    print(
        f"python {platform.python_version()}, pyspark {pyspark.__version__}, cores {os.cpu_count()}"
    )
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    fitted = subprocess.run(
        [sys.executable, bench_score.__file__, "--fit", "--store", str(store)],
        capture_output=True,
        text=True,
        check=True,
    )
    run_id = json.loads(fitted.stdout.strip().splitlines()[-1])
    rows = []
    for size in args.rows:
        data = work / f"penguins_{size}.parquet"
        if not data.exists():
            subprocess.run(
                [
                    sys.executable,
                    bench_score.__file__,
                    "--generate",
                    str(data),
                    "--rows",
                    str(size),
                ],
                capture_output=True,
                check=True,
            )
        results: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
        for repetition in range(args.repeat):
            for path in PATHS if repetition % 2 == 0 else PATHS[::-1]:
                result = run_child(path, data, store, run_id)
                results[path].append(result)
                print(
                    f"  {size:>11,} {path:<21} {result['seconds']:7.1f} s "
                    f"(+{result['start_s']:.1f} s start), peak {result['peak_mb']:,.0f} MB, "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        base = statistics.median(r["rows"] / r["seconds"] for r in results[CHUNKED])
        for path in PATHS:
            runs = results[path]
            seconds = statistics.median(r["seconds"] for r in runs)
            start = statistics.median(r["start_s"] for r in runs)
            rate = statistics.median(r["rows"] / r["seconds"] for r in runs)
            added = statistics.median(r["peak_mb"] - r["before_mb"] for r in runs)
            rows.append(
                {
                    "rows": f"{size:,}",
                    "path": path,
                    "job s": f"{seconds:.1f}",
                    "start s": f"{start:.1f}",
                    "rows/s": f"{rate:,.0f}",
                    "rows/s with start": f"{runs[0]['rows'] / (seconds + start):,.0f}",
                    "vs chunked": f"{rate / base:.2f}",
                    "peak MB (tree)": f"{statistics.median(r['peak_mb'] for r in runs):,.0f}",
                    "peak - before MB": f"{added:,.0f}",
                }
            )
    import pandas as pd

    print(f"\nrepeat={args.repeat} (medians)")
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
