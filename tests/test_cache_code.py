"""Cache keys of user code: the same whether the code came from its file or from the store.

A reused stage is the step loaded back from its run: its functions and classes are the
copies cloudpickle stored, not the ones in the user's file. Its key must not change
because of that, or a stage is reused once and then fitted again (issue 11, item 5).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import subprocess
import sys
import textwrap

import mlflow
import pytest
from palmerpenguins import load_penguins
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

import mlpipe
from mlpipe._cache import cache_key

LOCAL_MODULE = """
from sklearn.base import BaseEstimator, TransformerMixin


class Shift(BaseEstimator, TransformerMixin):
    def __init__(self, by=1.0):
        self.by = by

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X + self.by
"""


def double(X):
    return X * 2


triple = lambda X: X * 3  # noqa: E731 - a lambda is one of the kinds of user code


def scale_by(factor):
    def scale(X):
        return X * factor

    return scale


def multiply(X, *, factor):
    return X * factor


class Clip(BaseEstimator, TransformerMixin):
    """A transformer class of the test module, which no installed package provides."""

    limit = 100.0

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X.clip(upper=self.limit)


@pytest.fixture
def data():
    raw = load_penguins().dropna()
    return raw[["bill_length_mm", "bill_depth_mm"]], raw["species"]


@pytest.fixture
def local_module(tmp_path, monkeypatch):
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "team_shift.py").write_text(LOCAL_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module("team_shift")
    yield module
    sys.modules.pop("team_shift", None)


def _processing(kind: str, local_module):
    if kind == "def":
        return FunctionTransformer(double)
    if kind == "lambda":
        return FunctionTransformer(triple)
    if kind == "closure":
        return FunctionTransformer(scale_by(4))
    if kind == "partial":
        return FunctionTransformer(functools.partial(multiply, factor=5))
    if kind == "class in a local module":
        return local_module.Shift(by=2.0)
    return Clip()


KINDS = ["def", "lambda", "closure", "partial", "class in a local module", "class of the script"]


def _key(step) -> str:
    return cache_key(stage="processing", type_="T", estimator=step, fit_params={}, upstream="u")


@pytest.mark.parametrize("kind", KINDS)
def test_a_reused_stage_is_reused_again_however_often(data, kind, local_module):
    X, y = data
    pipe = mlpipe.LineagePipeline(
        [("processing", _processing(kind, local_module)), ("model", LogisticRegression())],
        cv=None,
        log_model=False,
    )
    first = pipe.fit(X, y).run_ids_["processing"]
    for C in (0.5, 0.25, 0.125):  # the same pipeline: its processing step is now the loaded one
        pipe.set_params(model__C=C).fit(X, y)
        assert pipe.reused_ == ["processing"], (kind, C)
        assert pipe.run_ids_["processing"] == first, (kind, C)
    runs = mlflow.search_runs(experiment_names=["processing"], output_format="list")
    assert len(runs) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_stage_loaded_from_the_store_has_the_key_of_its_code(data, kind, local_module):
    X, y = data
    given = _processing(kind, local_module)
    pipe = mlpipe.LineagePipeline(
        [("processing", given), ("model", LogisticRegression())], cv=None, log_model=False
    ).fit(X, y)
    loaded = mlpipe.load_stage(pipe.run_ids_["processing"])
    assert loaded is not given
    assert _key(loaded) == _key(_processing(kind, local_module))


def test_a_closure_is_keyed_by_the_values_it_closes_over():
    # One source, two behaviours: scale_by(2) and scale_by(3) must not share a fitted stage.
    assert _key(FunctionTransformer(scale_by(2))) != _key(FunctionTransformer(scale_by(3)))
    assert _key(FunctionTransformer(scale_by(2))) == _key(FunctionTransformer(scale_by(2)))


def test_a_default_argument_is_part_of_the_key():
    namespace: dict = {"__name__": "__main__"}  # as in a notebook
    exec("def f(X, k=2):\n    return X * k\n", namespace)
    two = namespace["f"]
    exec("def f(X, k=3):\n    return X * k\n", namespace)
    three = namespace["f"]
    assert _key(FunctionTransformer(two)) != _key(FunctionTransformer(three))


def test_a_function_whose_globals_have_no_module_name_is_keyed_by_its_code():
    # exec() with a bare dict: __module__ is None, which is not the builtins module.
    first: dict = {}
    exec("def f(X):\n    return X * 2\n", first)
    second: dict = {}
    exec("def f(X):\n    return X * 3\n", second)
    assert _key(FunctionTransformer(first["f"])) != _key(FunctionTransformer(second["f"]))


def test_a_recursive_closure_is_keyed_without_recursing_forever():
    def outer():
        def countdown(X, n=1):
            return X if n == 0 else countdown(X, n - 1)

        return countdown

    assert _key(FunctionTransformer(outer())) == _key(FunctionTransformer(outer()))


def test_a_set_constant_has_one_key_in_every_process(tmp_path):
    # Bytecode holds `x in {"a", "b", ...}` as a frozenset, whose order follows the
    # string hash seed of the process.
    script = tmp_path / "keys.py"
    script.write_text(
        textwrap.dedent(
            """
            from sklearn.preprocessing import FunctionTransformer
            from mlpipe._cache import cache_key

            namespace = {"__name__": "__main__"}
            exec(  # as a notebook cell would: no file to read the source from
                "def pick(X):\\n"
                "    return X[[c for c in X if c in {'alpha', 'beta', 'gamma', 'delta'}]]\\n",
                namespace,
            )
            pick = FunctionTransformer(namespace["pick"])
            print(cache_key(stage="p", type_="T", estimator=pick, fit_params={}, upstream="u"))
            """
        )
    )
    seeds = ("1", "2")
    # Two seeds under which the set's order does differ (a bare interpreter shows it
    # at no cost): otherwise one key would prove nothing.
    orders = set()
    for seed in seeds:
        shown = subprocess.run(
            [sys.executable, "-S", "-c", "print(list({'alpha', 'beta', 'gamma', 'delta'}))"],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        )
        orders.add(shown.stdout)
    assert len(orders) == len(seeds), orders
    # The two processes at once: each spends seconds importing mlpipe, and neither
    # depends on the other.
    processes = [
        subprocess.Popen(
            [sys.executable, str(script)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in seeds
    ]
    keys = set()
    try:
        for process in processes:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err[-3000:]
            keys.add(out.strip())
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert len(keys) == 1, keys


# --- real scripts, run as __main__, one store, two processes ------------------------------

SCRIPT = '''
import functools
import json
import sys

from palmerpenguins import load_penguins
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import FunctionTransformer

import team_shift
import mlpipe


class Clip(BaseEstimator, TransformerMixin):
    """Defined in __main__: its code exists only in this script."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X.clip(upper=100.0)


def double(X):
    return X * 2


def scale_by(factor):
    def scale(X):
        return X * factor

    return scale


def multiply(X, *, factor):
    return X * factor


PROCESSING = {
    "class in __main__": lambda: Clip(),
    "class in a local module": lambda: team_shift.Shift(by=2.0),
    "def": lambda: FunctionTransformer(double),
    "lambda": lambda: FunctionTransformer(lambda X: X * 3),
    "closure": lambda: FunctionTransformer(scale_by(4)),
    "partial": lambda: FunctionTransformer(functools.partial(multiply, factor=5)),
}

if __name__ == "__main__":
    raw = load_penguins().dropna()
    X, y = raw[["bill_length_mm", "bill_depth_mm"]], raw["species"]
    base = float(sys.argv[1])  # only the model changes from one run of the script to the next
    found = {}
    for kind, make in PROCESSING.items():
        pipe = mlpipe.LineagePipeline(
            [("processing", make()), ("model", LogisticRegression(C=base))],
            cv=None,
            log_model=False,
        )
        fits = []
        for C in (base, base / 2, base / 4):  # fit, reuse, reuse again in this process
            pipe.set_params(model__C=C).fit(X, y)
            fits.append([pipe.reused_, pipe.run_ids_["processing"]])
        found[kind] = fits
    print(json.dumps(found))
'''


@pytest.mark.slow
def test_scripts_run_again_reuse_their_processing_every_time(tmp_path):
    # Two processes: the first fits each processing stage and reuses it twice; the second
    # starts from the user's code again and reuses the stored stage, then its loaded copy.
    # A third process would find the store as the second left it (nothing new logged).
    (tmp_path / "team_shift.py").write_text(LOCAL_MODULE)
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    runs = []
    for base in ("1.0", "0.3"):
        done = subprocess.run(
            [sys.executable, str(script), base],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for kind in runs[0]:
        fits = [fit for run in runs for fit in run[kind]]
        fitted_by = fits[0][1]
        assert fits[0][0] == [], kind
        assert all(reused == ["processing"] for reused, _ in fits[1:]), (kind, fits)
        assert all(run_id == fitted_by for _, run_id in fits), (kind, fits)
    processing = mlflow.search_runs(experiment_names=["processing"], output_format="list")
    assert len(processing) == len(runs[0])
