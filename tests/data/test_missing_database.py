"""A load from a SQLite file that does not exist fails clearly and creates nothing."""

from __future__ import annotations

import pytest

import mlpipe
from mlpipe.exceptions import SourceError


def test_a_missing_sqlite_file_is_named_and_not_created(tmp_path):
    missing = tmp_path / "shop.db"
    with pytest.raises(SourceError, match="there is no SQLite database file at .*shop.db"):
        mlpipe.load(f"sqlite:///{missing}", table="orders", name="orders")
    assert not missing.exists()
