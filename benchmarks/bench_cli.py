"""How long does ``mlpipe main`` take when the whole chain already exists?

That answer is a lookup: no data is read and nothing is fitted, so the command's time
is starting Python, importing MLflow, opening the tracking store and a few searches.
This script builds one complete chain (``mlpipe demo``: the Palmer penguins, ``plain``
+ ``logreg``) in a fresh SQLite store in a temporary folder, then times, as separate
processes, in interleaved rounds (every command once per round, the order rotating):

* ``mlpipe main --table penguins --retrieval-time DATE --logic plain --algorithm logreg``
  (checked to answer "The chain exists: nothing to run.");
* the same as it ran before the command paused Python's garbage collector while it
  starts (``gc.disable`` made a no-op before ``mlpipe.cli.main`` runs);
* the same with its bytecode cached (``PYTHONPYCACHEPREFIX`` set, one untimed run
  first): this checkout runs with ``PYTHONDONTWRITEBYTECODE=1`` and an editable
  install, so mlpipe's own modules are otherwise compiled on every start, which an
  installed wheel never does;
* ``mlpipe main --help`` (argument parsing only: no MLflow);
* ``python -c pass``, ``python -c "import mlflow"``;
* ``import mlflow`` plus opening the same store and one search, in plain Python: the
  least any MLflow client pays for a question to this store;
* ``mlflow experiments search``: MLflow's own command line on the same store;
* ``mlpipe main`` again, with ``MLFLOW_TRACKING_URI`` pointing at an ``mlflow server``
  (one worker) on that same store, as a team that shares a tracking server runs it.

Each row gives the median wall time and the median CPU time (user + system), the
latter less sensitive to other work on a shared machine.

Then the breakdown: in fresh processes (median of the same number of rounds), each
part of the ``main`` path timed in turn, and one ``python -X importtime`` run of it
for what MLflow's import spends, by submodule (shares only: that flag slows imports).

    .venv/bin/python benchmarks/bench_cli.py              # 7 rounds
    .venv/bin/python benchmarks/bench_cli.py --rounds 5 --keep
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from _breakdown import git_state  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PYTHON = str(Path(sys.executable))
MLPIPE = str(BIN / "mlpipe")
MLFLOW = str(BIN / "mlflow")
EXISTS = "The chain exists: nothing to run."
MAIN = "mlpipe main (chain complete)"

# One fresh process per round: each part of the ``main`` path, timed in the order the
# command meets it (see mlpipe/cli/_main.py). Prints one JSON object, milliseconds.
PARTS = r"""
import gc, json, sys, time
gc.disable()  # as mlpipe's command does while it starts (mlpipe/cli/_main.py)
now = time.perf_counter
date = sys.argv[1]
ms = {}
t = now()
import mlflow
ms["import mlflow"] = now() - t
t = now()
import sqlalchemy, sqlalchemy.orm
ms["import SQLAlchemy (both stores need it)"] = now() - t
t = now()
import mlpipe.cli._main, mlpipe.tracking, mlpipe.tracking._query, mlpipe._registry
ms["import mlpipe's CLI modules"] = now() - t
t = now()
import mlflow.store.tracking.sqlalchemy_store
ms["import MLflow's SQL store (ORM, Alembic)"] = now() - t
from mlpipe.tracking import _store
t = now()
client = _store.client()
ms["open the store (engine, schema check)"] = now() - t
import mlflow.store.db.utils as db_utils
t = now()
db_utils._verify_schema(client._tracking_client.store.engine)
ms["  of which the Alembic schema check"] = now() - t
import mlpipe
t = now()
mlpipe.LOGICS.entry("plain"); mlpipe.ALGORITHMS.entry("logreg")
ms["check the names (registry, entry points)"] = now() - t
t = now()
load = mlpipe.find_run("load", "penguins", date)
ms["find_run('load'), the first query"] = now() - t
t = now()
chain = mlpipe.find_chain("penguins", date, "plain", "logreg")
ms["find_chain"] = now() - t
assert chain is not None and chain["load"].run_id == load.run_id
import io, contextlib
t = now()
with contextlib.redirect_stdout(io.StringIO()):
    mlpipe.cli._main._print_table([{"stage": e.stage, "key": e.key} for e in chain.entries])
ms["print the table (pandas)"] = now() - t
print(json.dumps({k: 1000 * v for k, v in ms.items()}))
"""

# ``mlpipe main`` as it ran before the garbage collector was paused during start-up:
# the console script's own code, with gc.disable made a no-op.
UNPAUSED = (
    "import gc, sys; gc.disable = lambda: None; from mlpipe.cli import main; sys.exit(main())"
)

# The least an MLflow client pays for one question to the store.
FLOOR = (
    "import mlflow; c = mlflow.MlflowClient(); "
    "c.search_runs([c.get_experiment_by_name('load').experiment_id], max_results=1)"
)


def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Run ``command``; return its wall time, its CPU time (user + system) and its output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, done.stdout


def build_chain(folder: Path, env: dict[str, str]) -> str:
    """Fit the demo chain in ``folder``'s store; return its UTC load date."""
    *_, out = run([MLPIPE, "demo"], env, folder)
    found = re.search(r"penguins@(\d{4})(\d{2})(\d{2})", out)
    if found is None:
        raise SystemExit(f"mlpipe demo printed no load key:\n{out}")
    return "-".join(found.groups())


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} ({os.cpu_count()} cores)"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@contextlib.contextmanager
def tracking_server(folder: Path, env: dict[str, str]) -> Iterator[str]:
    """``mlflow server`` (one worker) on the same SQLite store; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server_env = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"}
    server_env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job workers
    log = folder / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [MLFLOW, "server", "--backend-store-uri", env["MLFLOW_TRACKING_URI"],
             "--artifacts-destination", str(folder / "mlartifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=server_env, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"mlflow server did not start:\n{log.read_text()}") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def end_to_end(
    folder: Path, env: dict[str, str], date: str, rounds: int, server: str
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    main = [MLPIPE, "main", "--table", "penguins", "--retrieval-time", date,
            "--logic", "plain", "--algorithm", "logreg"]  # fmt: skip
    cached_env = dict(env, PYTHONPYCACHEPREFIX=str(folder / "pycache"))
    cached_env.pop("PYTHONDONTWRITEBYTECODE", None)
    commands: dict[str, tuple[list[str], dict[str, str]]] = {
        "python -c pass": ([PYTHON, "-c", "pass"], env),
        'python -c "import mlflow"': ([PYTHON, "-c", "import mlflow"], env),
        "import mlflow, open the store, 1 search": ([PYTHON, "-c", FLOOR], env),
        "mlflow experiments search": ([MLFLOW, "experiments", "search"], env),
        "mlpipe main --help (no MLflow)": ([MLPIPE, "main", "--help"], env),
        MAIN: (main, env),
        "mlpipe main, collector not paused (before)": ([PYTHON, "-c", UNPAUSED, *main[1:]], env),
        "mlpipe main, bytecode cached": (main, cached_env),
        "mlpipe main, via mlflow server": (main, dict(env, MLFLOW_TRACKING_URI=server)),
    }
    for name, (command, command_env) in commands.items():  # warm-up: disk, bytecode cache
        *_, out = run(command, command_env, folder)
        if name.startswith("mlpipe main") and "--help" not in command and EXISTS not in out:
            raise SystemExit(f"{name} did not find the chain:\n{out}")
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpu_times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            command, command_env = commands[name]
            wall, cpu, _ = run(command, command_env, folder)
            times[name].append(wall)
            cpu_times[name].append(cpu)
    return times, cpu_times


def breakdown(folder: Path, env: dict[str, str], date: str, rounds: int) -> dict[str, list[float]]:
    parts: dict[str, list[float]] = {}
    for _ in range(rounds):
        *_, out = run([PYTHON, "-c", PARTS, date], env, folder)
        for name, value in json.loads(out.strip().splitlines()[-1]).items():
            parts.setdefault(name, []).append(value)
    return parts


def import_shares(folder: Path, env: dict[str, str], date: str) -> list[tuple[str, int, int]]:
    """(module, cumulative µs, depth) of the biggest imports under ``mlpipe main``."""
    command = [PYTHON, "-X", "importtime", "-m", "mlpipe", "main", "--table", "penguins",
               "--retrieval-time", date, "--logic", "plain", "--algorithm", "logreg"]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=folder, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip())) // 2
        rows.append((name.strip(), int(cumulative), depth))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median; >= 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    import mlflow  # only for its version: every timing runs in a fresh process

    print(f"bench_cli.py, {dt.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}")
    print(
        f"python {platform.python_version()}, mlflow {mlflow.__version__}, {git_state()}; "
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}"
    )
    print(f"load average before: {load_average()}\n")

    folder = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    try:
        date = build_chain(folder, env)
        with tracking_server(folder, env) as server:
            times, cpu_times = end_to_end(folder, env, date, args.rounds, server)
        parts = breakdown(folder, env, date, args.rounds)
        imports = import_shares(folder, env, date)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    reference = statistics.median(times[MAIN])
    cpu_reference = statistics.median(cpu_times[MAIN])
    rows = []
    for name, values in times.items():
        median, cpu = statistics.median(values), statistics.median(cpu_times[name])
        rows.append(
            [
                name,
                f"{median:.2f} s",
                f"{min(values):.2f} s",
                f"{median / reference:.2f}x",
                f"{cpu:.2f} s",
                f"{cpu / cpu_reference:.2f}x",
            ]
        )
    print(
        f"End to end, separate processes, {args.rounds} interleaved rounds "
        f"(store: one demo chain, SQLite; CPU = user + system of the process and its children):"
    )
    header = ["command", "wall, median", "min", "vs mlpipe main", "CPU, median", "vs mlpipe main"]
    print(table(rows, header))

    median_of = {name: statistics.median(v) for name, v in parts.items()}
    start = statistics.median(times["python -c pass"]) * 1000
    total = start + sum(v for k, v in median_of.items() if not k.startswith(" "))
    rows = [["interpreter start (python -c pass)", f"{start:.0f} ms", f"{start / total:.0%}"]]
    rows += [[k, f"{v:.0f} ms", f"{v / total:.0%}"] for k, v in median_of.items()]
    rows.append(["sum", f"{total:.0f} ms", "100%"])
    print(f"\nThe main path, part by part (fresh processes, median of {args.rounds}):")
    print(table(rows, ["part", "median", "share"]))

    by_name = {name: (cumulative, depth) for name, cumulative, depth in imports}
    whole = sum(c for _, c, d in imports if d == 0)
    rows = []
    for name in ("mlflow", "mlflow.genai", "mlflow.artifacts", "mlflow.gateway",
                 "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.db.utils", "alembic",
                 "mlflow.store.tracking.dbmodels.models", "sqlalchemy", "pandas",
                 "mlpipe.cli", "mlpipe.tracking", "mlpipe._registry", "filelock"):  # fmt: skip
        if name in by_name:
            rows.append(
                [name, f"{by_name[name][0] / 1000:.0f} ms", f"{by_name[name][0] / whole:.0%}"]
            )
    print("\nImports under mlpipe main (one python -X importtime run: read shares, not ms;")
    print("a module is charged to whoever imports it first, nested rows are inside others):")
    print(table(rows, ["module (cumulative)", "-X importtime", "share of all imports"]))
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
