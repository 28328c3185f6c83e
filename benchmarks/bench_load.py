"""How long does ``mlpipe.load`` take on a large SQL table, and how much memory, next to pandas?

A SQLite table ``big`` of ``--rows`` rows (default 5,000,000; an integer primary
key, 3 REAL columns, 2 short TEXT columns, 1 INTEGER column; numpy random, seed
0) is created once in a temporary directory, untimed, in its own process. Then
every path runs in a FRESH Python process, so that its peak memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, cross-checked with ``VmHWM``) is
its own:

* ``pd.read_sql_table("big", engine)``;
* ``pd.read_sql_query("SELECT * FROM big", engine)``;
* mlpipe's reading alone: ``mlpipe.data._sources.read_sql(url, table="big")``
  (``--chunksize`` rows at a time, primary-key order, then ``pd.concat``);
* ``mlpipe.load("sqlite:///<tmp>/big.db", table="big")`` with default settings
  (fingerprint, load run, Parquet snapshot with its re-read check);
* the same with ``snapshot=False``.

Every process imports the same modules (pandas, SQLAlchemy, MLflow, mlpipe) and
creates a fresh SQLite tracking store in the temporary directory (tables
created) before the clock starts, so the memory it holds before the work
("RSS before") is the same for every path; "peak - before" is what the work
added. The order of the paths alternates between repetitions.

Inside the ``mlpipe.load`` processes, the functions ``load`` calls are wrapped in
timers (exclusive time: a part timed inside another counts once), and the peak
RSS so far (``ru_maxrss``) is read when each part starts and ends, which shows
in which part the peak was reached.

    .venv/bin/python benchmarks/bench_load.py --repeat 3
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
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED = 0
MB = 1e6
TABLE = "big"
READ_SQL_TABLE = "pd.read_sql_table"
READ_SQL_QUERY = "pd.read_sql_query"
MLPIPE_READ = "mlpipe read_sql (reading only)"
MLPIPE_LOAD = "mlpipe.load"
MLPIPE_NO_SNAPSHOT = "mlpipe.load, snapshot=False"
PATHS = (READ_SQL_TABLE, READ_SQL_QUERY, MLPIPE_READ, MLPIPE_LOAD, MLPIPE_NO_SNAPSHOT)


# --- memory ---------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """``ru_maxrss`` of this process in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def proc_status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak of this process image) from /proc, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / MB
    return float("nan")


def first_touch() -> dict[str, float]:
    """Seconds to fill 1 GB of newly allocated memory, first and second time (own process).

    On some virtual machines the first touch of a page the guest never used is
    much slower than later touches; every path pays it for the memory it takes.
    """
    import numpy as np

    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        block = np.ones(125_000_000)  # 1 GB of float64, written
        seconds.append(time.perf_counter() - start)
        del block
    return {"first": seconds[0], "second": seconds[1]}


# --- the table ------------------------------------------------------------------------


def create_table(db: Path, rows: int) -> None:
    """The ``big`` table, in chunks of 500,000 rows (run in its own process)."""
    import sqlite3

    import numpy as np

    rng = np.random.default_rng(SEED)
    colours = np.array([f"colour_{i:02d}" for i in range(20)], dtype=object)
    letters = rng.integers(ord("A"), ord("Z") + 1, size=(10_000, 6), dtype=np.uint8)
    codes = np.array([row.tobytes().decode() for row in letters], dtype=object)
    connection = sqlite3.connect(db)
    connection.execute("PRAGMA journal_mode = OFF")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute(
        f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, x1 REAL, x2 REAL, x3 REAL, "
        "colour TEXT, code TEXT, quantity INTEGER)"
    )
    step = 500_000
    for start in range(0, rows, step):
        n = min(step, rows - start)
        floats = rng.standard_normal((n, 3))
        columns = (
            range(start + 1, start + n + 1),
            floats[:, 0].tolist(),
            floats[:, 1].tolist(),
            floats[:, 2].tolist(),
            colours[rng.integers(0, len(colours), n)].tolist(),
            codes[rng.integers(0, len(codes), n)].tolist(),
            rng.integers(0, 1_000, n).tolist(),
        )
        connection.executemany(
            f"INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)", zip(*columns, strict=True)
        )
        connection.commit()
    connection.close()


def table_rows(db: Path) -> int | None:
    import sqlite3

    if not db.exists():
        return None
    try:
        with sqlite3.connect(db) as connection:
            return int(connection.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])
    except sqlite3.Error:
        return None


# --- one path, in a fresh process ------------------------------------------------------


class Breakdown:
    """Exclusive wall time per part, and the peak RSS so far when each part ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.peak: dict[str, float] = {}
        self.peak_start: dict[str, float] = {}
        self.stack: list[str] = []
        self._children: list[list[float]] = []

    def wrap(self, label: str | Callable[[], str], func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label() if callable(label) else label
            self.peak_start.setdefault(name, peak_rss_mb())
            self.stack.append(name)
            self._children.append([0.0])
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                children = self._children.pop()[0]
                self.stack.pop()
                self.seconds[name] += elapsed - children
                self.calls[name] += 1
                self.peak[name] = peak_rss_mb()
                if self._children:
                    self._children[-1][0] += elapsed

        return timed


def patch_load(breakdown: Breakdown) -> None:
    """Wrap what ``mlpipe.load`` calls (in this throw-away process only)."""
    import mlflow
    import pandas as pd

    from mlpipe.data import _dataset

    snapshot_fingerprints = iter(
        [
            "snapshot: fingerprint of the re-read frame",
            "snapshot: fingerprint of the frame again",
        ]
    )

    def fingerprint_label() -> str:
        if "snapshot: the rest (temp dir, pickle check)" in breakdown.stack:
            return next(snapshot_fingerprints, "snapshot: fingerprint (more)")
        return "fingerprint (log_load)"

    concat = pd.concat

    def concat_in_read_sql(*args: Any, **kwargs: Any) -> Any:
        if breakdown.stack[-1:] == ["reading: read_sql (reflect, chunked fetch)"]:
            return breakdown.wrap("reading: pd.concat of the chunks", concat)(*args, **kwargs)
        return concat(*args, **kwargs)

    pd.concat = concat_in_read_sql
    _dataset.read_sql = breakdown.wrap(
        "reading: read_sql (reflect, chunked fetch)", _dataset.read_sql
    )
    _dataset.fingerprint = breakdown.wrap(fingerprint_label, _dataset.fingerprint)
    _dataset.dataset_entity = breakdown.wrap(
        "MLflow: dataset entity (schema of 100 rows)", _dataset.dataset_entity
    )
    _dataset.log_training_input = breakdown.wrap("MLflow: log_inputs", _dataset.log_training_input)
    _dataset._log_snapshot = breakdown.wrap(
        "snapshot: the rest (temp dir, pickle check)", _dataset._log_snapshot
    )
    pd.DataFrame.to_parquet = breakdown.wrap(
        "snapshot: DataFrame.to_parquet", pd.DataFrame.to_parquet
    )
    pd.read_parquet = breakdown.wrap("snapshot: pd.read_parquet (re-read check)", pd.read_parquet)
    mlflow.MlflowClient.log_artifact = breakdown.wrap(
        "snapshot: log_artifact (copy into the store)", mlflow.MlflowClient.log_artifact
    )


def child(path: str, db: Path, store: Path, chunksize: int) -> dict[str, Any]:
    """Run one path; return its seconds, memory and (for mlpipe.load) its parts."""
    import gc
    import logging
    import warnings

    import mlflow
    import pandas as pd
    import sqlalchemy as sa

    import mlpipe
    from mlpipe.data._sources import read_sql

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")
    url = f"sqlite:///{db}"
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient(uri).search_experiments()  # creates the tables, untimed
    breakdown = Breakdown()
    if path in (MLPIPE_LOAD, MLPIPE_NO_SNAPSHOT):
        patch_load(breakdown)
    gc.collect()
    before = proc_status_mb("VmRSS")
    before_peak = peak_rss_mb()
    usage = resource.getrusage(resource.RUSAGE_SELF)

    start = time.perf_counter()
    if path == READ_SQL_TABLE:
        engine = sa.create_engine(url)
        frame = pd.read_sql_table(TABLE, engine)
    elif path == READ_SQL_QUERY:
        engine = sa.create_engine(url)
        frame = pd.read_sql_query(f"SELECT * FROM {TABLE}", engine)
    elif path == MLPIPE_READ:
        frame = read_sql(url, table=TABLE, chunksize=chunksize)
    else:
        dataset = mlpipe.load(url, table=TABLE, snapshot=path == MLPIPE_LOAD, chunksize=chunksize)
        frame = dataset.frame
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)

    parts = []
    if breakdown.seconds:
        rest = seconds - sum(breakdown.seconds.values())
        for name, part_seconds in breakdown.seconds.items():
            start_peak, end_peak = breakdown.peak_start[name], breakdown.peak[name]
            parts.append((name, breakdown.calls[name], part_seconds, start_peak, end_peak))
        parts.append(("MLflow: stage run, params, tags (the rest)", "", rest, "", peak_rss_mb()))
    snapshot = list(store.rglob("snapshot.*"))
    return {
        "path": path,
        "seconds": seconds,
        "user_s": after.ru_utime - usage.ru_utime,
        "sys_s": after.ru_stime - usage.ru_stime,
        "rows": len(frame),
        "dtypes": {str(c): str(d) for c, d in frame.dtypes.items()},
        "frame_mb": float(frame.memory_usage(deep=True).sum()) / MB,
        "rss_before_mb": before,
        "peak_before_mb": before_peak,
        "peak_mb": peak_rss_mb(),
        "hwm_mb": proc_status_mb("VmHWM"),
        "rss_after_mb": proc_status_mb("VmRSS"),
        "snapshot_mb": snapshot[0].stat().st_size / MB if snapshot else None,
        "parts": parts,
    }


def run_child(path: str, db: Path, store: Path, chunksize: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        path,
        "--db",
        str(db),
        "--store",
        str(store),
        "--chunksize",
        str(chunksize),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    except subprocess.CalledProcessError as error:
        sys.stderr.write(error.stderr)
        raise
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the parent: tables ----------------------------------------------------------------


def results_table(results: dict[str, list[dict[str, Any]]]) -> Any:
    import pandas as pd

    base = results[READ_SQL_TABLE]
    base_s = statistics.median(r["seconds"] for r in base)
    base_peak = statistics.median(r["peak_mb"] for r in base)
    rows = []
    for path in PATHS:
        runs = results[path]
        seconds = [r["seconds"] for r in runs]
        median_s = statistics.median(seconds)
        peak = statistics.median(r["peak_mb"] for r in runs)
        before = statistics.median(r["rss_before_mb"] for r in runs)
        rows.append(
            {
                "path": path,
                "median s": f"{median_s:.2f}",
                "min s": f"{min(seconds):.2f}",
                "max s": f"{max(seconds):.2f}",
                "user s": f"{statistics.median(r['user_s'] for r in runs):.1f}",
                "sys s": f"{statistics.median(r['sys_s'] for r in runs):.1f}",
                "peak RSS MB": f"{peak:,.0f}",
                "RSS before MB": f"{before:,.0f}",
                "peak - before MB": f"{peak - before:,.0f}",
                "x frame": f"{(peak - before) / runs[0]['frame_mb']:.2f}",
                "time ratio": f"{median_s / base_s:.2f}",
                "peak ratio": f"{peak / base_peak:.2f}",
            }
        )
    return pd.DataFrame(rows)


def parts_table(runs: list[dict[str, Any]]) -> tuple[Any, float]:
    import pandas as pd

    seconds: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, Any] = {}
    starts: dict[str, list[float]] = defaultdict(list)
    peaks: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for name, n, part_seconds, start, peak in run["parts"]:
            seconds[name].append(part_seconds)
            calls[name] = n
            if start != "":
                starts[name].append(start)
            peaks[name].append(peak)
    total = statistics.median(r["seconds"] for r in runs)
    rows = [
        {
            "part": name,
            "calls": calls[name],
            "seconds": f"{statistics.median(values):.3f}",
            "share": f"{statistics.median(values) / total:.0%}",
            "peak RSS at start MB": (
                f"{statistics.median(starts[name]):,.0f}" if starts[name] else ""
            ),
            "peak RSS at end MB": f"{statistics.median(peaks[name]):,.0f}",
        }
        for name, values in seconds.items()
    ]
    return pd.DataFrame(rows), total


# --- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the table")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per path")
    parser.add_argument(
        "--chunksize", type=int, default=100_000, help="mlpipe's rows per fetch (its default)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep big.db here and reuse it (default: a temp dir)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--create", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--touch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.create:
        create_table(args.db, args.rows)
        return
    if args.touch:
        print(json.dumps(first_touch()))
        return
    if args.child:
        result = child(args.child, args.db, args.store, args.chunksize)
        print(json.dumps(result))
        return

    # The parent stays small (no pandas until the tables): its memory is not what
    # is measured, but the creation runs in a child all the same.
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_load_"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / f"big-{args.rows}.db"
    print(f"bench_load.py, {dt.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    if table_rows(db) != args.rows:
        db.unlink(missing_ok=True)
        start = time.perf_counter()
        command = [sys.executable, __file__, "--create", "--db", str(db), "--rows"]
        subprocess.run([*command, str(args.rows)], check=True)
        created = f"created in {time.perf_counter() - start:.0f} s (untimed)"
    else:
        created = "reused"
    print(
        f"table {TABLE}: {args.rows:,} rows, {db.stat().st_size / MB:,.0f} MB SQLite file, "
        f"{created}; chunksize={args.chunksize:,}; repeat={args.repeat} (median), "
        f"one fresh process per path and repetition, {os.cpu_count()} cores"
    )

    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        for repetition in range(args.repeat):
            order = PATHS if repetition % 2 == 0 else PATHS[::-1]
            for path in order:
                store = workdir / f"store-{repetition}-{PATHS.index(path)}"
                result = run_child(path, db, store, args.chunksize)
                results[path].append(result)
                print(
                    f"  rep {repetition + 1} {path}: {result['seconds']:.1f} s, "
                    f"peak {result['peak_mb']:,.0f} MB (VmHWM {result['hwm_mb']:,.0f} MB)",
                    flush=True,
                )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    import mlflow
    import pandas as pd

    import mlpipe

    first = results[MLPIPE_LOAD][0]
    print(
        f"\npython {platform.python_version()}, pandas {pd.__version__}, "
        f"mlflow {mlflow.__version__}, mlpipe {mlpipe.__version__}"
    )
    print(
        f"Loaded frame: {first['rows']:,} rows, {first['frame_mb']:.0f} MB "
        f"(memory_usage(deep=True)); dtypes {first['dtypes']}"
    )
    print(f"Parquet snapshot: {first['snapshot_mb']:.0f} MB\n")
    print(
        "Seconds and peak memory per path (ratios against pd.read_sql_table; "
        "'x frame' = (peak - before) / frame size; user and sys = CPU seconds of the "
        "work, sys being mostly page faults on fresh memory):"
    )
    print(results_table(results).to_string(index=False))
    for path in (MLPIPE_LOAD, MLPIPE_NO_SNAPSHOT):
        parts, total = parts_table(results[path])
        print(
            f"\nWhere {path} spends its {total:.1f} s (median per part over "
            f"{len(results[path])} processes; in the order the parts ended):"
        )
        print(parts.to_string(index=False))
    snapshot_summary(results[MLPIPE_LOAD])
    print("\nload average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    touch = subprocess.run(
        [sys.executable, __file__, "--touch"], capture_output=True, text=True, check=True
    )
    touched = json.loads(touch.stdout)
    print(
        f"\nFresh memory on this machine: filling 1 GB newly allocated by a fresh process "
        f"took {touched['first']:.2f} s the first time, {touched['second']:.2f} s the second "
        "(memory freed and allocated again). Every path pays the first-time rate for the "
        "memory it takes, so its time grows with its peak."
    )


def snapshot_summary(runs: list[dict[str, Any]]) -> None:
    """The snapshot's share of mlpipe.load, and its re-read check's share of that."""
    check = (
        "snapshot: pd.read_parquet (re-read check)",
        "snapshot: fingerprint of the re-read frame",
        "snapshot: fingerprint of the frame again",
    )
    snapshot, reread, rise = [], [], []
    for run in runs:
        parts = {name: (seconds, start, end) for name, _, seconds, start, end in run["parts"]}
        snapshot.append(sum(v[0] for k, v in parts.items() if k.startswith("snapshot:")))
        reread.append(sum(parts[k][0] for k in check))
        read_parquet = parts[check[0]]
        rise.append(max(parts[k][2] for k in check) - read_parquet[1])
    total = statistics.median(r["seconds"] for r in runs)
    frame_mb = runs[0]["frame_mb"]
    print(
        f"\nSnapshot: {statistics.median(snapshot):.2f} s of mlpipe.load's {total:.1f} s "
        f"({statistics.median(snapshot) / total:.0%}); its re-read check (read_parquet + "
        f"fingerprint of what was read + fingerprint of the frame again): "
        f"{statistics.median(reread):.2f} s; the peak RSS rose by "
        f"{statistics.median(rise):,.0f} MB ({statistics.median(rise) / frame_mb:.2f} x frame) "
        "during the check (median over processes)."
    )


if __name__ == "__main__":
    main()
