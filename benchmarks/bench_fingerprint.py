"""How fast is ``mlpipe.fingerprint`` next to hashing the same bytes directly?

Two frames, built with a fixed seed:

* numeric: ``--rows`` (default 2,000,000) x 12 float64 columns, a few NaNs in
  every column; and the same frame with the NaNs filled (the fingerprint
  rewrites a float column that holds a NaN, so both are timed);
* strings: ``--string-rows`` (default 1,000,000) x 4 columns of pandas' default
  string dtype (short and medium strings, ~1 % missing) plus one object column of
  Python strings and None.

Timed side by side, in the same run, on each frame:

* ``mlpipe.fingerprint(df)``;
* one ``hashlib.blake2b`` pass over the buffers the fingerprint hashes, prepared
  before the clock starts: each column's numpy buffer (numeric); each column's
  Arrow ``large_string`` offsets (int64) and UTF-8 data, and the missing-value
  mask as one byte per row (strings). Preparing them (the conversion of the
  object column to Arrow, for instance) is not in this time: it is the cost of
  the hash function alone over exactly the bytes mlpipe feeds it;
* one ``xxhash.xxh3_128`` pass over the same buffers (mlpipe's hash function
  without any preparation: the floor for ``mlpipe.fingerprint``);
* ``hashlib.blake2b(pd.util.hash_pandas_object(df).to_numpy())`` (the usual idiom;
  the index is hashed too, pandas' default);
* ``mlflow.data.from_pandas(df).digest``: MLflow hashes only the first 10,000
  rows, so its MB/s is nominal (the size of the whole frame over its time).

Sizes: the numeric frame's ``df.memory_usage(deep=True).sum()`` (equal to the
bytes hashed, plus a 132-byte RangeIndex); for the string frame, the bytes the
fingerprint feeds to its hash (the blake2b pass hashes the same), with
``memory_usage(deep=True)`` printed beside it (it counts the object column's
Python objects, ~50 bytes each, which no hash reads).

Memory read bandwidth is measured in the same run as ``values.sum()`` over the
numeric frame's values as one float64 numpy array, and as the sum of the same
bytes viewed as int64 (single-threaded; no BLAS call, so ``OPENBLAS_CORETYPE``
plays no part, and the output says whether it was set).

    .venv/bin/python benchmarks/bench_fingerprint.py --repeat 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import xxhash

import mlpipe

SEED = 0
MB = 1e6
MLFLOW_ROWS = 10_000  # mlflow.data.digest_utils.MAX_ROWS


# --- frames -----------------------------------------------------------------------


def numeric_frame(rows: int) -> pd.DataFrame:
    """``rows`` x 12 float64, one NaN every ~10,000 cells at random places."""
    rng = np.random.default_rng(SEED)
    values = rng.standard_normal((rows, 12))
    values[rng.random((rows, 12)) < 1e-4] = np.nan
    return pd.DataFrame(values, columns=[f"x{i}" for i in range(12)])


def _vocabulary(rng: np.random.Generator, size: int, low: int, high: int) -> np.ndarray:
    """``size`` random lowercase ASCII strings of ``low`` to ``high`` characters."""
    letters = rng.integers(ord("a"), ord("z") + 1, size=(size, high), dtype=np.uint8)
    lengths = rng.integers(low, high + 1, size=size)
    words = [row[:n].tobytes().decode() for row, n in zip(letters, lengths, strict=True)]
    return np.array(words, dtype=object)


def _column(rng: np.random.Generator, rows: int, vocab: np.ndarray, missing: float) -> np.ndarray:
    values = vocab[rng.integers(0, len(vocab), size=rows)]
    values[rng.random(rows) < missing] = None
    return values


def string_frame(rows: int) -> pd.DataFrame:
    """4 columns of pandas' default string dtype and one object column."""
    rng = np.random.default_rng(SEED)
    short = _vocabulary(rng, 5_000, 2, 8)
    medium = _vocabulary(rng, 100_000, 15, 40)
    longer = _vocabulary(rng, 100_000, 30, 80)
    frame = pd.DataFrame(
        {
            "code": pd.Series(_column(rng, rows, short, 0.0), dtype="str"),
            "city": pd.Series(_column(rng, rows, medium, 0.01), dtype="str"),
            "email": pd.Series(_column(rng, rows, medium, 0.01), dtype="str"),
            "comment": pd.Series(_column(rng, rows, longer, 0.01), dtype="str"),
            "note": pd.Series(_column(rng, rows, medium, 0.01), dtype=object),
        }
    )
    assert [str(d) for d in frame.dtypes] == ["str"] * 4 + ["object"], frame.dtypes
    return frame


# --- the buffers the fingerprint hashes -------------------------------------------


def column_buffers(frame: pd.DataFrame) -> list[np.ndarray | memoryview]:
    """The bytes ``mlpipe.fingerprint`` feeds its hash, column by column.

    Numeric columns: the float64 buffer. String and object columns: what the
    fingerprint takes from their Arrow ``large_string`` form (missing mask as one
    byte per row, int64 offsets, UTF-8 data).
    """
    buffers: list[np.ndarray | memoryview] = []
    for i in range(frame.shape[1]):
        column = frame.iloc[:, i]
        if column.dtype.kind == "f":
            buffers.append(np.ascontiguousarray(column.to_numpy()))
            continue
        array = pa.array(column, from_pandas=True)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        array = array.cast(pa.large_string())
        offsets = np.frombuffer(array.buffers()[1], dtype="<i8")
        offsets = offsets[array.offset : array.offset + len(array) + 1]
        buffers.append(array.is_null().to_numpy(zero_copy_only=False))
        buffers.append(offsets)
        buffers.append(memoryview(array.buffers()[2])[offsets[0] : offsets[-1]])
    return buffers


def nbytes(buffers: list[np.ndarray | memoryview]) -> int:
    return sum(b.nbytes for b in buffers)


def blake2b_pass(buffers: list[np.ndarray | memoryview]) -> str:
    h = hashlib.blake2b()
    for b in buffers:
        h.update(b)
    return h.hexdigest()


def xxh3_pass(buffers: list[np.ndarray | memoryview]) -> str:
    h = xxhash.xxh3_128()
    for b in buffers:
        h.update(b)
    return h.hexdigest()


def hash_pandas_object(frame: pd.DataFrame) -> str:
    return hashlib.blake2b(pd.util.hash_pandas_object(frame).to_numpy()).hexdigest()


def mlflow_digest(frame: pd.DataFrame) -> str:
    return mlflow.data.from_pandas(frame).digest


# --- timing -----------------------------------------------------------------------


def median_seconds(func: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    """Median, min and max seconds of ``repeat`` calls, after one untimed call."""
    func()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def table(
    cases: list[tuple[str, Callable[[], Any]]], size: int, repeat: int, baseline: str
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Time every case (their order alternates between repetitions)."""
    for _, func in cases:  # warm-up
        func()
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for repetition in range(repeat):
        order = cases if repetition % 2 == 0 else cases[::-1]
        for name, func in order:
            start = time.perf_counter()
            func()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    rows = [
        {
            "path": name,
            "median s": f"{medians[name]:.4f}",
            "min s": f"{min(t):.4f}",
            "max s": f"{max(t):.4f}",
            "MB/s": f"{size / MB / medians[name]:,.0f}",
            f"ratio vs {baseline}": f"{medians[name] / medians[baseline]:.2f}",
        }
        for name, t in times.items()
    ]
    return pd.DataFrame(rows), medians


# --- the three measurements ---------------------------------------------------------


def bench_bandwidth(numeric: pd.DataFrame, repeat: int) -> dict[str, float]:
    """Memory read bandwidth (MB/s) by numpy sums over the numeric frame's values."""
    values = numeric.to_numpy()  # one (rows, 12) float64 array, copied before timing
    as_int = values.view(np.int64)
    bandwidths = {}
    for label, func in (("values.sum()", values.sum), ("values.view(int64).sum()", as_int.sum)):
        seconds, low, high = median_seconds(func, repeat)
        bandwidths[label] = values.nbytes / MB / seconds
        print(
            f"Memory read bandwidth, numpy {label} over {values.nbytes / MB:.0f} MB "
            f"(the numeric frame's values): {bandwidths[label]:,.0f} MB/s "
            f"(median {seconds:.4f} s, min {low:.4f}, max {high:.4f})."
        )
    print(
        "The float64 sum (pairwise, the measure asked for) is slower than the integer "
        "sum over the same bytes: it is partly bound by additions, not only by reads."
    )
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    print(
        "OPENBLAS_CORETYPE: "
        + (f"set to {coretype!r}" if coretype is not None else "not set")
        + " (np.sum makes no BLAS call; left as it was for every number here).\n"
    )
    return bandwidths


def bench_numeric(numeric: pd.DataFrame, bandwidths: dict[str, float], repeat: int) -> None:
    filled = numeric.fillna(0.0)
    size = int(numeric.memory_usage(deep=True).sum())
    buffers = column_buffers(numeric)
    nan_cells = int(numeric.isna().sum().sum())
    assert abs(nbytes(buffers) - size) < 1000, (nbytes(buffers), size)
    cases = [
        ("blake2b, one pass", lambda: blake2b_pass(buffers)),
        ("xxh3_128, one pass", lambda: xxh3_pass(buffers)),
        ("mlpipe.fingerprint", lambda: mlpipe.fingerprint(numeric)),
        ("mlpipe.fingerprint, NaNs filled", lambda: mlpipe.fingerprint(filled)),
        ("hash_pandas_object + blake2b", lambda: hash_pandas_object(numeric)),
        ("mlflow from_pandas().digest *", lambda: mlflow_digest(numeric)),
    ]
    result, medians = table(cases, size, repeat, "blake2b, one pass")
    print(
        f"(a) numeric: {len(numeric):,} rows x 12 float64, {nan_cells} NaN cells in "
        f"{int(numeric.isna().any().sum())} of 12 columns; "
        f"size = memory_usage(deep=True) = {size / MB:.1f} MB"
    )
    print(result.to_string(index=False))
    mlpipe_s = medians["mlpipe.fingerprint"]
    ratio = mlpipe_s / medians["blake2b, one pass"]
    speed = size / MB / mlpipe_s
    bandwidth = bandwidths["values.sum()"]
    integer = bandwidths["values.view(int64).sum()"]
    print(
        f"Target (the issue): mlpipe at most 0.5x the blake2b time -> {ratio:.2f}x; "
        f"aim a quarter of memory bandwidth ({bandwidth / 4:,.0f} MB/s by the float sum, "
        f"{integer / 4:,.0f} MB/s by the integer sum) -> {speed:,.0f} MB/s "
        f"= {speed / bandwidth:.2f} / {speed / integer:.2f} of bandwidth."
    )
    print(f"* MLflow hashes only the first {MLFLOW_ROWS:,} rows; its MB/s is nominal.\n")


def bench_strings(strings: pd.DataFrame, repeat: int) -> None:
    buffers = column_buffers(strings)
    size = nbytes(buffers)
    deep = int(strings.memory_usage(deep=True).sum())
    cases = [
        ("blake2b, one pass", lambda: blake2b_pass(buffers)),
        ("xxh3_128, one pass", lambda: xxh3_pass(buffers)),
        ("mlpipe.fingerprint", lambda: mlpipe.fingerprint(strings)),
        ("hash_pandas_object + blake2b", lambda: hash_pandas_object(strings)),
        ("mlflow from_pandas().digest *", lambda: mlflow_digest(strings)),
    ]
    result, _ = table(cases, size, repeat, "blake2b, one pass")
    print(
        f"(b) strings: {len(strings):,} rows x 4 str columns (2-8, 15-40, 15-40 and "
        f"30-80 characters) + 1 object column (15-40 characters), ~1 % missing; "
        f"size = bytes hashed = {size / MB:.1f} MB (memory_usage(deep=True): {deep / MB:.1f} MB)"
    )
    print(result.to_string(index=False))
    print(f"* MLflow hashes only the first {MLFLOW_ROWS:,} rows; its MB/s is nominal.\n")

    # Column by column
    rows = []
    for name in strings.columns:
        column = strings[[name]]
        column_buffers_ = column_buffers(column)
        mine, _, _ = median_seconds(lambda c=column: mlpipe.fingerprint(c), repeat)
        blake, _, _ = median_seconds(lambda b=column_buffers_: blake2b_pass(b), repeat)
        prepare, _, _ = median_seconds(lambda c=column: column_buffers(c), repeat)
        rows.append(
            {
                "column": name,
                "dtype": str(strings[name].dtype),
                "MB hashed": f"{nbytes(column_buffers_) / MB:.1f}",
                "mlpipe s": f"{mine:.4f}",
                "blake2b s": f"{blake:.4f}",
                "ratio": f"{mine / blake:.2f}",
                "to Arrow buffers s": f"{prepare:.4f}",
            }
        )
    print("(b) column by column (median; 'to Arrow buffers' = the untimed preparation above):")
    print(pd.DataFrame(rows).to_string(index=False))


# --- main -------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per cell (median)")
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows of the numeric frame")
    parser.add_argument(
        "--string-rows", type=int, default=1_000_000, help="rows of the string frame"
    )
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="mlflow")

    print(f"bench_fingerprint.py, {dt.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"pyarrow {pa.__version__}, xxhash {xxhash.VERSION}, mlflow {mlflow.__version__}, "
        f"mlpipe {mlpipe.__version__}"
    )
    print(
        f"repeat={args.repeat} (median), all single-threaded, {os.cpu_count()} cores, "
        "load average at start {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg())
    )

    numeric = numeric_frame(args.rows)
    bandwidths = bench_bandwidth(numeric, args.repeat)
    bench_numeric(numeric, bandwidths, args.repeat)
    del numeric
    bench_strings(string_frame(args.string_rows), args.repeat)
    print("\nload average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
