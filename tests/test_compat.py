"""mlpipe._compat against the installed MLflow: one test per internal it wraps.

An MLflow upgrade that moves or changes one of them fails the test named after it.
The process-wide switches mlpipe makes (an environment variable, logging filters,
the warnings hook, ``sys.path``, cloudpickle's by-value registry) are checked to
come back exactly as they were, when the block raises too.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from mlpipe import _compat, schema
from mlpipe.model import _package, _raw, _serialize, _skops, _skops_model

_URL_SWITCH = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


class Echo(PythonModel):
    """Predicts its input frame back, with a NaN and numpy scalars in it."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        out = model_input.assign(half=model_input["x"] / 2)
        out.loc[out.index[0], "half"] = np.nan
        return out


class Fails(PythonModel):
    """Crashes on any input, or rejects it when the frame has a column ``reject``."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        if "reject" in model_input.columns:
            raise MlflowException.invalid_parameter_value("column 'reject' is not allowed")
        raise RuntimeError("the model broke")


def _log(python_model: PythonModel, **kwargs: Any) -> Any:
    # Explicit requirements: inferring them spends seconds in a subprocess.
    with _compat.quiet():
        return mlflow.pyfunc.log_model(
            name="m", python_model=python_model, pip_requirements=["mlflow"], **kwargs
        )


def _saved(tmp_path: Path, python_model: PythonModel) -> Any:
    path = tmp_path / "model"
    with _compat.quiet():
        mlflow.pyfunc.save_model(path, python_model=python_model, pip_requirements=["mlflow"])
    return mlflow.pyfunc.load_model(str(path))


def _served(model: Any, frame: pd.DataFrame) -> Any:
    """What MLflow's scoring server does with a ``dataframe_split`` request."""
    from mlflow.pyfunc import scoring_server

    body = json.dumps({"dataframe_split": frame.to_dict(orient="split")})
    return scoring_server.invocations(body, "application/json", model, None)


# --- tracking store ----------------------------------------------------------------------


def test_hard_delete_store_finds_and_removes_deleted_runs_and_models(tracking_store):
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("compat")
    run_id = client.create_run(experiment_id).info.run_id
    model_id = mlflow.initialize_logged_model(
        name="m", source_run_id=run_id, experiment_id=experiment_id
    ).model_id
    client.delete_logged_model(model_id)
    client.delete_run(run_id)

    store = _compat.HardDeleteStore(tracking_store)

    assert store.supported, f"MLflow's SQL store lost a method gc needs ({store.kind})"
    assert store.deleted_run_ids() == [run_id]
    assert store.deleted_run_ids(older_than_ms=86_400_000) == []  # deleted just now
    assert store.deleted_logged_model_ids() == [model_id]
    assert store.logged_model(model_id).source_run_id == run_id
    store.hard_delete_logged_model(model_id)
    store.hard_delete_run(run_id)
    assert store.deleted_run_ids() == [] and store.deleted_logged_model_ids() == []
    with pytest.raises(MlflowException):
        client.get_run(run_id)


def test_hard_delete_store_of_a_tracking_server_is_not_supported():
    store = _compat.HardDeleteStore("http://127.0.0.1:9")  # never contacted
    assert not store.supported
    assert store.kind == "RestStore"


def test_delete_artifacts_removes_the_files_under_a_uri():
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("compat"))
    client.log_text(run.info.run_id, "gone soon", "notes/a.txt")
    assert client.list_artifacts(run.info.run_id, "notes")

    _compat.delete_artifacts(run.info.artifact_uri)

    assert client.list_artifacts(run.info.run_id) == []


# --- models ------------------------------------------------------------------------------


def test_model_artifact_uri_resolves_every_form_of_model_uri():
    info = _log(Echo())
    mlflow.register_model(info.model_uri, "compat")
    mlflow.MlflowClient().set_registered_model_alias("compat", "champion", "1")
    location = mlflow.get_logged_model(info.model_id).artifact_location

    for uri in (info.model_uri, "models:/compat/1", "models:/compat@champion"):
        base = _compat.model_artifact_uri(uri)
        assert base.rstrip("/") == location.rstrip("/"), uri
        mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{base}/MLmodel")
        assert Path(mlmodel).is_file()


# --- serving -----------------------------------------------------------------------------


def test_predictions_json_is_what_the_scoring_server_answers(tmp_path):
    model = _saved(tmp_path, Echo())
    frame = pd.DataFrame({"x": [1, 2, 3], "name": ["a", "b", None]})

    served = _served(model, frame)

    assert served.status == 200
    expected = json.loads(served.response)["predictions"]
    in_process = _compat.predictions_json(model.predict(frame))
    assert json.dumps(in_process, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert _compat.predictions_json(np.array([1, 2])) == [1, 2]


def test_is_unexpected_model_error_tells_a_crash_from_a_rejection(tmp_path):
    model = _saved(tmp_path, Fails())

    with pytest.raises(MlflowException) as crash:
        _served(model, pd.DataFrame({"x": [1]}))
    with pytest.raises(MlflowException) as rejection:
        _served(model, pd.DataFrame({"reject": [1]}))

    assert crash.value.get_http_status_code() == 400
    assert _compat.is_unexpected_model_error(crash.value.message), (
        f"MLflow's scoring server words a model crash differently now: {crash.value.message!r}"
    )
    assert rejection.value.get_http_status_code() == 400
    assert not _compat.is_unexpected_model_error(rejection.value.message)


# --- the error code of the raw-input model (kept in _raw.py: see _compat's docstring) ----


def test_raw_model_error_code_is_mlflows_invalid_parameter_value(monkeypatch):
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    assert _raw.invalid_parameter_value() == INVALID_PARAMETER_VALUE == 1000
    error = _raw.InputError("column 'x' is missing")
    assert error.error_code == "INVALID_PARAMETER_VALUE"
    assert error.get_http_status_code() == 400
    # The fallback, should the module move, is the number: MLflow takes no name.
    monkeypatch.setitem(sys.modules, "mlflow.protos.databricks_pb2", None)
    assert _raw.invalid_parameter_value() == 1000
    assert MlflowException("x", error_code=1000).get_http_status_code() == 400
    assert MlflowException("x", error_code="INVALID_PARAMETER_VALUE").get_http_status_code() == 500


# --- the run link MLflow prints ---------------------------------------------------------


class _FakeServer(http.server.BaseHTTPRequestHandler):
    """Answers the two requests MLflow's client makes to end a run."""

    RUN = {
        "run_id": "r1",
        "run_uuid": "r1",
        "experiment_id": "1",
        "run_name": "linked-run",
        "status": "RUNNING",
        "lifecycle_stage": "active",
        "artifact_uri": "file:///nowhere",
    }

    def do_GET(self) -> None:
        self._answer({"run": {"info": self.RUN, "data": {}}})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer({"run_info": self.RUN})

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_suppressed_run_url_keeps_mlflow_from_printing_the_link(fake_server, capsys):
    client = mlflow.MlflowClient(fake_server)
    client.set_terminated("r1")
    assert "View run linked-run" in capsys.readouterr().out  # what is being suppressed

    with _compat.suppressed_run_url():
        client.set_terminated("r1")

    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("before", [None, "false", "true"])
def test_suppressed_run_url_puts_back_exactly_what_was_there(before, monkeypatch):
    if before is None:
        monkeypatch.delenv(_URL_SWITCH, raising=False)
    else:
        monkeypatch.setenv(_URL_SWITCH, before)

    with _compat.suppressed_run_url():
        assert os.environ[_URL_SWITCH] == "true"
        with _compat.suppressed_run_url():
            pass
        assert os.environ[_URL_SWITCH] == "true"  # the outer block still needs it
    assert os.environ.get(_URL_SWITCH) == before

    with pytest.raises(KeyError), _compat.suppressed_run_url():
        raise KeyError("boom")
    assert os.environ.get(_URL_SWITCH) == before


def test_suppressed_run_url_in_overlapping_threads_puts_back_what_was_there(monkeypatch):
    monkeypatch.setenv(_URL_SWITCH, "false")
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with _compat.suppressed_run_url():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with _compat.suppressed_run_url():
        second_in.set()
        first_out.wait(10)
        assert os.environ[_URL_SWITCH] == "true"  # the first leaving does not undo it
    thread.join()
    assert os.environ[_URL_SWITCH] == "false"


# --- quiet(): MLflow's chatter at DEBUG -------------------------------------------------


def _mlflow_like_warner() -> Any:
    """A function that warns as MLflow's own modules do (file and module inside mlflow)."""
    source = "import warnings\ndef warn():\n    warnings.warn('from inside MLflow', UserWarning)\n"
    filename = str(Path(mlflow.__file__).parent / "_mlpipe_compat_check.py")
    namespace: dict[str, Any] = {"__name__": "mlflow._mlpipe_compat_check"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["warn"]


def _debug_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mlpipe" and r.levelno == 10]


def _switches() -> tuple[Any, ...]:
    handlers = [h for name in ("mlflow", "alembic") for h in logging.getLogger(name).handlers]
    return (
        [list(h.filters) for h in handlers],
        list(warnings.filters),
        warnings.showwarning,
    )


def test_quiet_moves_mlflow_log_lines_to_debug_on_mlpipe(capsys, caplog):
    chatty = logging.getLogger("mlflow.compat_check")
    caplog.set_level(logging.DEBUG, logger="mlpipe")

    with _compat.quiet():
        chatty.info("Validating input example")
        chatty.warning("Passing a Python object")
        logging.getLogger("alembic.runtime.migration").warning("Updating database tables")
        chatty.error("a real error")

    err = capsys.readouterr().err
    assert "Validating" not in err and "Passing" not in err and "Updating" not in err
    assert "a real error" in err  # ERROR and above pass unchanged
    lines = _debug_lines(caplog)
    assert "INFO mlflow.compat_check: Validating input example" in lines
    assert "WARNING mlflow.compat_check: Passing a Python object" in lines
    assert "WARNING alembic.runtime.migration: Updating database tables" in lines

    chatty.info("outside the block")
    assert "outside the block" in capsys.readouterr().err  # as MLflow prints it


def test_quiet_moves_mlflow_warnings_to_debug_and_leaves_others(capsys, caplog):
    warn = _mlflow_like_warner()
    caplog.set_level(logging.DEBUG, logger="mlpipe")

    with _compat.quiet():
        warn()  # the test session turns warnings into errors: not this one
        with pytest.raises(UserWarning, match="not MLflow's"):
            warnings.warn("not MLflow's", UserWarning, stacklevel=1)

    assert capsys.readouterr().err == ""
    assert any(
        "UserWarning" in line and "from inside MLflow" in line for line in _debug_lines(caplog)
    )
    with pytest.warns(UserWarning, match="from inside MLflow"):
        warn()  # outside the block, a warning as before


def test_quiet_nests_and_puts_everything_back_even_on_errors(capsys):
    chatty = logging.getLogger("mlflow.compat_check")
    before = _switches()

    with pytest.raises(KeyError), _compat.quiet():
        with _compat.quiet():
            pass
        chatty.info("still quiet after the inner block")
        raise KeyError("boom")

    assert "still quiet" not in capsys.readouterr().err
    assert _switches() == before


def test_quiet_leaves_other_threads_alone(capsys):
    chatty = logging.getLogger("mlflow.compat_check")
    with _compat.quiet():
        thread = threading.Thread(target=chatty.info, args=("from another thread",))
        thread.start()
        thread.join()
    assert "from another thread" in capsys.readouterr().err


def test_quiet_log_model_prints_nothing(capsys, caplog):
    caplog.set_level(logging.DEBUG, logger="mlpipe")
    frame = pd.DataFrame({"x": [1.0, 2.0]})

    info = _log(Echo(), input_example=frame)

    printed = capsys.readouterr()
    assert printed.out == "" and printed.err == ""
    assert info.model_uri.startswith("models:/")
    assert any("Passing a Python object" in line for line in _debug_lines(caplog))


# --- sys.path and cloudpickle's registry --------------------------------------------------


def test_skops_model_code_takes_back_exactly_its_sys_path_entries(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    another_model = types.ModuleType(_skops_model.RAW_MODULE)
    monkeypatch.setitem(sys.modules, _skops_model.RAW_MODULE, another_model)
    monkeypatch.delitem(sys.modules, _skops_model.TRUSTED_MODULE, raising=False)
    before = list(sys.path)
    mlflow_copy = str(tmp_path / "gone" / "model" / "code")  # deleted by MLflow by then

    with pytest.raises(KeyError), _skops.model_code(tmp_path, []):
        assert sys.path[0] == str(tmp_path / "code")
        sys.modules.pop(_skops_model.RAW_MODULE)
        __import__(_skops_model.RAW_MODULE)  # this model's copy
        __import__(_skops_model.TRUSTED_MODULE)
        sys.path = [mlflow_copy, *sys.path]  # as MLflow 3.17 adds its copy
        sys.path.append("/added/meanwhile")  # by someone else
        raise KeyError("boom")

    assert sys.path == [*before, "/added/meanwhile"]
    assert sys.modules[_skops_model.RAW_MODULE] is another_model
    assert _skops_model.TRUSTED_MODULE not in sys.modules


@pytest.fixture
def scratch_module(monkeypatch) -> types.ModuleType:
    module = types.ModuleType("mlpipe_compat_scratch")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    yield module
    if module.__name__ in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.unregister_pickle_by_value(module)


def test_pickled_by_value_unregisters_exactly_what_it_registered(scratch_module):
    name = scratch_module.__name__
    registry = cloudpickle.list_registry_pickle_by_value

    with pytest.raises(KeyError), _serialize.pickled_by_value([scratch_module]):
        with _serialize.pickled_by_value([scratch_module]):
            assert name in registry()
        assert name in registry()  # the outer block still needs it
        raise KeyError("boom")
    assert name not in registry()

    cloudpickle.register_pickle_by_value(scratch_module)  # someone else's
    with _serialize.pickled_by_value([scratch_module]):
        pass
    assert name in registry()


def test_the_pickled_model_leaves_the_registry_as_it_was(tmp_path, monkeypatch):
    raw_name = _raw.__name__
    before = set(cloudpickle.list_registry_pickle_by_value())
    with _package._pickled_model(tmp_path, []):
        assert raw_name in cloudpickle.list_registry_pickle_by_value()
    assert set(cloudpickle.list_registry_pickle_by_value()) == before

    cloudpickle.register_pickle_by_value(sys.modules[raw_name])  # someone else's
    try:
        with _package._pickled_model(tmp_path, []):
            pass
        assert raw_name in cloudpickle.list_registry_pickle_by_value()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[raw_name])


def test_dataset_source_type_names_mlflows_own_and_mlpipes_sources(tmp_path: Path) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    from mlpipe.data._sources import SQLDatasetSource

    path = tmp_path / "data.csv"
    path.write_text("x\n1\n")
    with warnings.catch_warnings():
        # MLflow registers its local-file source twice and warns that a path is ambiguous.
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        local = resolve_dataset_source(str(path))
    assert _compat.dataset_source_type(local) == "local"
    sql = SQLDatasetSource(url="sqlite:///shop.db", table="penguins")
    assert _compat.dataset_source_type(sql) == SQLDatasetSource._get_source_type()


# --- search_runs_sql -------------------------------------------------------------------


def _tricky_store(client: mlflow.MlflowClient) -> dict[str, str]:
    """Runs whose tags, statuses and times test every part of a RunQuery."""
    from mlflow.entities import Metric

    KEY, NAME = schema.KEY, "run name"

    experiments = {name: client.create_experiment(name) for name in ("a", "b", "c")}
    specs = [
        # (experiment, start, status, tags, deleted)
        ("a", 1_000, "FINISHED", {"t": "x_1", "k": "logreg@2019", "up.r1": "p:1"}, False),
        ("a", 2_000, "FAILED", {"t": "x_1", "k": "logreg@2020", "up.r2": "p:2"}, False),
        ("a", 2_000, "FINISHED", {"t": "xa1", "k": "LOGREG@2020", "up.r1": ""}, False),
        ("a", 3_000, "FINISHED", {"t": "x%1", "k": "logreg@2020", "up.r2": "p:2"}, False),
        ("a", 4_000, "FINISHED", {"t": "x_1", "k": "logreg@2021"}, True),
        ("b", 2_000, "FINISHED", {"t": "x_1", "k": "logreg@2020", "up.r1": "p:1"}, False),
        ("b", 5_000, "KILLED", {"t": "its", "k": "rf@2020"}, False),
        ("c", 6_000, "FINISHED", {"t": "x_1", "k": "logreg@2020"}, False),
        # Stage keys, which are also the run names (checked by name first), and one run
        # renamed since; a key-shaped name alone (no key) finds nothing.
        ("a", 7_000, "FINISHED", {KEY: "logreg@20200101000000"}, False),
        ("a", 7_500, "FINISHED", {KEY: "logreg@20200102000000", NAME: "best model"}, False),
        ("b", 8_000, "FINISHED", {KEY: "logreg@20190101000000"}, False),
        ("b", 8_500, "FINISHED", {NAME: "logreg@20200101000001"}, False),
        ("b", 9_000, "FINISHED", {KEY: "rf@20200101000000", NAME: "rf@2020"}, False),
    ]
    ids = {}
    for n, (experiment, start, status, tags, deleted) in enumerate(specs):
        name = tags.pop(NAME, tags.get(KEY))
        run = client.create_run(experiments[experiment], start_time=start, tags=tags, run_name=name)
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("m", float(n), 0, 0), Metric("nan", float("nan"), 0, 0)],
            params=[],
            tags=[],
        )
        client.set_terminated(run_id, status=status, end_time=start + 10)
        if deleted:
            client.delete_run(run_id)
        ids[f"run{n}"] = run_id
    client.delete_experiment(experiments["c"])  # its runs stay active, as in search_runs
    return {**ids, **{f"experiment_{k}": v for k, v in experiments.items()}}


def _queries(ids: dict[str, str]) -> list[_compat.RunQuery]:
    Q = _compat.RunQuery
    everywhere = ("a", "b", "c")
    return [
        Q(experiment_names=everywhere),
        Q(experiment_names=("a",), tags_equal=(("t", "x_1"),)),
        Q(experiment_names=everywhere, tags_like=(("t", "x_1"),)),  # '_' is any character
        Q(experiment_names=everywhere, tags_like=(("k", "logreg@2020%"),)),  # case-sensitive
        Q(experiment_names=everywhere, tags_like=(("k", "%@2020"),), status="FINISHED"),
        Q(experiment_names=everywhere, tags_like=((schema.KEY, "logreg@2020%"),)),
        Q(experiment_names=("a", "b"), tags_like=((schema.KEY, "%@20200102%"),)),
        Q(experiment_names=everywhere, tags_like=((schema.KEY, "rf@2020%"),)),
        Q(experiment_names=everywhere, tags_set=("up.r1",)),  # an empty value is not set
        Q(experiment_names=("a", "b"), tags_set=("up.r2",), tags_equal=(("t", "x%1"),)),
        Q(experiment_names=("b",), tags_equal=(("t", "its"),)),
        Q(experiment_names=("a", "nope"), max_results=2),  # ties on start time by run id
        Q(experiment_ids=(ids["experiment_b"],), status="KILLED"),
        Q(experiment_names=everywhere, run_ids=(ids["run0"], ids["run5"], ids["run4"])),
        Q(experiment_names=("nope",)),
    ]


def _filter_string(query: _compat.RunQuery) -> str:
    from mlpipe.tracking._query import _filter_string

    return _filter_string(query)


def test_search_runs_sql_finds_what_search_runs_finds(tracking_store):
    if tracking_store.startswith("http"):
        pytest.skip("search_runs_sql reads MLflow's SQL store only")
    client = mlflow.MlflowClient()
    ids = _tricky_store(client)
    for query in _queries(ids):
        experiment_ids = list(query.experiment_ids) + [
            e.experiment_id
            for e in map(client.get_experiment_by_name, query.experiment_names)
            if e is not None
        ]
        expected = (
            client.search_runs(
                experiment_ids,
                filter_string=_filter_string(query),
                order_by=["attributes.start_time DESC"],
                max_results=query.max_results,
            )
            if experiment_ids
            else []
        )
        found = _compat.search_runs_sql(client, query, metrics=True)
        assert found is not None
        assert [r.info.run_id for r in found] == [r.info.run_id for r in expected], query
        for got, want in zip(found, expected, strict=True):
            assert got.info.to_proto() == want.info.to_proto()
            assert got.data.tags == want.data.tags
            assert str(got.data.metrics) == str(want.data.metrics)  # NaN == NaN as text
            assert got.data.params == {}  # never loaded
        only = _compat.search_runs_sql(client, query, tags=("t", "absent"))
        assert only is not None
        assert [r.data.tags for r in only] == [
            {k: v for k, v in r.data.tags.items() if k == "t"} for r in expected
        ]
        assert all(r.data.metrics == {} for r in only)


def test_search_runs_sql_any_tag_set_is_the_union_of_the_searches(tracking_store):
    if tracking_store.startswith("http"):
        pytest.skip("search_runs_sql reads MLflow's SQL store only")
    client = mlflow.MlflowClient()
    ids = _tricky_store(client)
    base = _compat.RunQuery(experiment_names=("a", "b", "c"), status="FINISHED")
    union = _compat.search_runs_sql(
        client, _compat.RunQuery(**{**base.__dict__, "any_tag_set": ("up.r1", "up.r2")})
    )
    each = [
        run
        for key in ("up.r1", "up.r2")
        for run in _compat.search_runs_sql(
            client, _compat.RunQuery(**{**base.__dict__, "tags_set": (key,)})
        )
        or []
    ]
    expected = sorted(
        {r.info.run_id: r for r in each}.values(),
        key=lambda r: (-r.info.start_time, r.info.run_id),
    )
    assert union is not None
    assert [r.info.run_id for r in union] == [r.info.run_id for r in expected]
    # run2's up.r1 is empty, run1 FAILED, run4 deleted.
    assert {r.info.run_id for r in union} == {ids["run0"], ids["run3"], ids["run5"]}


def test_search_runs_sql_answers_none_for_a_tracking_server():
    client = mlflow.MlflowClient("http://127.0.0.1:9")  # never contacted
    assert _compat.search_runs_sql(client, _compat.RunQuery(experiment_names=("a",))) is None
