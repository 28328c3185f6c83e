"""mlpipe.score and ``mlpipe score``: chunked predictions on frames, files and SQL tables,
logged as a ``score`` stage run downstream of the model, on a real SQLite store and
the real Palmer penguins (text columns, missing values, an integer ``year``)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from palmerpenguins import load_penguins

import mlpipe
from mlpipe import schema
from mlpipe.cli import main
from mlpipe.cli._demo import penguins_pipeline
from mlpipe.exceptions import NotFoundError, SourceError

TARGET = "species"


@pytest.fixture
def fitted() -> tuple[mlpipe.LineagePipeline, pd.DataFrame]:
    """The demo chain fitted (without cross-validation) in this test's store."""
    raw = load_penguins()
    X, y = raw.drop(columns=TARGET), raw[TARGET]
    return penguins_pipeline().set_params(cv=None).fit(X, y), X


def _whole(pipe: mlpipe.LineagePipeline, X: pd.DataFrame) -> pd.DataFrame:
    """One predict (and predict_proba) call of the logged model on the whole frame."""
    model = mlflow.pyfunc.load_model(pipe.model_uri_)
    out = pd.DataFrame({"prediction": model.predict(X)}, index=X.index)
    proba = model.predict(X, params={"method": "predict_proba"})
    for name in proba.columns:
        out[f"proba_{name}"] = proba[name].to_numpy()
    return out


def _runs(stage: str | None = None) -> pd.DataFrame:
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    runs = mlflow.search_runs(experiments)
    if stage is not None and len(runs):
        runs = runs[runs[f"tags.{schema.STAGE}"] == stage]
    return runs


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_chunks_of_a_frame_predict_as_one_call_and_the_job_is_a_stage_downstream(fitted):
    pipe, X = fitted
    X = X.set_index(pd.Index([f"p{i}" for i in range(len(X))], name="penguin"))
    scored = mlpipe.score(pipe.run_ids_["model"], X, proba=True, chunk_rows=50)

    pd.testing.assert_frame_equal(scored, _whole(pipe, X))  # row for row, index kept
    run = mlflow.get_run(scored.attrs["run_id"])
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert tags[schema.STAGE] == schema.SCORE_STAGE
    assert tags[schema.UPSTREAM] == pipe.run_ids_["model"]
    assert tags[schema.SCORED_MODEL] == pipe.model_uri_
    # A frame given whole gets the fingerprint a load run of it would have.
    assert tags[schema.INPUT_FINGERPRINT] == mlpipe.fingerprint(X)
    assert params[schema.ROWS] == str(len(X))
    assert run.data.metrics[schema.SCORE_TIME] > 0
    assert mlflow.get_experiment(run.info.experiment_id).name == "score"

    below = mlpipe.descendants(pipe.run_ids_["model"])
    assert [(e.stage, e.run_id) for e in below] == [("score", run.info.run_id)]
    above = [e.stage for e in mlpipe.lineage(run.info.run_id)]
    assert above == ["load", "processing", "model", "score"]


def _penguins_with_an_id() -> pd.DataFrame:
    raw = load_penguins().drop(columns=TARGET)
    return raw.assign(penguin_id=np.arange(1000, 1000 + len(raw)))


@pytest.mark.parametrize("kind", ["parquet", "csv", "sql"])
def test_files_and_tables_are_scored_chunk_by_chunk_into_parquet(fitted, tmp_path, kind):
    pipe, _ = fitted
    raw = _penguins_with_an_id()
    if kind == "parquet":
        data, options = tmp_path / "penguins.parquet", {}
        raw.to_parquet(data, index=False, row_group_size=100)
    elif kind == "csv":
        data, options = tmp_path / "penguins.csv", {}
        raw.to_csv(data, index=False)
    else:
        with sqlite3.connect(tmp_path / "shop.db") as connection:
            raw.to_sql("penguins", connection, index=False)
        data, options = f"sqlite:///{tmp_path / 'shop.db'}", {"table": "penguins"}
    output = tmp_path / "out" / "scored.parquet"
    output.parent.mkdir()

    run_id = mlpipe.score(
        pipe.run_ids_["model"],
        data,
        output=output,
        proba=True,
        keep=["penguin_id"],
        chunk_rows=64,
        **options,
    )

    written = pd.read_parquet(output)
    expected = _whole(pipe, raw.drop(columns="penguin_id")).reset_index(drop=True)
    pd.testing.assert_frame_equal(written.drop(columns="penguin_id"), expected, check_dtype=False)
    assert written["penguin_id"].tolist() == raw["penguin_id"].tolist()
    assert sorted(p.name for p in output.parent.iterdir()) == ["scored.parquet"]  # no temporary
    assert pq.ParquetFile(output).metadata.num_row_groups == 6  # 344 rows, 64 a chunk
    run = mlflow.get_run(run_id)
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert tags[schema.SCORE_OUTPUT] == str(output)
    assert tags[schema.SCORE_OUTPUT_DIGEST] == _sha256(output)
    assert params[schema.ROWS] == "344" and params[schema.CHUNK_ROWS] == "64"
    assert tags[schema.SOURCE] == (str(data) if kind == "sql" else str(data.resolve()))
    assert tags[schema.TYPE] == ("penguins")
    assert len(tags[schema.INPUT_FINGERPRINT]) == 32
    assert [e.run_id for e in mlpipe.descendants(pipe.run_ids_["model"])] == [run_id]


def test_the_input_fingerprint_follows_the_content(fitted, tmp_path):
    pipe, X = fitted
    model = pipe.run_ids_["model"]
    X.to_parquet(tmp_path / "a.parquet")
    X.to_parquet(tmp_path / "same.parquet")
    X.assign(year=X["year"] + 1).to_parquet(tmp_path / "changed.parquet")

    def printed(name: str, chunk_rows: int) -> str:
        run_id = mlpipe.score(
            model,
            tmp_path / name,
            output=tmp_path / "out.parquet",
            overwrite=True,
            chunk_rows=chunk_rows,
        )
        return mlflow.get_run(run_id).data.tags[schema.INPUT_FINGERPRINT]

    assert printed("a.parquet", 100) == printed("same.parquet", 100)
    assert printed("a.parquet", 100) != printed("changed.parquet", 100)
    # Read in one chunk, a file has the fingerprint of the frame read from it.
    assert printed("a.parquet", 1000) == mlpipe.fingerprint(pd.read_parquet(tmp_path / "a.parquet"))


def test_every_kind_of_model_reference_scores_with_the_same_model(tracking_store):
    raw = load_penguins()
    X, y = raw.drop(columns=TARGET), raw[TARGET]
    pipe = penguins_pipeline().set_params(cv=None, registered_model_name="penguins").fit(X, y)
    mlflow.MlflowClient().set_registered_model_alias("penguins", "champion", "1")
    model_run = pipe.run_ids_["model"]
    expected = _whole(pipe, X)["prediction"]
    for reference in (
        model_run,
        f"runs:/{model_run}/model",
        pipe.model_uri_,
        "models:/penguins@champion",
        "penguins@champion",
        "models:/penguins/1",
    ):
        scored = mlpipe.score(reference, X.head(40))
        assert scored["prediction"].tolist() == expected.head(40).tolist(), reference
        tags = mlflow.get_run(scored.attrs["run_id"]).data.tags
        assert tags[schema.UPSTREAM] == model_run, reference
        assert tags[schema.SCORED_MODEL] == pipe.model_uri_, reference  # not the alias

    with pytest.raises(NotFoundError, match="no alias 'gone'"):
        mlpipe.score("models:/penguins@gone", X)
    with pytest.raises(ValueError, match="no raw-input model: it is a run of stage 'processing'"):
        mlpipe.score(pipe.run_ids_["processing"], X)


def _no_run_left_running() -> None:
    runs = _runs()
    assert not len(runs) or "RUNNING" not in set(runs["status"])


def _score_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["-q", "score", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_scores_a_file_and_lineage_reaches_the_job(fitted, tmp_path, capsys):
    pipe, X = fitted
    X.to_csv(tmp_path / "penguins.csv", index=False)
    output = tmp_path / "scored.parquet"
    argv = [pipe.run_ids_["model"], "--input", str(tmp_path / "penguins.csv")]
    argv += ["--output", str(output), "--proba", "--keep", "island", "sex", "--chunk-rows", "100"]

    code, out, err = _score_cli(capsys, *argv)

    assert (code, err) == (0, "")
    written = pd.read_parquet(output)
    assert list(written.columns[:3]) == ["island", "sex", "prediction"]
    assert written["prediction"].tolist() == _whole(pipe, X)["prediction"].tolist()
    (score_run,) = _runs("score")["run_id"]
    assert out.startswith(f"score run {score_run} (penguins@")
    assert out.endswith(f"): 344 rows scored into {output}\n")

    assert main(["-q", "lineage", score_run]) == 0
    shown = capsys.readouterr().out
    assert [line.split()[0] for line in shown.splitlines()[1:]] == [
        "load",
        "processing",
        "model",
        "score",
    ]

    # The same output again: refused, the file untouched; --overwrite replaces it.
    before = output.read_bytes()
    code, out, err = _score_cli(capsys, *argv)
    assert code == 2 and output.read_bytes() == before
    assert err.startswith("mlpipe score: error: Output ") and "--overwrite" in err
    code, _, err = _score_cli(capsys, *argv, "--overwrite")
    assert (code, err) == (0, "")
    assert len(_runs("score")) == 2


def _bad_inputs(X: pd.DataFrame, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Inputs the model cannot take, and a phrase each error must say."""
    X.drop(columns="flipper_length_mm").to_parquet(tmp_path / "missing.parquet")
    X.assign(island=np.arange(len(X))).to_parquet(tmp_path / "numbers.parquet")
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    (tmp_path / "binary.csv").write_bytes(b"\x00\xff\xfe" * 40)
    # A type change in the last chunk only: found after the first chunks were written.
    late = X.astype({"bill_length_mm": object})
    late.loc[300, "bill_length_mm"] = "unmeasured"
    late.to_csv(tmp_path / "late.csv", index=False)
    return {
        "missing column": (
            tmp_path / "missing.parquet",
            "lacks column(s) ['flipper_length_mm'] that the model needs",
        ),
        "text as numbers": (
            tmp_path / "numbers.parquet",
            "Column 'island' holds numbers (int64), but the model was trained on text there",
        ),
        "not parquet": (tmp_path / "garbage.parquet", "as Parquet"),
        "not csv": (tmp_path / "binary.csv", "as CSV"),
        "late type change": (tmp_path / "late.csv", "Column 'bill_length_mm' must hold numbers"),
        "no such file": (tmp_path / "nowhere.csv", "there is no such file"),
    }


def test_bad_input_is_one_line_and_leaves_no_output_and_no_running_run(fitted, tmp_path, capsys):
    pipe, X = fitted
    out = tmp_path / "out"
    out.mkdir()
    for case, (data, phrase) in _bad_inputs(X, tmp_path).items():
        argv = [pipe.run_ids_["model"], "--input", str(data), "--output", str(out / "p.parquet")]
        code, stdout, err = _score_cli(capsys, *argv, "--chunk-rows", "100")
        assert code == 2, case
        assert err.startswith("mlpipe score: error: ") and phrase in err, (case, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (case, err)
        assert list(out.iterdir()) == [], case  # no output, not even a temporary one
        _no_run_left_running()
    # Only the failure found after the run started left a run, and it ended FAILED.
    assert _runs("score")["status"].tolist() == ["FAILED"]


def test_output_must_be_parquet_and_keep_columns_must_exist(fitted, tmp_path):
    pipe, X = fitted
    model = pipe.run_ids_["model"]
    with pytest.raises(
        ValueError, match=r"expected a Parquet file ending in .parquet or .pq, got '.csv'"
    ):
        mlpipe.score(model, X, output=tmp_path / "p.csv")
    with pytest.raises(ValueError, match=r"Cannot keep column\(s\) \['id'\]"):
        mlpipe.score(model, X, keep=["id"])
    with pytest.raises(ValueError, match="chunk_rows must be a positive integer, got 0"):
        mlpipe.score(model, X, chunk_rows=0)
    with pytest.raises(SourceError, match="Give exactly one of table= or query="):
        mlpipe.score(model, "sqlite:///shop.db", output=tmp_path / "p.parquet")
    assert list(tmp_path.glob("*.parquet")) == []
    assert len(_runs("score")) == 0


def test_a_database_password_is_never_shown(fitted, tmp_path, capsys):
    pipe, _ = fitted
    url = "postgresql+psycopg://ana:s3cret-pw@127.0.0.1:9/shop?connect_timeout=2"
    argv = [pipe.run_ids_["model"], "--input", url, "--table", "penguins"]
    code, out, err = _score_cli(capsys, *argv, "--output", str(tmp_path / "p.parquet"))
    assert code == 2
    assert "s3cret-pw" not in out + err and "ana:***@127.0.0.1" in err
    assert list(tmp_path.glob("*.parquet")) == []
    _no_run_left_running()


def test_a_query_is_scored_and_logged_with_its_text(fitted, tmp_path):
    pipe, X = fitted
    with sqlite3.connect(tmp_path / "shop.db") as connection:
        X.to_sql("penguins", connection, index=False)
    query = "SELECT * FROM penguins WHERE island = 'Biscoe' ORDER BY rowid"
    scored = mlpipe.score(pipe.run_ids_["model"], f"sqlite:///{tmp_path / 'shop.db'}", query=query)
    biscoe = X[X["island"] == "Biscoe"].reset_index(drop=True)
    assert scored["prediction"].tolist() == _whole(pipe, biscoe)["prediction"].tolist()
    run = mlflow.get_run(scored.attrs["run_id"])
    assert run.data.params["query"] == query and run.data.tags[schema.TYPE] == "query"


def test_a_kept_integer_column_stays_integer_when_a_later_chunk_misses_values(fitted, tmp_path):
    pipe, X = fitted
    # pandas reads the chunk with a missing id as floats; the output keeps the first
    # chunk's integers, the missing one a null.
    X.assign(penguin_id=pd.array([*range(343), None], dtype="Int64")).to_csv(
        tmp_path / "ids.csv", index=False
    )
    output = tmp_path / "scored.parquet"
    mlpipe.score(
        pipe.run_ids_["model"],
        tmp_path / "ids.csv",
        output=output,
        keep=["penguin_id"],
        chunk_rows=100,
    )
    ids = pq.read_table(output).column("penguin_id")
    assert str(ids.type) == "int64" and ids.to_pylist() == [*range(343), None]


def test_proba_of_a_regressor_is_refused_before_a_run(tmp_path):
    raw = load_penguins().dropna(subset=["body_mass_g"])
    X, y = raw.drop(columns="body_mass_g"), raw["body_mass_g"]
    steps = [
        ("processing", mlpipe.LOGICS.build("plain")),
        ("model", mlpipe.ALGORITHMS.build("ridge")),
    ]
    pipe = mlpipe.LineagePipeline(steps, cv=None).fit(X, y)
    with pytest.raises(ValueError, match="proba=True needs a model with predict_proba; .* Ridge"):
        mlpipe.score(pipe.run_ids_["model"], X, proba=True, output=tmp_path / "p.parquet")
    assert list(tmp_path.glob("*.parquet")) == [] and len(_runs("score")) == 0
    scored = mlpipe.score(pipe.run_ids_["model"], X)
    assert scored["prediction"].dtype == "float64" and len(scored) == len(X)
