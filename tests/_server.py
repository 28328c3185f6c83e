"""A real ``mlflow server`` process for the tests that need remote tracking."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
import sqlalchemy as sa


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TrackingServer:
    """``mlflow server`` on 127.0.0.1 with a backend store and proxied artifacts.

    ``kill`` stops it the hard way (as a crash would), ``start`` brings it back on
    the same port, store and artifact directory.
    """

    def __init__(self, backend_uri: str, artifacts: Path, log: Path, port: int | None = None):
        self.backend_uri = backend_uri
        self.artifacts = artifacts
        self.log = log
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> TrackingServer:
        if self.process is not None and self.process.poll() is None:  # poll reaps a dead one
            raise RuntimeError(f"The server on port {self.port} is already running.")
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            # The server's job runner spawns worker processes mlpipe never uses.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        command = [
            *(bin_dir + "/mlflow", "server"),
            *("--backend-store-uri", self.backend_uri),
            *("--artifacts-destination", str(self.artifacts)),
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """Kill the server and its workers at once, as a crash or an OOM kill would."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


class StoreReset:
    """Empties a tracking database between tests, keeping what MLflow seeds at creation.

    Rows are deleted rather than the tables truncated so ids never repeat: artifact
    directories named after an experiment id stay distinct between tests.
    """

    # What a new MLflow database holds: its schema version, the Default experiment
    # (id 0) and the default workspace.
    SEEDED = ("alembic_version", "workspaces")

    def __init__(self, db_uri: str):
        self.engine = sa.create_engine(db_uri, poolclass=sa.pool.NullPool)
        self.metadata = sa.MetaData()
        self.metadata.reflect(self.engine)

    def __call__(self) -> None:
        with self.engine.begin() as connection:
            for table in reversed(self.metadata.sorted_tables):
                if table.name == "experiments":
                    connection.execute(table.delete().where(table.c.experiment_id != 0))
                elif table.name not in self.SEEDED:
                    connection.execute(table.delete())
