"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest

import mlpipe


@pytest.fixture
def without_cross_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chains that the commands build in this process are fitted with ``cv=None``.

    The commands take no ``cv`` option: they build a ``LineagePipeline`` with its
    default, a 5-fold cross-validation of the whole chain (five refits, plots and a
    predictions table). A test that checks something else than that evaluation sets
    the default to None for the commands it runs through ``main`` in this process.
    """
    defaults = mlpipe.LineagePipeline.__init__.__kwdefaults__
    assert defaults is not None and defaults["cv"] == 5
    monkeypatch.setitem(defaults, "cv", None)
