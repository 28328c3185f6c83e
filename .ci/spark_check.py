"""CI: score 1,000,000 raw rows on a local Spark and compare with in-memory predictions;
then a small search whose fits run on that Spark through joblibspark.

The rows are the penguins resampled with 2 % more missing values in every feature
column (benchmarks/bench_score.py's generator, seed 0), plus a row number to compare
by. Exits non-zero on any difference. Run by .ci/run with PYSPARK_PYTHON set.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROWS = 1_000_000

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def main() -> None:
    import bench_score
    import joblib
    import joblibspark
    import mlflow
    import pandas as pd
    from palmerpenguins import load_penguins
    from pyspark.sql import SparkSession
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    import mlpipe
    from mlpipe.cli._demo import penguins_pipeline

    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas")
    work = Path(tempfile.mkdtemp(prefix="ci_spark_"))
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    raw = load_penguins()
    pipe = penguins_pipeline().set_params(cv=None).fit(raw.drop(columns="species"), raw["species"])

    generated = work / "generated.parquet"
    bench_score.generate(generated, ROWS)
    frame = pd.read_parquet(generated)
    frame.insert(0, "row", range(len(frame)))
    assert frame["sex"].isna().any() and frame["bill_length_mm"].isna().any()
    data = work / "raw.parquet"
    frame.to_parquet(data, index=False)
    print(f"{len(frame):,} raw rows, {int(frame.isna().sum().sum()):,} missing cells")

    session = SparkSession.builder.master("local[2]").getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    started = time.perf_counter()
    run_id = mlpipe.score(
        pipe.run_ids_["model"],
        str(data),
        output=work / "scored.parquet",
        keep=["row"],
        spark="local[2]",
    )
    print(f"scored on Spark local[2] in {time.perf_counter() - started:.1f} s: run {run_id}")
    got = pd.read_parquet(work / "scored.parquet").sort_values("row")["prediction"].to_numpy()
    expected = mlflow.pyfunc.load_model(pipe.model_uri_).predict(frame)
    differ = int((got != expected).sum())
    assert len(got) == ROWS and differ == 0, f"{differ} of {len(got)} predictions differ"
    assert mlflow.get_run(run_id).data.params["rows"] == str(ROWS)
    print("Spark predictions equal the in-memory predictions, row for row")

    joblibspark.register_spark()
    before = {
        r.info.run_id for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
    }
    search = GridSearchCV(LogisticRegression(max_iter=1000), {"C": [0.1, 1.0, 10.0]}, cv=3)
    chain = mlpipe.LineagePipeline(
        [("processing", mlpipe.LOGICS.build("plain")), ("model", search)], cv=None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with joblib.parallel_config(backend="spark", n_jobs=2):
            chain.fit(raw.drop(columns="species"), raw["species"])
    after = {
        r.info.run_id for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
    }
    new = after - before
    # Only the chain's own runs (its load run, the same data as above, is reused).
    assert chain.run_ids_["model"] in new, "the search's model run was not logged"
    assert new <= set(chain.run_ids_.values()), f"{len(new)} runs logged, not only the chain's"
    best = mlflow.get_run(chain.run_ids_["model"]).data.params["best.C"]
    print(f"distributed search: one chain ({len(new)} runs), best C = {best}")
    session.stop()


if __name__ == "__main__":
    if "PYSPARK_PYTHON" not in os.environ:
        sys.exit("set PYSPARK_PYTHON to the venv's python")
    main()
