"""Folds that run in worker processes carry a local module's classes with them.

mlpipe runs the folds of its cross-validation in parallel on its own (n_jobs=None,
when it pays), in joblib's worker processes, which live as long as the session. A
worker started before the user's process put a folder on ``sys.path`` (a notebook's
``sys.path.insert`` after a first fit) cannot import a module from it, so a stage
whose class comes from such a module must travel to the workers by value, as the
fitted stage itself does; otherwise the parallel fit fails where a sequential one works.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

_MODULE = """
from sklearn.base import BaseEstimator, TransformerMixin


class Doubled(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X * 2.0
"""

_SCRIPT = """
import sys

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import mlpipe

X, y = load_iris(return_X_y=True, as_frame=True)
# A first fit starts joblib's worker processes, which stay for the session. (No logged
# model: the folds are what starts them.)
mlpipe.LineagePipeline(
    [("processing", StandardScaler()), ("model", LogisticRegression(max_iter=500))],
    cv=3,
    n_jobs=2,
    log_model=False,
).fit(X, y)
# Then, as in a notebook, a folder of the team's code goes on sys.path: the running
# workers never see it.
sys.path.insert(0, sys.argv[1])
from localstages import Doubled

pipe = mlpipe.LineagePipeline(
    [("processing", Doubled()), ("model", LogisticRegression(max_iter=500))],
    cv=3,
    n_jobs=2,
).fit(X, y)
print("stages logged:", len(pipe.run_ids_))
"""


@pytest.mark.slow
def test_parallel_folds_fit_a_stage_from_a_module_the_workers_cannot_import(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "localstages.py").write_text(_MODULE)
    script = tmp_path / "fit.py"
    script.write_text(_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # neither the working directory nor PYTHONPATH holds the module
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stages logged: 3" in done.stdout
