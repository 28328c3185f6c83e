"""A real local Spark (``local[2]``) for the tests marked ``spark``.

Without pyspark or Java the tests are skipped, except under ``CI=true``, where they
fail: .ci/run installs both, so a skip there would hide that Spark was never tried.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

# pyspark 4.0 warns on import and on every conversion that it does not yet fully
# support pandas 3, and its Arrow conversion passes pandas 3 a deprecated copy= (which,
# as an error, makes toPandas give up); the conversions used here are compared with
# pandas' own below.
PANDAS_WARNINGS = [
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def require_spark() -> None:
    """Skip (fail under CI=true) when pyspark or Java is missing."""
    reasons = []
    try:
        import pyspark  # noqa: F401
    except ImportError:
        reasons.append("pyspark is not installed (pip install 'mlpipe[spark]')")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        reasons.append("java is not on PATH (Debian: apt-get install -y openjdk-17-jre-headless)")
    if not reasons:
        return
    reason = "; ".join(reasons)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the Spark tests, .ci/run installs them")
    pytest.skip(reason)


@contextmanager
def local_spark(executor_env: Mapping[str, str] = {}) -> Iterator[Any]:
    """A ``local[2]`` session whose Python workers run this interpreter, stopped at the end.

    ``executor_env`` is set in the executors' Python workers only
    (``spark.executorEnv.*``), not in this process.
    """
    require_spark()
    import warnings

    from pyspark.sql import SparkSession

    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("mlpipe tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.showConsoleProgress", "false")
    )
    # Stated every time: a session started after another in this process (the same JVM)
    # otherwise keeps the earlier one's executor PYTHONPATH.
    for name, value in {"PYTHONPATH": "", **executor_env}.items():
        builder = builder.config(f"spark.executorEnv.{name}", value)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas")
        warnings.filterwarnings("ignore", "The copy keyword is deprecated")
        session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        if previous is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = previous
