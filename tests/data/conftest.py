"""Real databases for the data tests: a SQLite file always, PostgreSQL when CI provides it."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from palmerpenguins import load_penguins

POSTGRES_ENV = "MLPIPE_TEST_POSTGRES_URL"


def penguins_table() -> pd.DataFrame:
    """The penguins with a primary key, a timestamp and a nullable integer column."""
    raw = load_penguins()
    raw.insert(0, "penguin_id", range(1, len(raw) + 1))
    raw["observed_at"] = pd.Timestamp("2019-02-09 15:30:00") + pd.to_timedelta(
        raw["penguin_id"], unit="min"
    )
    return raw


def _write(url: str, table: str, frame: pd.DataFrame) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        frame.to_sql(table, connection, index=False, if_exists="replace")
        connection.execute(sa.text(f'ALTER TABLE "{table}" ADD PRIMARY KEY (penguin_id)'))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLite file holding the penguins table (with a primary key) and an islands table."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = sa.create_engine(url)
    frame = penguins_table()
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE penguins (penguin_id INTEGER PRIMARY KEY, species TEXT, island TEXT,"
                " bill_length_mm REAL, bill_depth_mm REAL, flipper_length_mm REAL,"
                " body_mass_g REAL, sex TEXT, year INTEGER, observed_at DATETIME)"
            )
        )
        # Inserted in reverse: the primary key, not insertion order, orders the rows.
        frame.iloc[::-1].to_sql("penguins", connection, index=False, if_exists="append")
        pd.DataFrame(
            {"island": ["Biscoe", "Dream", "Torgersen"], "area_km2": [1.2, 3.4, 0.5]}
        ).to_sql("islands", connection, index=False)
    engine.dispose()
    return url


@pytest.fixture
def postgres_url() -> str:
    """A real PostgreSQL database (started by .ci/run), with a fresh penguins table."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("MLPIPE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{POSTGRES_ENV} is not set, but this run requires PostgreSQL")
        pytest.skip(f"{POSTGRES_ENV} is not set (the PostgreSQL stage of .ci/run sets it)")
    table = f"penguins_{uuid.uuid4().hex[:8]}"
    _write(url, table, penguins_table())
    yield url + f"#{table}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
    engine.dispose()


_SERVE = """
import pickle, sys

requests, replies = sys.stdin.buffer, sys.stdout.buffer
sys.stdout = sys.stderr  # what the code prints stays out of the replies
from mlpipe import fingerprint  # imported while the tests that ask go on

while len(header := requests.read(8)) == 8:
    code, values = pickle.loads(requests.read(int.from_bytes(header, "big")))
    namespace = dict(values)
    try:
        exec(code, namespace)
        reply = (True, namespace.get("result"))
    except BaseException:
        import traceback

        reply = (False, traceback.format_exc())
    data = pickle.dumps(reply)
    replies.write(len(data).to_bytes(8, "big") + data)
    replies.flush()
"""


class AnotherProcess:
    """A Python interpreter of its own, with another hash seed than this process's (sets
    of strings iterate in another order there), that runs code it is sent.

    Started once and shared by the tests that check a result is the same in another
    process: a new interpreter for each would spend seconds importing pandas and
    pyarrow again. ``run(code, **values)`` runs ``code`` with ``values`` as its globals,
    in the repository's root (``tests`` is importable), and returns its ``result``.
    """

    def __init__(self, root: Path, log: Path):
        seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
        self.log = log
        with log.open("wb") as err:  # a file, not a pipe: it cannot fill up and block
            self.process = subprocess.Popen(
                [sys.executable, "-c", _SERVE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=root,
                env={**os.environ, "PYTHONHASHSEED": seed},
            )

    def run(self, code: str, **values: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        data = pickle.dumps((code, values))
        self.process.stdin.write(len(data).to_bytes(8, "big") + data)
        self.process.stdin.flush()
        header = self.process.stdout.read(8)
        assert len(header) == 8, f"The other process died:\n{self.log.read_text()[-4000:]}"
        ok, result = pickle.loads(self.process.stdout.read(int.from_bytes(header, "big")))
        assert ok, f"The code failed in the other process:\n{result}"
        return result

    def stop(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


@pytest.fixture(scope="session")
def another_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnotherProcess]:
    """One other interpreter for the session's cross-process checks (see AnotherProcess)."""
    root = Path(__file__).resolve().parents[2]
    process = AnotherProcess(root, tmp_path_factory.mktemp("another") / "stderr.log")
    try:
        yield process
    finally:
        process.stop()
