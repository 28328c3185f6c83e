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


def remove_run_for_good(run_id: str) -> None:
    """Delete a run of the current tracking store and remove it for good, as ``mlflow
    gc`` does. Through a tracking server (which cannot), straight from the database
    behind it, ``MLPIPE_TEST_SERVER_BACKEND``."""
    import mlflow

    from mlpipe._compat import HardDeleteStore

    mlflow.MlflowClient().delete_run(run_id)
    uri = mlflow.get_tracking_uri()
    backend = os.environ.get("MLPIPE_TEST_SERVER_BACKEND", uri) if uri.startswith("http") else uri
    HardDeleteStore(backend).hard_delete_run(run_id)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortTaken(RuntimeError):
    """The server exited because another process holds its port."""


class ServerProcess:
    """A server started in its own session, so that stopping it stops its workers too.

    ``start`` waits until ``url + ready`` answers 200 (and fails with the end of the
    log if the process exits first); ``kill`` stops it the hard way, as a crash or an
    OOM kill would; ``start`` again brings it back on the same port.

    A port picked here is free when picked, but another process (a parallel test
    worker, a client connection) may take it before the server binds it: the first
    ``start`` then tries a new port, so read ``url`` after ``start``.
    """

    ready = "/health"

    def __init__(self, log: Path, port: int | None = None):
        self.log = log
        self.port = port or free_port()
        self.port_given = port is not None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        # The venv's bin/ first: MLflow starts its own tools (uvicorn) from PATH.
        return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}

    def start(self, timeout: float = 120.0, cwd: Path | None = None) -> ServerProcess:
        if self.process is not None and self.process.poll() is None:  # poll reaps a dead one
            raise RuntimeError(f"The server on port {self.port} is already running.")
        may_move = self.process is None and not self.port_given
        for _ in range(3 if may_move else 1):
            try:
                return self._start(timeout, cwd)
            except PortTaken:
                if not may_move:
                    raise
                self.port = free_port()
        raise RuntimeError(f"{self.command()[1:3]} found no free port:\n{self._tail()}")

    def _start(self, timeout: float, cwd: Path | None) -> ServerProcess:
        log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=cwd,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                taken = "address already in use" in self._tail(log_start).lower()
                error = PortTaken if taken else RuntimeError
                raise error(f"{self.command()[1:3]} exited:\n{self._tail()}")
            try:
                if requests.get(self.url + self.ready, timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)  # a refused connection costs nothing: ask often
        self.stop()
        raise RuntimeError(f"{self.command()[1:3]} did not answer:\n{self._tail()}")

    def _tail(self, start: int = 0) -> str:
        with self.log.open("rb") as log:
            log.seek(start)
            return log.read().decode(errors="replace")[-5000:]

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


class TrackingServer(ServerProcess):
    """``mlflow server`` on 127.0.0.1 with a backend store and proxied artifacts."""

    def __init__(self, backend_uri: str, artifacts: Path, log: Path, port: int | None = None):
        super().__init__(log, port)
        self.backend_uri = backend_uri
        self.artifacts = artifacts

    def command(self) -> list[str]:
        return [
            *(str(Path(sys.executable).parent / "mlflow"), "server"),
            *("--backend-store-uri", self.backend_uri),
            *("--artifacts-destination", str(self.artifacts)),
            # One worker: with more, uvicorn adds ~40 ms to each kept-alive request.
            *("--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"),
        ]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env.pop("MLFLOW_TRACKING_URI", None)
        # The server's job runner spawns worker processes mlpipe never uses.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        return env


class ModelServer(ServerProcess):
    """``mlflow models serve`` of one model on 127.0.0.1, with the venv's packages.

    ``tracking_uri`` is the store a ``models:/`` URI is resolved in; ``env`` adds
    variables (the rest of the environment is this process's, without MLFLOW_*).
    """

    ready = "/ping"

    def __init__(self, model_uri: str, log: Path, tracking_uri: str | None = None, **env: str):
        super().__init__(log)
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.env = env

    def command(self) -> list[str]:
        return [
            *(str(Path(sys.executable).parent / "mlflow"), "models", "serve"),
            *("-m", self.model_uri, "--env-manager", "local"),
            *("--host", "127.0.0.1", "--port", str(self.port)),
        ]

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in super().environment().items()
            if not k.startswith("MLFLOW_") and k not in ("PYTHONPATH", "PYTHONSTARTUP")
        }
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return {**env, "PYTHONUNBUFFERED": "1", **self.env}


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
