"""What the command line and ``import mlpipe`` load: only what the answer needs.

Each check runs in a fresh interpreter, since a module imported once stays in
``sys.modules`` for the rest of a test session.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.preprocessing import FunctionTransformer

import mlpipe
from mlpipe.cli import _main, main

# Never needed to import mlpipe, nor to answer a lookup on the command line.
HEAVY = (
    "hypothesis",
    "matplotlib",
    "mlflow.pyfunc",
    "mlflow.sklearn",
    "mlpipe.data",
    "mlpipe.model",
    "mlpipe.testing",
    "mlpipe._pipeline",
    "pyarrow.parquet",
    "sklearn",
)


def _loaded(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it ends with ``report(extra)``."""
    script = textwrap.dedent(
        """
        import json, sys

        def report(extra=None):
            print(json.dumps({"modules": sorted(sys.modules), "extra": extra}))

        """
    ) + textwrap.dedent(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _heavy(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in HEAVY))


def test_import_mlpipe_loads_neither_mlflow_nor_scikit_learn() -> None:
    result = _loaded("import mlpipe\nreport(mlpipe.__version__)")
    modules = result["modules"]
    assert isinstance(modules, list)
    assert _heavy(modules) == []
    assert not {"mlflow", "pandas", "numpy", "sqlalchemy"} & set(modules)
    assert result["extra"] == mlpipe.__version__


def test_the_public_api_still_resolves_after_a_lazy_import() -> None:
    result = _loaded(
        """
        import mlpipe
        names = {n: type(getattr(mlpipe, n)).__name__ for n in mlpipe.__all__}
        report([sorted(names), sorted(dir(mlpipe)) == sorted(mlpipe.__all__)])
        """
    )
    assert result["extra"] == [sorted(mlpipe.__all__), True]


def test_help_parses_arguments_without_importing_mlflow() -> None:
    result = _loaded(
        """
        import contextlib, io
        from mlpipe.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            try:
                main(["main", "--help"])
            except SystemExit as done:
                code = done.code
        report([code, "--retrieval-time" in out.getvalue()])
        """
    )
    assert result["extra"] == [0, True]
    modules = result["modules"]
    assert isinstance(modules, list)
    assert not [m for m in modules if m == "mlflow" or m.startswith("mlflow.")]


def test_main_on_a_complete_chain_is_a_lookup_that_loads_no_estimator_code(
    tracking_store: str,
) -> None:
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "y": [0, 1, 0, 1]})
    dataset = mlpipe.load(frame, name="toy", target="y")
    mlpipe.LineagePipeline(
        [("processing", FunctionTransformer()), ("model", DummyClassifier())],
        types={"processing": "plain", "model": "logreg"},
        cv=None,
        log_model=False,
    ).fit(dataset)
    date = dt.datetime.now(dt.UTC).date().isoformat()
    key_date = dataset.key.rsplit("@", 1)[1][:8]
    if key_date != date.replace("-", ""):  # the fit straddled midnight UTC
        date = f"{key_date[:4]}-{key_date[4:6]}-{key_date[6:]}"
    result = _loaded(
        f"""
        import contextlib, io
        from mlpipe.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = main(["main", "--table", "toy", "--retrieval-time", "{date}",
                         "--logic", "plain", "--algorithm", "logreg"])
        report([code, out.getvalue()])
        """
    )
    code, printed = result["extra"]  # type: ignore[misc]
    assert code == 0
    assert "The chain exists: nothing to run." in printed
    assert dataset.run_id in printed
    assert _heavy(result["modules"]) == []


# --- the garbage collector, paused while the command starts ------------------------------


def _record_gc(monkeypatch: pytest.MonkeyPatch, command: str) -> list[bool]:
    seen: list[bool] = []

    def run(args: object) -> int:
        seen.append(gc.isenabled())
        return 0

    monkeypatch.setattr(_main, f"_run_{command}", run)
    return seen


def test_a_lookup_runs_with_the_collector_paused_then_restores_it(monkeypatch):
    seen = _record_gc(monkeypatch, "runs")
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert main(["runs"]) == 0
    assert seen == [False]
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_command_that_fits_runs_with_the_collector_on(monkeypatch):
    seen = _record_gc(monkeypatch, "process")
    assert main(["process", "--logic", "plain", "--table", "t", "--retrieval-time", "x"]) == 0
    assert seen == [True]


def test_a_collector_the_caller_turned_off_stays_off(monkeypatch):
    seen = _record_gc(monkeypatch, "process")
    gc.disable()
    try:
        assert main(["process", "--logic", "plain", "--table", "t", "--retrieval-time", "x"]) == 0
        assert seen == [False]
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_main_turns_the_collector_back_on_before_it_fits(monkeypatch, capsys):
    dataset = mlpipe.load(pd.DataFrame({"x": [0.0, 1.0], "y": [0, 1]}), name="toy", target="y")
    day = dataset.key.rsplit("@", 1)[1][:8]
    seen: list[bool] = []

    class Fitting:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def fit(self, dataset: object) -> None:
            seen.append(gc.isenabled())
            raise ValueError("stopped before fitting")

    monkeypatch.setattr(mlpipe, "LineagePipeline", Fitting)
    date = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    command = ["main", "--table", "toy", "--retrieval-time", date]
    assert main([*command, "--logic", "plain", "--algorithm", "logreg"]) == 2
    assert "stopped before fitting" in capsys.readouterr().err
    assert seen == [True]
    assert gc.isenabled() and gc.get_freeze_count() == 0
