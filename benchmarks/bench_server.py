"""How long does ``LineagePipeline.fit`` take against a tracking server, next to embedded SQLite?

The same chain (the demo's ColumnTransformer + LogisticRegression) is fitted on the
raw Palmer penguins, resampled with replacement to ``--rows``, against these stores:

* embedded SQLite: ``sqlite:///<tmp>/mlflow.db``, the client writes the file itself;
* ``mlflow server`` with a SQLite backend and proxied artifacts
  (``--artifacts-destination <tmp dir>``), tracked over HTTP: what HTTP costs;
* ``mlflow server`` with a PostgreSQL backend (a database created for this run),
  the same flags: what PostgreSQL costs on top;
* the same PostgreSQL server started without ``--workers``, i.e. with MLflow's
  default of 4 uvicorn workers. With more than one worker, uvicorn (0.54 here)
  leaves Nagle's algorithm on for accepted connections (Kludex/uvicorn#3149), so
  every request after the first on a kept-alive connection, which is how MLflow's
  client talks, waits about 40 ms for the client's delayed ACK. The other server
  columns use ``--workers 1`` (``--workers`` changes it) so that they show the cost
  of HTTP and of PostgreSQL rather than of that timer.

Four fits per store and repetition: a cold fit (a new pipeline on a frame no store
has seen: every stage fitted and logged) and a warm refit of the same chain on the
same frame (every stage a cache hit), each with ``cv=None`` and the default
``cv=5``. Every cold fit gets its own resample, so no stage of it is in the cache;
the script checks ``reused_`` after every fit.

Prerequisites: PostgreSQL on 127.0.0.1:5432 with a role that may create databases
(``bash .ci/postgres.sh``, as root: installs Debian's ``postgresql`` if needed,
starts it and creates the ``mlpipe`` role, password ``ci-only-pw``), and psycopg in
the venv (the ``test`` extra: ``pip install -e .[test]``). Without PostgreSQL the
script says so and measures the other stores. It starts and stops the
``mlflow server`` processes itself and drops the databases it created.

    bash .ci/postgres.sh
    .venv/bin/python benchmarks/bench_server.py --repeat 5
    .venv/bin/python benchmarks/bench_server.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import pandas as pd
import requests
import sklearn
from _breakdown import git_state  # benchmarks/ is on sys.path when a script runs
from palmerpenguins import load_penguins

import mlpipe
from mlpipe.cli._demo import penguins_pipeline

TARGET = "species"
SEED = 0
EMBEDDED = "embedded SQLite"
# --stores choice: (column label, backend, uses the --workers option)
STORES = {
    "embedded": (EMBEDDED, "embedded", False),
    "server-sqlite": ("server + SQLite", "sqlite", True),
    "server-postgres": ("server + PostgreSQL", "postgres", True),
    "server-postgres-4-workers": ("server + PostgreSQL, 4 workers", "postgres", False),
}
FITS = ("cold, cv=None", "warm, cv=None", "cold, cv=5", "warm, cv=5")
DEFAULT_PG = "postgresql://mlpipe:ci-only-pw@127.0.0.1:5432/mlpipe"
START_TIMEOUT = 180.0


# --- data -------------------------------------------------------------------------------


def penguin_frame(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """The raw penguins resampled to ``rows`` with ``seed``: a frame no other seed gives."""
    raw = load_penguins().sample(n=rows, replace=True, random_state=seed).reset_index(drop=True)
    return raw.drop(columns=TARGET), raw[TARGET]


def fit(X: pd.DataFrame, y: pd.Series, cv: int | None) -> tuple[float, list[str]]:
    """Seconds of one ``LineagePipeline.fit`` of a new demo chain, and the reused stages."""
    pipe = penguins_pipeline().set_params(cv=cv)
    # MLflow writes a "View run" link to stdout when a run on a server ends.
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        pipe.fit(X, y)
        seconds = time.perf_counter() - start
    if mlflow.active_run() is not None:
        raise RuntimeError("LineagePipeline.fit left a run active.")
    return seconds, list(pipe.reused_)


# --- stores -------------------------------------------------------------------------------


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One ``mlflow server`` process on 127.0.0.1 with proxied artifacts."""

    backend_uri: str
    artifacts: Path
    log: Path
    workers: int | None  # None: MLflow's default
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start the server; return the seconds until it answered ``/health``."""
        bin_dir = str(Path(sys.executable).parent)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # The venv's bin/ first: the server starts uvicorn from PATH.
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        # The server's job runner spawns worker processes mlpipe never uses.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        command = [
            *(bin_dir + "/mlflow", "server"),
            *("--backend-store-uri", self.backend_uri),
            *("--artifacts-destination", str(self.artifacts)),
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *(("--workers", str(self.workers)) if self.workers is not None else ()),
        ]
        start = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        while time.monotonic() < start + START_TIMEOUT:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server ({self.backend_uri.split(':')[0]}) exited with "
                    f"{self.process.returncode}:\n{self.log.read_text(errors='replace')[-3000:]}"
                )
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - start
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"mlflow server did not answer /health within {START_TIMEOUT:.0f} s:\n"
            + self.log.read_text(errors="replace")[-3000:]
        )

    def stop(self) -> None:
        # uvicorn's workers are children of the mlflow CLI: end the whole session.
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def keep_alive_ms(url: str, calls: int = 20) -> float:
    """Median ms of ``GET /health`` on one kept-alive connection (after 3 untimed)."""
    times = []
    with requests.Session() as session:
        for index in range(calls + 3):
            start = time.perf_counter()
            session.get(url + "/health", timeout=10).raise_for_status()
            if index >= 3:
                times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def postgres_database(admin_url: str) -> tuple[str | None, str]:
    """Create a fresh database as the role in ``admin_url``; its SQLAlchemy URI, or why not."""
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed in this venv (pip install 'psycopg[binary]')"
    name = f"bench_server_{dt.datetime.now():%Y%m%d_%H%M%S}_{os.getpid()}"
    try:
        with psycopg.connect(admin_url, connect_timeout=5, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as error:
        where = urlsplit(admin_url)
        reason = " ".join(str(error).split())
        return None, (
            f"PostgreSQL is unreachable or refused CREATE DATABASE at "
            f"{where.hostname}:{where.port} as {where.username!r} ({reason}). "
            "Start it with `bash .ci/postgres.sh` (as root), or pass --postgres"
        )
    parts = urlsplit(admin_url)
    return f"postgresql+psycopg://{parts.netloc}/{name}", name


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, connect_timeout=5, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- where the time goes: HTTP requests ---------------------------------------------------


@contextlib.contextmanager
def counted_requests() -> Iterator[list[tuple[str, float]]]:
    """Every HTTP request the client makes: (method and path, seconds)."""
    calls: list[tuple[str, float]] = []
    original = requests.Session.request

    def request(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, method, url, *args, **kwargs)
        finally:
            path = urlsplit(url).path
            # Artifact paths name runs and files, logged-model paths an id: keep the endpoint.
            if "/mlflow-artifacts/artifacts/" in path:
                path = "/api/2.0/mlflow-artifacts/artifacts/..."
            path = "/".join("<id>" if part.startswith("m-") else part for part in path.split("/"))
            calls.append((f"{method} {path}", time.perf_counter() - start))

    requests.Session.request = request  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        requests.Session.request = original  # type: ignore[method-assign]


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per cell (median)")
    parser.add_argument("--rows", type=int, default=1000, help="rows of each frame")
    parser.add_argument(
        "--workers", type=int, default=1, help="mlflow server --workers of the server columns"
    )
    parser.add_argument(
        "--stores", nargs="+", choices=list(STORES), default=list(STORES),
        help="stores to measure (default: all)",
    )  # fmt: skip
    parser.add_argument(
        "--postgres",
        default=DEFAULT_PG,
        help="a PostgreSQL URL whose role may create databases (default: the CI role)",
    )
    parser.add_argument("--quick", action="store_true", help="--repeat 1 --rows 300")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.rows = 1, 300

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")

    print(f"bench_server.py, {dt.datetime.now():%Y-%m-%d %H:%M}, {platform.platform()}")
    print(
        f"python {platform.python_version()}, mlflow {mlflow.__version__}, "
        f"scikit-learn {sklearn.__version__}, pandas {pd.__version__}, "
        f"mlpipe {mlpipe.__version__}, uvicorn {_version('uvicorn')}"
    )
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{git_state()}; load average at start: {load}")
    print(
        f"repeat={args.repeat} (median), rows={args.rows}, server columns: mlflow server "
        f"--workers {args.workers} unless labelled otherwise; {os.cpu_count()} cores\n"
    )

    home = Path(tempfile.mkdtemp(prefix="bench_server_"))
    uris: dict[str, str] = {}
    servers: list[Server] = []
    databases: list[str] = []
    postgres_down: str | None = None
    try:
        for choice in args.stores:
            label, backend, configurable = STORES[choice]
            if backend == "embedded":
                uris[label] = f"sqlite:///{home / 'embedded.db'}"
                mlflow.MlflowClient(uris[label]).search_experiments()  # creates the tables
                continue
            if backend == "sqlite":
                backend_uri, note = f"sqlite:///{home / (choice + '.db')}", ""
            elif postgres_down is not None:
                continue
            else:
                created, name_or_why = postgres_database(args.postgres)
                if created is None:
                    postgres_down = name_or_why
                    print(f"PostgreSQL columns SKIPPED: {name_or_why}.")
                    continue
                databases.append(name_or_why)
                backend_uri, note = created, f"database {name_or_why}, "
            server = Server(
                backend_uri,
                home / f"{choice}-artifacts",
                home / f"{choice}.log",
                args.workers if configurable else None,
            )
            servers.append(server)
            started = server.start()
            print(
                f"{label}: {note}up in {started:.1f} s (schema creation included); "
                f"GET /health on a kept-alive connection: {keep_alive_ms(server.url):.1f} ms"
            )
            uris[label] = server.url
        if not uris:
            raise SystemExit("No store to measure.")
        stores = list(uris)

        # Untimed warm-up per store: imports, the three experiments, the servers'
        # lazy setup, a first cache hit.
        for store in stores:
            mlflow.set_tracking_uri(uris[store])
            X, y = penguin_frame(args.rows, seed=10_000)
            for cv in (None, 5):
                fit(X, y, cv)
                fit(X, y, cv)

        results: dict[tuple[str, str], list[float]] = defaultdict(list)
        for repetition in range(args.repeat):
            order = stores if repetition % 2 == 0 else stores[::-1]
            for store in order:
                mlflow.set_tracking_uri(uris[store])
                for cv in (None, 5):
                    # The same frames in every store; a new one for each cold fit.
                    X, y = penguin_frame(args.rows, seed=SEED + 2 * repetition + (cv is None))
                    label = f"cv={cv}"
                    seconds, reused = fit(X, y, cv)
                    if reused:
                        raise RuntimeError(f"cold fit on {store} reused {reused}")
                    results[store, f"cold, {label}"].append(seconds)
                    seconds, reused = fit(X, y, cv)
                    if set(reused) != {"processing", "model"}:
                        raise RuntimeError(f"warm fit on {store} reused only {reused}")
                    results[store, f"warm, {label}"].append(seconds)

        print(f"\nSeconds per LineagePipeline.fit ({args.rows} rows), {args.repeat} repetitions:")
        table = []
        for kind in FITS:
            base = statistics.median(results[EMBEDDED, kind]) if EMBEDDED in stores else None
            for store in stores:
                times = results[store, kind]
                median = statistics.median(times)
                table.append(
                    {
                        "fit": kind,
                        "store": store,
                        "median s": f"{median:.3f}",
                        "min s": f"{min(times):.3f}",
                        "max s": f"{max(times):.3f}",
                        "ratio vs embedded": f"{median / base:.2f}" if base else "-",
                    }
                )
        print(pd.DataFrame(table).to_string(index=False))

        # Where the time goes on the servers: the HTTP requests of one more cold and
        # one more warm fit (cv=None) per server store.
        remote = [store for store in stores if store != EMBEDDED]
        if remote:
            print("\nHTTP requests of one cold and one warm fit (cv=None) per server store:")
            rows = []
            per_endpoint: dict[tuple[str, str], list[tuple[str, float]]] = {}
            X, y = penguin_frame(args.rows, seed=20_000)
            for store in remote:
                mlflow.set_tracking_uri(uris[store])
                for kind in ("cold", "warm"):
                    with counted_requests() as calls:
                        seconds, _ = fit(X, y, None)
                    in_http = sum(s for _, s in calls)
                    rows.append(
                        {
                            "store": store,
                            "fit": kind,
                            "fit s": f"{seconds:.3f}",
                            "requests": len(calls),
                            "in HTTP s": f"{in_http:.3f}",
                            "share": f"{in_http / seconds:.0%}",
                            "ms per request": f"{1e3 * in_http / max(1, len(calls)):.1f}",
                        }
                    )
                    per_endpoint[store, kind] = calls
            print(pd.DataFrame(rows).to_string(index=False))
            # Per endpoint, for the PostgreSQL server with --workers (else the first server).
            chosen = next((st for st in remote if "PostgreSQL" in st and "4" not in st), remote[0])
            table = defaultdict(dict)
            for kind in ("cold", "warm"):
                for name, sec in per_endpoint[chosen, kind]:
                    cell = table[name]
                    cell[f"{kind} n"] = cell.get(f"{kind} n", 0) + 1
                    cell[f"{kind} ms"] = cell.get(f"{kind} ms", 0.0) + 1e3 * sec
            endpoints = pd.DataFrame.from_dict(table, orient="index").fillna(0)
            endpoints = endpoints.sort_values("cold ms", ascending=False)
            for column in endpoints.columns:
                kind = int if column.endswith(" n") else float
                endpoints[column] = endpoints[column].astype(kind)
            endpoints.index.name = f"{chosen}: endpoint"
            print(f"\nRequests per endpoint, {chosen} (count and total ms):")
            print(endpoints.to_string(float_format="{:.0f}".format))
    finally:
        mlflow.set_tracking_uri(None)
        for server in servers:
            server.stop()
        for database in databases:
            try:
                drop_database(args.postgres, database)
            except Exception as error:  # report, keep cleaning up
                print(f"Could not drop database {database}: {error}")
        shutil.rmtree(home, ignore_errors=True)
    print(f"\nload average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
