"""A team's algorithm says which kinds of target it fits (issue 14, item 2): ``targets=``
of :func:`mlpipe.algorithm`, or ``mlpipe_targets`` on an entry point's factory."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import mlpipe
from mlpipe._registry import Registry
from mlpipe.cli import main
from mlpipe.exceptions import RegistrationError, TargetTypeError
from tests.test_registry import _distribution

BOTH = ("binary", "multiclass", "continuous")


def any_tree(*, target_type: str = "binary", max_depth: int = 3):
    """A classifier or a regressor, for the target it is given."""
    tree = DecisionTreeRegressor if target_type == "continuous" else DecisionTreeClassifier
    return tree(max_depth=max_depth, random_state=0)


@pytest.fixture
def algorithms(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """The global registry; what the test registers is gone after it."""
    mlpipe.ALGORITHMS.names()
    monkeypatch.setattr(mlpipe.ALGORITHMS, "_entries", dict(mlpipe.ALGORITHMS._entries))
    return mlpipe.ALGORITHMS


def test_a_declared_algorithm_fits_what_it_says(algorithms: Registry):
    mlpipe.algorithm("any_tree", targets=BOTH)(any_tree)
    # Judged by what it builds with its defaults, it would fit class labels only.
    assert algorithms.targets("any_tree") == BOTH
    assert isinstance(algorithms.build("any_tree", target_type="continuous"), DecisionTreeRegressor)
    assert "target_type" not in algorithms.parameters("any_tree")  # no -P, not listed


def test_an_algorithm_that_says_it_does_not_fit_is_refused_before_it_is_built(
    algorithms: Registry,
):
    built = []

    @mlpipe.algorithm("grams", targets=["continuous"])
    def grams():
        built.append(1)
        return DecisionTreeRegressor()

    with pytest.raises(TargetTypeError, match="'grams' fits continuous targets, and this"):
        algorithms.build("grams", target_type="multiclass")
    assert built == []


@pytest.mark.parametrize("targets", [("regression",), (), ("unknown",)])
def test_targets_are_kinds_that_type_of_target_names(targets: tuple[str, ...]):
    registry = Registry("algorithm", "mlpipe.test.none")
    with pytest.raises(RegistrationError) as refused:
        registry.register("tree", any_tree, targets=targets)
    assert str(refused.value).startswith(
        f"Algorithm 'tree' (tests.test_registry_targets:any_tree, registered in Python) "
        f"declares targets={targets!r}; expected kinds of target as type_of_target names "
        "them: binary, multiclass, continuous, multilabel-indicator,"
    )
    assert registry.names() == []


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An installed team package whose entry points declare two algorithms' targets."""
    module = f"team_algorithms_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        "from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor\n\n"
        "def tree(*, target_type: str = 'binary', max_depth: int = 3):\n"
        "    tree = DecisionTreeRegressor if target_type == 'continuous' else "
        "DecisionTreeClassifier\n"
        "    return tree(max_depth=max_depth, random_state=0)\n\n"
        "tree.mlpipe_targets = ('binary', 'multiclass', 'continuous')\n\n"
        "def odd():\n    return DecisionTreeRegressor()\n\n"
        "odd.mlpipe_targets = ('regression',)\n"
    )
    points = {"team_tree": f"{module}:tree", "team_odd": f"{module}:odd"}
    _distribution(tmp_path, "team-algorithms", mlpipe.ALGORITHMS.group, points)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module
    sys.modules.pop(module, None)


def test_an_entry_point_declares_targets_with_mlpipe_targets(
    team: str, caplog: pytest.LogCaptureFixture
):
    registry = Registry("algorithm", mlpipe.ALGORITHMS.group)
    with caplog.at_level(logging.WARNING, logger="mlpipe"):
        names = registry.names()
    assert "team_tree" in names and "team_odd" not in names
    assert registry.targets("team_tree") == BOTH
    [warning] = [r.getMessage() for r in caplog.records if "team_odd" in r.getMessage()]
    assert warning.startswith(
        "Algorithm 'team_odd' (the entry point 'mlpipe.algorithms: team_odd = "
        f"{team}:odd' of team-algorithms 1.0) declares targets=('regression',); expected"
    )
    assert warning.endswith("It is ignored.")


def test_the_command_line_lists_what_an_entry_point_declares(
    team: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    mlpipe.ALGORITHMS.names()
    monkeypatch.setattr(mlpipe.ALGORITHMS, "_entries", dict(mlpipe.ALGORITHMS._entries))
    monkeypatch.setattr(mlpipe.ALGORITHMS, "_loaded", False)  # the team's load on the next lookup
    assert main(["runs", "--list"]) == 0
    [line] = [row for row in capsys.readouterr().out.splitlines() if "team_tree" in row]
    assert line.split()[:5] == ["algorithm", "team_tree", "binary,", "multiclass,", "continuous"]
