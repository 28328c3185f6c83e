"""What the stage cache trusts: digests, complete metadata, and who created a run.

Anyone who can write to the tracking store can create a run that carries a victim's
cache key. These tests forge such runs the way an attacker (or a broken tool) would,
through the ordinary MLflow client, and check what a fit then reuses (issue 11,
item 10).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path

import mlflow
import numpy as np
import pytest
import skops.io
from mlflow.entities import Run
from palmerpenguins import load_penguins
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

import mlpipe
from mlpipe import _chain, schema
from mlpipe.exceptions import StageError

RECORDED: list[str] = []


def _record() -> None:
    """Called when the forged pickle below is unpickled: proof that it was loaded."""
    RECORDED.append("unpickled")


class Bomb:
    def __reduce__(self):
        return (_record, ())


@pytest.fixture(autouse=True)
def _alice(monkeypatch):
    # The user MLflow records for runs this process creates (as `mlflow.user`).
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    RECORDED.clear()


@pytest.fixture
def data():
    raw = load_penguins().dropna()
    return raw[["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]], raw["species"]


def _pipe(C: float = 1.0, **settings) -> mlpipe.LineagePipeline:
    return mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression(C=C, max_iter=1000))],
        **{"cv": None, "log_model": False, **settings},
    )


def _client() -> mlflow.MlflowClient:
    return mlflow.MlflowClient()


def _sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _replace_artifact(run_id: str, name: str, data: bytes, tmp_path: Path) -> None:
    folder = tmp_path / "replacement"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    # Through MLflow, so this works on any artifact store.
    _client().log_artifact(run_id, str(folder / name), schema.STAGE_ARTIFACT)


def _forge(
    like: Run, *, tags: dict[str, str | None], files: dict[str, bytes], tmp_path: Path
) -> str:
    """A FINISHED run in ``like``'s experiment with its tags, changed by ``tags`` (None
    drops one), holding ``files`` under stage/: what anyone with write access can make."""
    client = _client()
    forged_tags = {
        k: v for k, v in like.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.user"
    }
    for k, v in tags.items():
        if v is None:
            forged_tags.pop(k, None)
        else:
            forged_tags[k] = v
    run = client.create_run(like.info.experiment_id, tags=forged_tags)
    folder = tmp_path / f"forged-{run.info.run_id}"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
        client.log_artifact(run.info.run_id, str(folder / name), schema.STAGE_ARTIFACT)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _stage_bytes(run_id: str, name: str = schema.STAGE_FILE) -> bytes:
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=f"{schema.STAGE_ARTIFACT}/{name}"
    )
    return Path(path).read_bytes()


def _infos(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mlpipe"]


# --- digests ---------------------------------------------------------------------------------


def test_every_stage_run_records_the_digest_of_its_stage_and_its_user(data):
    X, y = data
    pipe = _pipe().fit(X, y)
    for stage in ("processing", "model"):
        run = _client().get_run(pipe.run_ids_[stage])
        stored = _stage_bytes(run.info.run_id)
        assert run.data.tags[schema.STAGE_DIGEST] == _sha256(stored)
        assert run.data.tags[schema.MLFLOW_USER] == "alice"
        assert run.info.user_id == "alice"


def test_a_stage_replaced_after_its_run_finished_is_never_unpickled(data, tmp_path, caplog):
    X, y = data
    first = _pipe().fit(X, y)
    processing = first.run_ids_["processing"]
    _replace_artifact(processing, schema.STAGE_FILE, pickle.dumps(Bomb()), tmp_path)
    caplog.set_level(logging.INFO, logger="mlpipe")
    again = _pipe(C=0.5).fit(X, y)
    assert RECORDED == []
    assert again.reused_ == []
    assert again.run_ids_["processing"] != processing
    assert any(processing in m and "digest" in m for m in _infos(caplog)), _infos(caplog)
    np.testing.assert_array_equal(again.predict(X), _pipe(C=0.5, cache=False).fit(X, y).predict(X))


def test_a_partially_written_stage_is_refitted(data, tmp_path, caplog):
    X, y = data
    first = _pipe().fit(X, y)
    processing = first.run_ids_["processing"]
    whole = _stage_bytes(processing)
    _replace_artifact(processing, schema.STAGE_FILE, whole[: len(whole) // 2], tmp_path)
    caplog.set_level(logging.INFO, logger="mlpipe")
    again = _pipe().fit(X, y)
    assert "processing" not in again.reused_
    assert again.run_ids_["processing"] != processing
    assert any(processing in m and "digest" in m for m in _infos(caplog)), _infos(caplog)


def test_load_stage_checks_the_digest(data, tmp_path):
    X, y = data
    first = _pipe().fit(X, y)
    processing = first.run_ids_["processing"]
    _replace_artifact(processing, schema.STAGE_FILE, pickle.dumps(Bomb()), tmp_path)
    with pytest.raises(mlpipe.exceptions.SerializationError, match="digest"):
        mlpipe.load_stage(processing)
    assert RECORDED == []


def test_a_replaced_stored_output_is_never_unpickled(data, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(_chain, "OUTPUT_CACHE_SECONDS", 0.0)  # every stage stores its output
    X, y = data
    first = _pipe().fit(X, y)
    processing = first.run_ids_["processing"]
    assert _client().get_run(processing).data.tags[schema.OUTPUT_DIGEST].startswith("sha256:")
    _replace_artifact(processing, schema.STAGE_OUTPUT, pickle.dumps(Bomb()), tmp_path)
    caplog.set_level(logging.INFO, logger="mlpipe")
    warm = _pipe(C=0.5).fit(X, y)
    assert RECORDED == []
    assert warm.reused_ == ["processing"]  # the stage itself is intact: only its output is not
    np.testing.assert_array_equal(warm.predict(X), _pipe(C=0.5, cache=False).fit(X, y).predict(X))


# --- complete metadata -----------------------------------------------------------------------

REQUIRED = [
    schema.KEY,
    schema.STAGE,
    schema.TYPE,
    schema.SERIALIZER,
    schema.STAGE_DIGEST,
    schema.SCHEMA_VERSION_TAG,
]


@pytest.mark.parametrize("tag", REQUIRED)
def test_a_run_missing_a_required_tag_is_refitted_not_reused(data, tag, caplog):
    X, y = data
    first = _pipe().fit(X, y)
    processing = first.run_ids_["processing"]
    _client().delete_tag(processing, tag)
    caplog.set_level(logging.INFO, logger="mlpipe")
    again = _pipe(C=0.5).fit(X, y)  # never crashes
    assert again.reused_ == []
    assert again.run_ids_["processing"] != processing
    assert any(processing in m and tag in m for m in _infos(caplog)), _infos(caplog)


def test_a_run_of_another_schema_version_is_refitted(data, caplog):
    X, y = data
    first = _pipe().fit(X, y)
    processing = first.run_ids_["processing"]
    _client().set_tag(processing, schema.SCHEMA_VERSION_TAG, "1")
    caplog.set_level(logging.INFO, logger="mlpipe")
    again = _pipe(C=0.5).fit(X, y)
    assert again.reused_ == []
    assert any(processing in m and schema.SCHEMA_VERSION_TAG in m for m in _infos(caplog))


def test_a_final_stage_without_its_model_is_refitted_when_a_model_is_wanted(data, caplog):
    X, y = data
    first = _pipe(log_model=True).fit(X, y)
    model = first.run_ids_["model"]
    _client().delete_tag(model, schema.MODEL_URI)
    caplog.set_level(logging.INFO, logger="mlpipe")
    again = _pipe(log_model=True).fit(X, y)
    assert again.reused_ == ["processing"]
    assert any(model in m and schema.MODEL_URI in m for m in _infos(caplog)), _infos(caplog)


def test_a_forged_run_without_a_stage_key_does_not_crash_the_fit(data, tmp_path, caplog):
    # Newer than the real run, so it is the first candidate of the lookup.
    X, y = data
    first = _pipe().fit(X, y)
    real = _client().get_run(first.run_ids_["processing"])
    forged = _forge(
        real,
        tags={schema.KEY: None},
        files={schema.STAGE_FILE: _stage_bytes(real.info.run_id)},
        tmp_path=tmp_path,
    )
    caplog.set_level(logging.INFO, logger="mlpipe")
    again = _pipe(C=0.5).fit(X, y)
    assert again.reused_ == ["processing"]
    assert again.run_ids_["processing"] == real.info.run_id  # the complete, older one
    assert any(forged in m and schema.KEY in m for m in _infos(caplog)), _infos(caplog)


def test_a_copy_that_names_a_run_of_another_key_is_not_reused(data, tmp_path, caplog):
    X, y = data
    first = _pipe().fit(X, y)
    real = _client().get_run(first.run_ids_["processing"])
    other = _pipe().set_params(processing__with_mean=False).fit(X, y)
    forged = _forge(
        real,
        tags={schema.REUSED_FROM: other.run_ids_["processing"]},
        files={},
        tmp_path=tmp_path,
    )
    caplog.set_level(logging.INFO, logger="mlpipe")
    again = _pipe(C=0.5).fit(X, y)
    assert again.run_ids_["processing"] == real.info.run_id
    assert any(forged in m for m in _infos(caplog)), _infos(caplog)


# --- who created a run -----------------------------------------------------------------------


def _forged_scaler(real: Run, X, *, user: str, tmp_path: Path) -> str:
    """Mallory's run: the victim's key, a scaler that is off, a correct digest."""
    scaler = StandardScaler().fit(X)
    scaler.mean_ = scaler.mean_ + 3 * scaler.scale_
    data = skops.io.dumps(scaler)  # only trusted types: skops loads it without complaint
    return _forge(
        real,
        tags={"mlflow.user": user, schema.STAGE_DIGEST: _sha256(data)},
        files={schema.STAGE_SKOPS_FILE: data},
        tmp_path=tmp_path,
    )


def test_a_forged_stage_is_reused_unless_only_trusted_users_are_reused(data, tmp_path, caplog):
    X, y = data
    first = _pipe(serializer="skops").fit(X, y)
    real = _client().get_run(first.run_ids_["processing"])
    accuracy = first.score(X, y)
    forged = _forged_scaler(real, X, user="mallory", tmp_path=tmp_path)

    # What the docs warn about: the store's writers are trusted by default. The same
    # fit again takes mallory's scaler under alice's own model.
    fooled = _pipe(serializer="skops").fit(X, y)
    assert fooled.reused_ == ["processing", "model"]
    assert fooled.run_ids_["processing"] == forged
    assert fooled.score(X, y) < accuracy - 0.2

    caplog.set_level(logging.INFO, logger="mlpipe")
    safe = _pipe(serializer="skops", trusted_users=["alice"]).fit(X, y)
    assert safe.reused_ == ["processing", "model"]
    assert safe.run_ids_["processing"] == real.info.run_id
    assert safe.score(X, y) == accuracy
    said = [m for m in _infos(caplog) if forged in m and "not reused" in m]
    assert said and "mallory" in said[0] and "trusted_users" in said[0], _infos(caplog)


def test_trusted_users_also_guard_the_run_a_copy_reuses(data, tmp_path):
    X, y = data
    frame = X.assign(species=y)
    first = _pipe().fit(mlpipe.load(frame, name="penguins", target="species"))
    # The same content under another name: loading the very same frame again would
    # return the first load run itself.
    second_pull = mlpipe.load(frame, name="penguins_again", target="species")
    copy = _pipe().fit(second_pull)
    assert copy.reused_ == ["processing", "model"]
    copied = copy.run_ids_["processing"]
    assert _client().get_run(copied).data.tags[schema.REUSED_FROM] == first.run_ids_["processing"]
    # The copy itself is alice's; the run it reuses from is now claimed by someone else.
    _client().set_tag(first.run_ids_["processing"], "mlflow.user", "mallory")
    again = _pipe(C=0.5, trusted_users=["alice"]).fit(second_pull)
    assert again.reused_ == []


def test_a_fit_reuses_its_own_load_run_only_from_trusted_users(data):
    X, y = data
    first = _pipe().fit(X, y)
    same = _pipe(trusted_users=["alice"]).fit(X, y)
    assert same.run_ids_ == first.run_ids_
    elsewhere = _pipe(trusted_users=["bob"]).fit(X, y)
    assert elsewhere.run_ids_["load"] != first.run_ids_["load"]
    assert elsewhere.reused_ == []


def test_trusted_users_is_a_parameter_like_any_other():
    pipe = _pipe(trusted_users=["alice", "bob"])
    assert pipe.get_params()["trusted_users"] == ["alice", "bob"]
    assert clone(pipe).get_params()["trusted_users"] == ["alice", "bob"]
    assert pipe[:1].trusted_users == ["alice", "bob"]
    assert _pipe().trusted_users is None


def test_trusted_users_must_be_a_list_of_names(data):
    X, y = data
    with pytest.raises(InvalidParameterError, match="trusted_users"):
        _pipe(trusted_users="alice").fit(X, y)
    with pytest.raises(StageError, match="trusted_users"):
        _pipe(trusted_users=["alice", 7]).fit(X, y)
