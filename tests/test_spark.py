"""mlpipe.score and ``mlpipe score --spark`` on a real local Spark (``local[2]``), whose
executors cannot import mlpipe, against the one-machine path on the real penguins
(text columns, missing values, an integer ``year`` with nulls)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins

import mlpipe
from mlpipe import schema
from mlpipe.cli import main
from mlpipe.cli._demo import penguins_pipeline
from mlpipe.exceptions import SourceError
from tests._spark import PANDAS_WARNINGS, local_spark

TARGET = "species"

# The executors' Python workers import this first (it is on their PYTHONPATH only): from
# then on, importing mlpipe there fails as if it were not installed, while everything
# else (MLflow, scikit-learn, pandas, pyarrow) is the same venv's.
BLOCKER = """
import importlib.abc
import sys


class NoMlpipe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mlpipe" or name.startswith("mlpipe."):
            raise ModuleNotFoundError(
                f"No module named {name!r} (not on this executor)", name=name
            )
        return None


sys.meta_path.insert(0, NoMlpipe())
"""

pytestmark = [
    pytest.mark.spark,
    pytest.mark.slow,
    pytest.mark.xdist_group("spark"),
    *PANDAS_WARNINGS,
]


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """local[2] whose executors have no mlpipe."""
    blocker = tmp_path_factory.mktemp("executors_without_mlpipe")
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    with local_spark({"PYTHONPATH": str(blocker)}) as session:
        yield session


def _raw(rows: int | None = None) -> pd.DataFrame:
    """The penguins (resampled to ``rows``), an id, more nulls, ``year`` nulls too."""
    X = load_penguins().drop(columns=TARGET)
    if rows is not None:
        X = X.sample(rows, replace=True, random_state=0).reset_index(drop=True)
    rng = np.random.default_rng(0)
    for name in X.columns:
        X[name] = X[name].mask(rng.random(len(X)) < 0.05)
    assert X["year"].isna().any() and X["island"].isna().any()
    return X.rename_axis("penguin_id").reset_index()


@pytest.fixture
def fitted() -> mlpipe.LineagePipeline:
    raw = load_penguins()
    return penguins_pipeline().set_params(cv=None).fit(raw.drop(columns=TARGET), raw[TARGET])


def _executors_import(spark: Any, module: str) -> list[str]:
    """What ``import module`` gives in each executor task: the module's file, or the error."""

    def attempt(_: Any) -> Iterator[str]:
        import importlib

        try:
            yield str(importlib.import_module(module).__file__)
        except ImportError as error:
            yield f"ImportError: {error}"

    return spark.sparkContext.parallelize(range(4), 2).mapPartitions(attempt).collect()


def test_spark_scores_row_for_row_as_one_machine_without_mlpipe_on_the_executors(
    spark, fitted, tmp_path
):
    # The executors really cannot import mlpipe, yet MLflow and scikit-learn are there.
    assert all("not on this executor" in r for r in _executors_import(spark, "mlpipe"))
    assert all(r.endswith("__init__.py") for r in _executors_import(spark, "sklearn"))
    assert "mlpipe" in sys.modules  # the driver has it

    raw = _raw(3000)
    raw.to_parquet(tmp_path / "new.parquet", index=False)
    model = fitted.run_ids_["model"]
    frame = spark.read.parquet(str(tmp_path / "new.parquet"))
    assert dict(frame.dtypes)["year"] == "double"  # an integer column with nulls
    frame = frame.withColumn("year", frame["year"].cast("long"))  # as Spark users hold it

    run_id = mlpipe.score(
        model, frame, output=tmp_path / "spark.parquet", keep=["penguin_id"], proba=True
    )
    mlpipe.score(
        model,
        tmp_path / "new.parquet",
        output=tmp_path / "one.parquet",
        keep=["penguin_id"],
        proba=True,
        chunk_rows=700,
    )
    got = pd.read_parquet(tmp_path / "spark.parquet").sort_values("penguin_id")
    expected = pd.read_parquet(tmp_path / "one.parquet")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_exact=True)
    assert got["prediction"].nunique() == 3

    run = mlflow.get_run(run_id)
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert tags[schema.STAGE] == schema.SCORE_STAGE
    assert tags[schema.UPSTREAM] == model
    assert tags[schema.SPARK_MASTER] == "local[2]"
    assert tags[schema.SCORED_MODEL] == fitted.model_uri_
    assert tags[schema.SCORE_OUTPUT] == str(tmp_path / "spark.parquet")
    assert tags[schema.SCORE_OUTPUT_DIGEST].startswith("sha256:")
    assert params[schema.ROWS] == "3000"
    assert params[schema.SOURCE_PARAM] == "spark dataframe"
    assert [e.stage for e in mlpipe.lineage(run_id)] == ["load", "processing", "model", "score"]
    assert _written(tmp_path) == ["new.parquet", "one.parquet", "spark.parquet"]  # no .tmp

    # The same rows in another order and partitioning: the same input fingerprint.
    shuffled = frame.orderBy("bill_depth_mm").repartition(3)
    again = mlpipe.score(model, shuffled, output=tmp_path / "again.parquet")
    fingerprint = mlflow.get_run(again).data.tags[schema.INPUT_FINGERPRINT]
    assert fingerprint == tags[schema.INPUT_FINGERPRINT]
    changed = frame.withColumn("bill_depth_mm", frame["bill_depth_mm"] + 0.1)
    other = mlpipe.score(model, changed, output=tmp_path / "changed.parquet")
    assert mlflow.get_run(other).data.tags[schema.INPUT_FINGERPRINT] != fingerprint


def test_cli_spark_reads_a_csv_with_spark_and_refuses_an_existing_output(
    spark, fitted, tmp_path, capsys
):
    raw = _raw()
    raw.to_csv(tmp_path / "new.csv", index=False)
    model = fitted.run_ids_["model"]
    argv = ["score", model, "--input", "new.csv", "--output", "scored.parquet"]
    assert main([*argv, "--spark", "local[2]", "--keep", "penguin_id"]) == 0
    out = capsys.readouterr().out
    assert "344 rows scored into scored.parquet" in out
    got = pd.read_parquet(tmp_path / "scored.parquet").sort_values("penguin_id")
    expected = mlpipe.score(model, pd.read_csv(tmp_path / "new.csv"), keep=["penguin_id"])
    assert (got["prediction"].to_numpy() == expected["prediction"].to_numpy()).all()
    run = mlflow.get_run(out.split()[2])
    assert run.data.tags[schema.SOURCE] == str(tmp_path / "new.csv")
    assert run.data.params["file"] == str(tmp_path / "new.csv")
    written = sorted((tmp_path / "scored.parquet").iterdir())

    assert main([*argv, "--spark", "local[2]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "mlpipe score: error: Output 'scored.parquet' exists: expected a new path. Pass "
        "overwrite=True (--overwrite) to replace it."
    )
    assert sorted((tmp_path / "scored.parquet").iterdir()) == written
    assert main([*argv, "--spark", "local[2]", "--overwrite"]) == 0
    assert sorted((tmp_path / "scored.parquet").iterdir()) != written
    assert len(pd.read_parquet(tmp_path / "scored.parquet")) == 344


def _written(folder: Path) -> list[str]:
    """What a job wrote or left in ``folder``, the tracking store aside."""
    return sorted(
        p.name for p in folder.iterdir() if not p.name.startswith(("mlflow.db", "mlruns"))
    )


def _runs() -> pd.DataFrame:
    return mlflow.search_runs([e.experiment_id for e in mlflow.search_experiments()])


def test_bad_input_on_spark_is_one_line_and_leaves_no_output(spark, fitted, tmp_path):
    model = fitted.run_ids_["model"]
    raw = _raw()
    frame = spark.createDataFrame(raw)
    before = len(_runs())
    with pytest.raises(ValueError, match=r"^The input lacks column\(s\) \['sex'\] that"):
        mlpipe.score(model, frame.drop("sex"), output=tmp_path / "a.parquet")
    with pytest.raises(
        ValueError,
        match=r"^Column 'island' holds numbers \(double\), but the model was trained on text",
    ):
        mlpipe.score(
            model, frame.withColumn("island", frame["year"]), output=tmp_path / "b.parquet"
        )
    with pytest.raises(ValueError, match="^Scoring on Spark writes the predictions to Parquet"):
        mlpipe.score(model, frame)
    with pytest.raises(ValueError, match=r"^A Spark DataFrame is scored in its own session"):
        mlpipe.score(model, frame, output=tmp_path / "c.parquet", spark="local[2]")
    with pytest.raises(SourceError, match="there is no such file"):
        mlpipe.score(model, "nowhere.parquet", output=tmp_path / "d.parquet", spark="local[2]")
    assert len(_runs()) == before  # refused before any run

    # Text in a number column, past the rows checked on the driver: the executors'
    # model refuses it; the run ends FAILED and nothing is left in the folder.
    late = pd.concat([raw] * 4, ignore_index=True).astype({"bill_length_mm": "object"})
    late.loc[len(late) - 1, "bill_length_mm"] = "long"
    late["bill_length_mm"] = late["bill_length_mm"].map(lambda v: None if pd.isna(v) else str(v))
    with pytest.raises(ValueError, match=r"^Scoring on Spark failed: \w+Error: .*'long'") as caught:
        mlpipe.score(model, spark.createDataFrame(late), output=tmp_path / "late.parquet")
    assert "\n" not in str(caught.value)
    failed = _runs().sort_values("start_time").iloc[-1]
    assert failed["status"] == "FAILED"
    assert failed[f"tags.{schema.SPARK_MASTER}"] == "local[2]"
    assert _written(tmp_path) == []


def test_without_pyspark_spark_is_a_one_line_error_saying_how_to_install_it(
    monkeypatch, fitted, tmp_path, capsys
):
    # Needs no Spark: this is what a machine without pyspark sees.
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    _raw().to_parquet(tmp_path / "new.parquet")
    argv = ["score", fitted.run_ids_["model"], "--input", "new.parquet", "--output", "s.parquet"]
    assert main([*argv, "--spark", "local[2]"]) == 2
    assert capsys.readouterr().err == (
        "mlpipe score: error: Scoring on Spark needs pyspark, which is not installed: pip "
        "install 'mlpipe[spark]' (pyspark, and Java 17 or later).\n"
    )
    assert _written(tmp_path) == ["new.parquet"]


def test_spark_tests_skip_without_java_but_fail_under_ci(monkeypatch):
    from tests._spark import require_spark

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="java is not on PATH"):
        require_spark()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the Spark tests"):
        require_spark()
