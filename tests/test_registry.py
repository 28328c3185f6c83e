"""Registries: names, typed hyperparameters, entry points, the built-ins."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from palmerpenguins import load_penguins

import mlpipe
from mlpipe._registry import Registry, convert
from mlpipe.estimators import LabelEncodedClassifier
from mlpipe.exceptions import MlpipeError, NotFoundError


@pytest.fixture
def registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-ins and entry points are loaded; what the test registers is gone after it."""
    for registry in (mlpipe.LOGICS, mlpipe.ALGORITHMS):
        registry.names()
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))


def _python(code: str) -> str:
    """What ``code`` prints, run in a new Python process: nothing is registered there yet."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_builtins_and_unknown_names():
    assert {"plain", "knn"} <= set(mlpipe.LOGICS.names())
    assert {"logreg", "rf", "hgb"} <= set(mlpipe.ALGORITHMS.names())
    assert ("xgboost" in mlpipe.ALGORITHMS.names()) == (
        importlib.util.find_spec("xgboost") is not None
    )
    with pytest.raises(NotFoundError, match="Unknown algorithm 'svm'. Known algorithms: hgb"):
        mlpipe.ALGORITHMS.build("svm")


def test_hyperparameters_convert_by_annotation():
    assert (
        mlpipe.ALGORITHMS.build("rf", {"n_estimators": "7", "max_depth": "none"}).get_params()[
            "n_estimators"
        ]
        == 7
    )
    assert convert("3", int | None, "x") == 3 and convert("None", int | None, "x") is None
    assert convert("0.5", float, "x") == 0.5 and convert("yes", bool, "x") is True
    with pytest.raises(ValueError, match="Parameter rf.n_estimators expects int, got 'many'"):
        mlpipe.ALGORITHMS.build("rf", {"n_estimators": "many"})
    with pytest.raises(ValueError, match="has no parameter 'depth'; its parameters are"):
        mlpipe.ALGORITHMS.build("rf", {"depth": "3"})


def test_a_builtin_name_is_refused_before_the_first_lookup():
    printed = _python(
        """
        import mlpipe

        try:
            @mlpipe.logic("plain")
            def plain():
                return None
        except ValueError as error:
            print(type(error).__name__, error)
        print(mlpipe.LOGICS.entry("plain").factory.__module__)
        """
    )
    assert printed.splitlines() == [
        "RegistrationError Logic 'plain' is already registered (the built-in "
        "mlpipe._builtins:plain); __main__:plain was not registered. "
        "Pass replace=True to replace it, or pick another name.",
        "mlpipe._builtins",
    ]


def test_replace_true_before_the_first_lookup_is_not_undone_by_the_builtins():
    printed = _python(
        """
        import mlpipe

        @mlpipe.logic("plain", replace=True)
        def plain(*, scale: bool = False):
            return "mine"

        print(mlpipe.LOGICS.build("plain"), mlpipe.LOGICS.names().count("plain"))
        """
    )
    assert printed == "mine 1\n"


@pytest.mark.usefixtures("registries")
def test_a_taken_name_is_refused_after_the_first_lookup():
    def rf():
        return None

    with pytest.raises(
        ValueError,
        match=r"^Algorithm 'rf' is already registered \(the built-in mlpipe._builtins:rf\); "
        r"tests.test_registry:.*rf was not registered. Pass replace=True",
    ) as raised:
        mlpipe.algorithm("rf")(rf)
    assert isinstance(raised.value, MlpipeError)
    assert mlpipe.ALGORITHMS.entry("rf").factory.__module__ == "mlpipe._builtins"

    def scaled():
        return None

    def other_scaled():
        return None

    mlpipe.logic("team_scaled")(scaled)
    with pytest.raises(ValueError, match=r"\(tests.test_registry:.*scaled, registered in Python\)"):
        mlpipe.logic("team_scaled")(other_scaled)


@pytest.mark.usefixtures("registries")
def test_replace_true_replaces():
    @mlpipe.algorithm("rf", grid={"depth": [1, 2]}, replace=True)
    def rf(*, depth: int = 1):
        return ("mine", depth)

    assert mlpipe.ALGORITHMS.build("rf", {"depth": "2"}) == ("mine", 2)
    assert mlpipe.ALGORITHMS.entry("rf").grid == {"depth": [1, 2]}
    mlpipe.ALGORITHMS.register("rf", lambda: "again", replace=True)
    assert mlpipe.ALGORITHMS.build("rf") == "again"
    mlpipe.ALGORITHMS.register("new_name", lambda: "new", replace=True)  # nothing to replace
    assert mlpipe.ALGORITHMS.build("new_name") == "new"


@pytest.mark.usefixtures("registries")
def test_the_same_function_again_is_no_conflict():
    def factory():
        return "first"

    mlpipe.logic("twice")(factory)
    mlpipe.logic("twice")(factory)  # a module named by an entry point and imported too
    namespace: dict[str, object] = {"__name__": "notebook"}
    cell = "import mlpipe\n@mlpipe.logic('cell')\ndef cell():\n    return {}\n"
    exec(cell, namespace)
    exec(cell.replace("{}", "'run again'"), namespace)  # a notebook cell run again
    assert mlpipe.LOGICS.build("cell") == "run again"


def _distribution(where: Path, name: str, group: str, points: dict[str, str]) -> None:
    """An installed distribution ``name`` in ``where`` declaring ``points`` in ``group``."""
    info = where / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = [f"[{group}]"] + [f"{key} = {value}" for key, value in points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Two installed distributions whose entry points name a built-in and each other's
    name; returns the name of the module their entry points point to."""
    module = f"team_plugins_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "def plain():\n    return 'plugin plain'\n\n"
        "def shiny():\n    return 'aaa shiny'\n\n"
        "def also_shiny():\n    return 'zzz shiny'\n"
    )
    group = mlpipe.LOGICS.group
    _distribution(tmp_path, "zzz-team", group, {"shiny": f"{module}:also_shiny"})
    _distribution(
        tmp_path, "aaa-team", group, {"plain": f"{module}:plain", "shiny": f"{module}:shiny"}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mlpipe.LOGICS.names()
    builtins = {
        n: e
        for n, e in mlpipe.LOGICS._entries.items()
        if e.factory.__module__ == "mlpipe._builtins"
    }
    monkeypatch.setattr(mlpipe.LOGICS, "_entries", builtins)
    monkeypatch.setattr(mlpipe.LOGICS, "_loaded", False)  # entry points load on the next lookup
    yield module
    sys.modules.pop(module, None)


def test_an_entry_point_never_replaces_a_registered_name(plugins, caplog):
    with caplog.at_level(logging.WARNING, logger="mlpipe"):
        names = mlpipe.LOGICS.names()
    assert names.count("plain") == 1 and "shiny" in names
    assert mlpipe.LOGICS.entry("plain").factory.__module__ == "mlpipe._builtins"
    assert mlpipe.LOGICS.build("shiny") == "aaa shiny"  # distributions load in name order
    warnings = sorted(r.getMessage() for r in caplog.records if r.name == "mlpipe")
    assert warnings == [
        f"Entry point 'mlpipe.logics: plain = {plugins}:plain' of aaa-team 1.0 is ignored: "
        "logic 'plain' is already registered (the built-in mlpipe._builtins:plain). "
        "An entry point cannot replace a registered name; rename it.",
        f"Entry point 'mlpipe.logics: shiny = {plugins}:also_shiny' of zzz-team 1.0 is ignored: "
        f"logic 'shiny' is already registered (the entry point 'mlpipe.logics: shiny = "
        f"{plugins}:shiny' of aaa-team 1.0). "
        "An entry point cannot replace a registered name; rename it.",
    ]


def test_entry_points_add_factories(tmp_path, monkeypatch):
    module = f"team_logics_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from sklearn.preprocessing import StandardScaler\n\n"
        "def factory(*, with_mean: bool = True):\n"
        "    return StandardScaler(with_mean=with_mean)\n\n"
        "factory.mlpipe_grid = {'with_mean': [True, False]}\n"
    )
    _distribution(
        tmp_path,
        "team-logics",
        "mlpipe.test.logics",
        {"team_logic": f"{module}:factory"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("logic", "mlpipe.test.logics")
    assert registry.names() == ["team_logic"]
    assert registry.build("team_logic", {"with_mean": "false"}).with_mean is False
    assert registry.entry("team_logic").grid == {"with_mean": [True, False]}
    sys.modules.pop(module, None)


def test_builtins_are_a_cheap_leaf_module():
    printed = _python(
        """
        import sys

        import mlpipe._builtins

        print("mlpipe._registry" in sys.modules)
        import mlpipe

        mlpipe.LOGICS.entry("plain")
        mlpipe.ALGORITHMS.entry("rf")
        print(sorted({m.split(".")[0] for m in sys.modules} & {"sklearn", "pandas", "mlflow"}))
        """
    )
    # _registry imports _builtins, never the other way; neither imports an estimator.
    assert printed.splitlines() == ["False", "[]"]


def test_label_encoded_classifier_is_public():
    import mlpipe.estimators

    assert mlpipe.estimators.__all__ == ["LabelEncodedClassifier"]
    assert "estimators" not in mlpipe.__all__


def test_label_encoded_classifier_answers_in_the_original_labels():
    from sklearn.linear_model import LogisticRegression

    raw = load_penguins().dropna()
    X, y = raw[["bill_length_mm", "flipper_length_mm"]], raw["species"]
    model = LabelEncodedClassifier(LogisticRegression(max_iter=1000)).fit(X, y)
    assert set(model.predict(X)) <= set(y) and list(model.classes_) == sorted(set(y))
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)


def test_xgboost_when_installed():
    pytest.importorskip("xgboost")
    raw = load_penguins()
    pipe = mlpipe.LineagePipeline(
        [
            ("processing", mlpipe.LOGICS.build("plain")),
            ("model", mlpipe.ALGORITHMS.build("xgboost", {"n_estimators": "20"})),
        ],
        cv=None,
    ).fit(raw.drop(columns="species"), raw["species"])
    assert set(pipe.predict(raw.drop(columns="species"))) <= set(raw["species"])
