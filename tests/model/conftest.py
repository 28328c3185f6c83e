"""Fixtures shared by the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of wheels the venvs of one worker's session install from (see
    ``venv_with_requirements``); tests using it share the xdist group ``wheelhouse``."""
    return tmp_path_factory.mktemp("wheelhouse")
