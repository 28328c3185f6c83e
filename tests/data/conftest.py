"""Real databases for the data tests: a SQLite file always, PostgreSQL when CI provides it."""

from __future__ import annotations

import os
import uuid

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
