"""How fast does ``mlflow models serve`` answer with mlpipe's raw-input model?

One chain (the demo's ColumnTransformer + LogisticRegression) is fitted once by
``mlpipe.LineagePipeline(cv=None)`` on the raw Palmer penguins. Two models are then
served by two ``mlflow models serve --env-manager local`` processes:

* mlpipe: the raw-input pyfunc model at ``pipe.model_uri_`` (its signature declares
  ``params`` and the output, no input columns: the model brings each column to its
  training dtype itself, once, vectorised);
* baseline: the very same fitted scikit-learn pipeline (unpickled from mlpipe's
  model, so both hold identical estimators) logged with ``mlflow.sklearn.log_model``
  and an ``input_example`` of five raw rows (its signature is inferred from them).

Both get the same requests (``dataframe_split`` JSON bodies, serialized before the
clock starts, posted by one ``requests.Session``, one at a time, alternating
between the servers), in ``--served-rounds`` rounds: in each round single raw rows
for latency, then 1,000-row batches for throughput. Each round gives a ratio per
figure (mlpipe over baseline); the table reports every round and the median of
the rounds. Then the same models are timed in-process, to tell the server's share
from the model's: ``scoring_server.invocations`` (the server's work without HTTP),
``PyFuncModel.predict`` on the parsed frame, and the bare fitted chain's
``Pipeline.predict``, plus what a typed input schema would cost (a what-if).

    .venv/bin/python benchmarks/bench_serve.py            # 1,000 rows, 100 batches, 5 rounds
    .venv/bin/python benchmarks/bench_serve.py --quick    # a smoke run, about a minute
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import io
import json
import logging
import os
import platform
import pstats
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import requests
import sklearn
from _breakdown import git_state  # benchmarks/ is on sys.path when a script runs
from mlflow.exceptions import MlflowException
from mlflow.models.utils import _enforce_schema
from mlflow.pyfunc import scoring_server
from mlflow.types import ColSpec, DataType, Schema
from palmerpenguins import load_penguins
from sklearn.pipeline import Pipeline

import mlpipe
from mlpipe.cli._demo import penguins_pipeline
from mlpipe.model._raw import prepare

TARGET = "species"
SEED = 0
MLPIPE = "mlpipe raw-input model"
BASELINE = "mlflow.sklearn baseline"
MODELS = (MLPIPE, BASELINE)
START_TIMEOUT = 120.0
JSON = {"Content-Type": "application/json"}


# --- the two models -------------------------------------------------------------------


def penguins() -> tuple[pd.DataFrame, pd.Series]:
    raw = load_penguins()
    return raw.drop(columns=TARGET), raw[TARGET]


def log_baseline(chain: Pipeline, X: pd.DataFrame, home: Path, fmt: str) -> tuple[str, str]:
    """Log ``chain`` with ``mlflow.sklearn.log_model``; return its URI and how it was saved."""
    experiment_id = mlflow.MlflowClient().create_experiment(
        "baseline", artifact_location=(home / "baseline").as_uri()
    )
    with mlflow.start_run(experiment_id=experiment_id):
        if fmt == "cloudpickle":
            info = mlflow.sklearn.log_model(
                chain, name="model", input_example=X.head(5), serialization_format="cloudpickle"
            )
            return info.model_uri, "cloudpickle (as mlpipe's model stores its stages)"
        try:
            info = mlflow.sklearn.log_model(chain, name="model", input_example=X.head(5))
            return info.model_uri, "skops (MLflow's default)"
        except MlflowException as error:
            if "untrusted types" not in str(error):
                raise
            text = str(error)
            trusted = json.loads(text[text.find("[") : text.find("]") + 1].replace("'", '"'))
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(
            chain, name="model", input_example=X.head(5), skops_trusted_types=trusted
        )
    return info.model_uri, f"skops with skops_trusted_types={trusted}"


# --- servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(tracking_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.pop("PYTHONPATH", None)
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    # The venv's bin/ first: MLflow starts uvicorn from PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    # uvicorn runs as a child of the mlflow CLI: end the whole session it leads.
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@contextlib.contextmanager
def served(uris: dict[str, str], home: Path, tracking_uri: str) -> Iterator[dict[str, str]]:
    """Start one ``mlflow models serve`` per model; yield their base URLs; stop them all."""
    processes: dict[str, tuple[subprocess.Popen[bytes], Path, str]] = {}
    try:
        for index, (name, uri) in enumerate(uris.items()):
            port = free_port()
            log = home / f"serve-{index}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(Path(sys.executable).parent / "mlflow"), "models", "serve"]
                    + ["-m", uri, "--env-manager", "local", "--host", "127.0.0.1"]
                    + ["-p", str(port)],
                    cwd=home,
                    env=server_env(tracking_uri),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            processes[name] = (process, log, f"http://127.0.0.1:{port}")
        for name, (process, log, url) in processes.items():
            wait_until_up(name, process, url, log)
        yield {name: url for name, (_, _, url) in processes.items()}
    finally:
        for process, _, _ in processes.values():
            stop(process)


def wait_until_up(name: str, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow models serve ({name}) exited with {process.returncode} before "
                f"answering /ping:\n{log.read_text(errors='replace')[-5000:]}"
            )
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/ping", timeout=1).status_code == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(
        f"mlflow models serve ({name}) did not answer /ping within {START_TIMEOUT:.0f} s:\n"
        + log.read_text(errors="replace")[-5000:]
    )


# --- requests ---------------------------------------------------------------------------


def body(frame: pd.DataFrame) -> bytes:
    # pandas writes NaN as JSON null, as a client in any language would.
    return f'{{"dataframe_split": {frame.to_json(orient="split", index=False)}}}'.encode()


def post_all(
    session: requests.Session, urls: dict[str, str], bodies: list[bytes]
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Post every body to every server, alternating which goes first; seconds and answers."""
    seconds: dict[str, list[float]] = {name: [] for name in urls}
    answers: dict[str, list[Any]] = {name: [] for name in urls}
    names = list(urls)
    for index, data in enumerate(bodies):
        for name in names if index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            response = session.post(f"{urls[name]}/invocations", data=data, headers=JSON)
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise RuntimeError(f"{name} answered {response.status_code}: {response.text}")
            seconds[name].append(elapsed)
            answers[name].extend(response.json()["predictions"])
    return seconds, answers


# --- in-process ---------------------------------------------------------------------------


def typed_schema(dtypes: dict[str, str]) -> Schema:
    """A typed input schema for mlpipe's columns: what MLflow would show and enforce.

    A what-if, not what mlpipe logs (see ``raw_signature``): numbers as ``double``
    (so that a served ``null`` or ``1.5`` in an integer column is neither refused nor
    truncated), booleans as ``boolean``, datetimes as ``datetime``, the rest as
    ``string``, every column optional.
    """
    columns = []
    for name, dtype in dtypes.items():
        try:
            resolved = pd.api.types.pandas_dtype(dtype)
        except TypeError:
            resolved = np.dtype(object)
        if pd.api.types.is_bool_dtype(resolved) or dtype == "boolean":
            typed = DataType.boolean
        elif pd.api.types.is_numeric_dtype(resolved):
            typed = DataType.double
        elif pd.api.types.is_datetime64_any_dtype(resolved):
            typed = DataType.datetime
        else:
            typed = DataType.string
        columns.append(ColSpec(typed, name, required=False))
    return Schema(columns)


def in_process(
    models: dict[str, Any], frames: dict[int, pd.DataFrame], calls: int, rounds: int
) -> pd.DataFrame:
    """Per model and size: the server's work without HTTP, pyfunc predict, and their parts.

    The parts are timed one by one on the same input, each on what the part before
    produced: parse the JSON body into a frame (with the model's schema), enforce
    the schema, mlpipe's ``prepare`` (raw model only), the fitted chain's
    ``Pipeline.predict``, and writing the predictions as JSON. Every cell is called
    ``calls`` times (a twentieth of that for batches) in ``rounds`` rounds, the cells
    in alternating order; the median call is reported (on a busy machine it includes
    some interference from other processes, alike for both models).
    """
    cells: dict[tuple[int, str, str], tuple[Callable[[], Any], int]] = {}
    for size, frame in frames.items():
        data = body(frame)
        n = max(5, calls if size == 1 else calls // 20)
        for name, model in models.items():
            schema = model.metadata.get_input_schema()
            parsed = scoring_server._parse_json_data(data, model.metadata, schema).data
            # The raw-input model declares no input columns (it checks them itself).
            enforced = _enforce_schema(parsed, schema) if schema is not None else parsed
            if name == MLPIPE:
                python_model = model.unwrap_python_model()
                chain = python_model.pipeline
                prepared = prepare(enforced, python_model.dtypes, select=True)
            else:
                chain, prepared = model.get_raw_model(), enforced
            predictions = chain.predict(prepared)

            def invoke(model: Any = model, schema: Any = schema, data: bytes = data) -> Any:
                result = scoring_server.invocations(data, "application/json", model, schema)
                assert result.status == 200, result.response
                return result

            parts: dict[str, Callable[[], Any]] = {
                "invocations": invoke,
                "pyfunc predict": lambda m=model, p=parsed: m.predict(p),
                "parse JSON": lambda m=model, s=schema, d=data: scoring_server._parse_json_data(
                    d, m.metadata, s
                ),
            }
            if schema is not None:
                parts["enforce schema"] = lambda p=parsed, s=schema: _enforce_schema(p, s)
            if name == MLPIPE:
                parts["mlpipe prepare"] = lambda e=enforced, m=python_model: prepare(
                    e, m.dtypes, select=True
                )
            parts["Pipeline.predict"] = lambda c=chain, p=prepared: c.predict(p)
            parts["write JSON"] = lambda r=predictions: scoring_server.predictions_to_json(
                r, io.StringIO()
            )
            if name == MLPIPE:
                typed = typed_schema(python_model.dtypes)
                typed_parsed = scoring_server._parse_json_data(data, model.metadata, typed).data
                retyped = _enforce_schema(typed_parsed, typed)
                again = chain.predict(prepare(retyped, python_model.dtypes, select=True))
                if again.tolist() != predictions.tolist():
                    raise AssertionError("the typed schema changed the raw model's predictions")
                parts["what-if: parse JSON, typed schema"] = lambda m=model, s=typed, d=data: (
                    scoring_server._parse_json_data(d, m.metadata, s)
                )
                parts["what-if: enforce typed schema"] = lambda p=typed_parsed, s=typed: (
                    _enforce_schema(p, s)
                )
            for part, func in parts.items():
                cells[size, name, part] = (func, n)

    times: dict[tuple[int, str, str], list[float]] = {key: [] for key in cells}
    for func, _ in cells.values():
        func()  # untimed first call
    keys = list(cells)
    for index in range(rounds):
        for key in keys if index % 2 == 0 else keys[::-1]:
            func, n = cells[key]
            for _ in range(max(1, n // rounds)):
                start = time.perf_counter()
                func()
                times[key].append(time.perf_counter() - start)
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for (size, name, part), values in times.items():
        row = rows.setdefault((size, name), {"rows": size, "model": name})
        row[part] = 1e3 * float(np.median(values))
    table = pd.DataFrame(list(rows.values()))
    parts_only = [
        c
        for c in table.columns
        if c not in ("rows", "model", "invocations", "pyfunc predict")
        and not c.startswith("what-if")
    ]
    what_if = [c for c in table.columns if c.startswith("what-if")]
    at = table.columns.get_loc(what_if[0]) if what_if else len(table.columns)
    table.insert(at, "sum of parts", table[parts_only].fillna(0).sum(axis=1))
    return table


def _ms(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "-"


def breakdown_table(inproc: pd.DataFrame) -> pd.DataFrame:
    """Parts as rows; per size the two models' ms and their ratio as columns."""
    parts = [c for c in inproc.columns if c not in ("rows", "model")]
    columns = {}
    for size, group in inproc.groupby("rows", sort=False):
        by_model = group.set_index("model")[parts].T
        label = "1 row" if size == 1 else f"{size} rows"
        columns[f"{label}: mlpipe"] = by_model[MLPIPE].map(_ms)
        columns[f"{label}: baseline"] = by_model[BASELINE].map(_ms)
        columns[f"{label}: ratio"] = (by_model[MLPIPE] / by_model[BASELINE]).map(
            lambda v: f"{v:.2f}" if np.isfinite(v) else "-"
        )
    table = pd.DataFrame(columns)
    table.index.name = "ms per call"
    return table


def profile_request(model: Any, frame: pd.DataFrame, calls: int, top: int) -> str:
    """cProfile of ``calls`` in-process invocations on ``frame``: the top functions."""
    data = body(frame)
    schema = model.metadata.get_input_schema()
    scoring_server.invocations(data, "application/json", model, schema)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        scoring_server.invocations(data, "application/json", model, schema)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def ratios_table(per_round: list[dict[str, Any]]) -> pd.DataFrame:
    """Per round: mlpipe over baseline for 1-row median and p99 latency and batch rows/s."""
    rows = []
    for figures in per_round:
        rows.append(
            {
                "round": figures["round"],
                "load": figures["load"],
                "1-row median": figures[f"median ms {MLPIPE}"] / figures[f"median ms {BASELINE}"],
                "1-row p99": figures[f"p99 ms {MLPIPE}"] / figures[f"p99 ms {BASELINE}"],
                "batch rows/s": figures[f"rows/s {MLPIPE}"] / figures[f"rows/s {BASELINE}"],
            }
        )
    table = pd.DataFrame(rows)
    median = {"round": "median", **table.drop(columns="round").median().to_dict()}
    table = pd.concat([table, pd.DataFrame([median])], ignore_index=True)
    return table.round({"load": 2, "1-row median": 2, "1-row p99": 2, "batch rows/s": 2})


# --- main -----------------------------------------------------------------------------------


def ms(values: list[float], q: float) -> float:
    return 1e3 * float(np.quantile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="single-row requests")
    parser.add_argument("--batches", type=int, default=100, help="batch requests")
    parser.add_argument(
        "--served-rounds", type=int, default=5, help="served rounds (ratios: median of rounds)"
    )
    parser.add_argument("--batch-rows", type=int, default=1000, help="rows per batch")
    parser.add_argument("--warmup", type=int, default=20, help="untimed requests per server")
    parser.add_argument(
        "--calls", type=int, default=300, help="in-process calls per cell (1 row; /20 for batches)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="in-process rounds (median)")
    parser.add_argument(
        "--baseline-format",
        choices=("cloudpickle", "skops"),
        default="cloudpickle",
        help="how the baseline is saved (skops: MLflow's default, with trusted types if needed)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="always print the cProfile of a served request"
    )
    parser.add_argument("--quick", action="store_true", help="100 rows, 10 batches, 60 calls")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.batches, args.warmup, args.calls = 100, 10, 5, 60
        args.served_rounds = 2

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")

    print(f"bench_serve.py, {dt.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}")
    print(
        f"python {platform.python_version()}, mlflow {mlflow.__version__}, "
        f"scikit-learn {sklearn.__version__}, pandas {pd.__version__}, mlpipe {mlpipe.__version__}"
    )
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{git_state()}; load average at start: {load}")
    print(
        f"{args.requests} single-row requests, {args.batches} requests of {args.batch_rows} rows, "
        f"{args.warmup} warm-up requests per server; one client, sequential\n"
    )

    X, y = penguins()
    home = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    try:
        pipe = penguins_pipeline().set_params(cv=None).fit(X, y)
        raw_model = mlflow.pyfunc.load_model(pipe.model_uri_)
        chain = raw_model.unwrap_python_model().pipeline
        baseline_uri, how = log_baseline(chain, X, home, args.baseline_format)
        baseline = mlflow.pyfunc.load_model(baseline_uri)
        print(f"mlpipe model:   {pipe.model_uri_}, fitted on {len(X)} raw penguins, cv=None")
        print(f"baseline model: {baseline_uri}, saved with {how}")
        print(f"baseline signature inputs: {baseline.metadata.get_input_schema()}")
        print(f"mlpipe signature inputs:   {raw_model.metadata.get_input_schema()}\n")

        singles = X.sample(n=args.requests, replace=True, random_state=SEED)
        single_bodies = [body(singles.iloc[[i]]) for i in range(len(singles))]
        batches = [
            X.sample(n=args.batch_rows, replace=True, random_state=SEED + 1 + i)
            for i in range(args.batches)
        ]
        batch_bodies = [body(b) for b in batches]
        warm = [body(X.sample(n=1, random_state=i)) for i in range(args.warmup)]
        warm += [body(X.sample(n=args.batch_rows, replace=True, random_state=SEED + 10_000))] * 3

        uris = {MLPIPE: pipe.model_uri_, BASELINE: baseline_uri}
        rounds = max(1, args.served_rounds)
        latency: dict[str, list[float]] = {name: [] for name in MODELS}
        batch_seconds: dict[str, list[float]] = {name: [] for name in MODELS}
        agree = {name: 0 for name in MODELS}
        answered = 0
        per_round = []
        with served(uris, home, tracking_uri) as urls, requests.Session() as session:
            post_all(session, urls, warm)
            start = time.perf_counter()
            for index in range(rounds):
                some_singles = list(range(index, len(single_bodies), rounds))
                some_batches = list(range(index, len(batch_bodies), rounds))
                seconds, answers = post_all(session, urls, [single_bodies[i] for i in some_singles])
                b_seconds, b_answers = post_all(
                    session, urls, [batch_bodies[i] for i in some_batches]
                )
                expected = (
                    chain.predict(singles.iloc[some_singles]).tolist()
                    + chain.predict(pd.concat([batches[i] for i in some_batches])).tolist()
                )
                answered += len(expected)
                row: dict[str, Any] = {"round": str(index + 1), "load": os.getloadavg()[0]}
                for name in MODELS:
                    got = answers[name] + b_answers[name]
                    agree[name] += sum(a == b for a, b in zip(got, expected, strict=True))
                    latency[name] += seconds[name]
                    batch_seconds[name] += b_seconds[name]
                    row[f"median ms {name}"] = ms(seconds[name], 0.5)
                    row[f"p99 ms {name}"] = ms(seconds[name], 0.99)
                    row[f"rows/s {name}"] = (
                        args.batch_rows * len(some_batches) / sum(b_seconds[name])
                    )
                per_round.append(row)
            wall = time.perf_counter() - start

        table = []
        for name in MODELS:
            table.append(
                {
                    "model": name,
                    "median ms": ms(latency[name], 0.5),
                    "p99 ms": ms(latency[name], 0.99),
                    "min ms": ms(latency[name], 0.0),
                    "batch median ms": ms(batch_seconds[name], 0.5),
                    "rows/s": args.batch_rows * len(batch_bodies) / sum(batch_seconds[name]),
                }
            )
        frame = pd.DataFrame(table)
        ratio: dict[str, Any] = {"model": "ratio mlpipe/baseline"}
        for column in frame.columns[1:]:
            ratio[column] = frame[column].iloc[0] / frame[column].iloc[1]
        frame = pd.concat([frame, pd.DataFrame([ratio])], ignore_index=True)
        print(
            f"Served over HTTP, all {rounds} rounds pooled ({wall:.1f} s wall for both servers; "
            f"{len(single_bodies)} single rows and {len(batch_bodies)} batches per server):"
        )
        print(
            frame.to_string(
                index=False,
                formatters={
                    "median ms": "{:.2f}".format,
                    "p99 ms": "{:.2f}".format,
                    "min ms": "{:.2f}".format,
                    "batch median ms": "{:.1f}".format,
                    "rows/s": lambda v: f"{v:,.0f}" if v > 10 else f"{v:.2f}",
                },
            )
        )

        rounds_table = ratios_table(per_round)
        print(
            "\nRatios mlpipe/baseline per round (same run, requests alternating between the "
            "servers); throughput > 1 and latency < 1 favour mlpipe:"
        )
        print(rounds_table.to_string(index=False))
        verdict = rounds_table.iloc[-1]
        print(
            f"median of {rounds} rounds: 1,000-row batch throughput "
            f"{verdict['batch rows/s']:.2f}x the baseline's (target >= 1.00), single-row median "
            f"latency {verdict['1-row median']:.2f}x (target <= 1.05), p99 "
            f"{verdict['1-row p99']:.2f}x"
        )
        for name in MODELS:
            print(
                f"{name}: {agree[name]} of {answered} served predictions equal "
                f"Pipeline.predict on the raw frames"
            )
        incomplete = int(singles.isna().any(axis=1).sum())
        print(
            f"single-row requests with a missing value: {incomplete} of {len(singles)} "
            f"({int(singles['sex'].isna().sum())} with no sex)"
        )

        frames = {1: X.iloc[[0]], args.batch_rows: batches[0]}
        models = {MLPIPE: raw_model, BASELINE: baseline}
        inproc = in_process(models, frames, args.calls, args.rounds)
        print(
            "\nIn-process, median of the calls, ms. invocations = the server's work without HTTP "
            "(parse JSON, pyfunc predict, write JSON); pyfunc predict = enforce the schema "
            "(+ mlpipe's prepare) + Pipeline.predict; below them, each part timed alone:"
        )
        print(breakdown_table(inproc).to_string())
        one = inproc[inproc["rows"] == 1].set_index("model")["invocations"]
        for name in MODELS:
            served_median = ms(latency[name], 0.5)
            print(
                f"  {name}: HTTP, uvicorn and the client add {served_median - one[name]:.2f} ms "
                f"to a single-row request (median served {served_median:.2f}, median in-process "
                f"{one[name]:.2f})"
            )

        worst = max(
            ((1, verdict["1-row median"]), (args.batch_rows, 1 / verdict["batch rows/s"])),
            key=lambda pair: pair[1],
        )
        if args.profile or worst[1] > 1.05:
            size = worst[0]
            calls = max(10, args.calls if size == 1 else args.calls // 10)
            print(
                f"\ncProfile of {calls} in-process invocations of the raw model with {size} "
                f"row(s) (served ratio {worst[1]:.2f}x), top 25 by cumulative time:"
            )
            print(profile_request(raw_model, frames[size], calls, 25))
    finally:
        mlflow.set_tracking_uri(None)
        shutil.rmtree(home, ignore_errors=True)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
