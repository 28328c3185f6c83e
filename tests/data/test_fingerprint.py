"""fingerprint: every cell, name, dtype and position counts; nothing else does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import pandas as hpd

from mlpipe import fingerprint


def _mixed(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "f": np.linspace(0, 1, n),
            "i": np.arange(n),
            "b": np.arange(n) % 2 == 0,
            "s": pd.Series([f"s{k}" for k in range(n)], dtype="str"),
            "o": pd.Series([1, "a", None, 2.5, (1, 2)][:n], dtype=object),
            "c": pd.Categorical(list("xyzxy")[:n]),
            "n": pd.array([1, None, 3, 4, 5][:n], dtype="Int64"),
            "t": pd.date_range("2019-02-09", periods=n, freq="h", tz="Europe/Paris"),
            "d": pd.date_range("2019-02-09", periods=n, freq="D"),
            "bn": pd.array([True, None, False, True, False][:n], dtype="boolean"),
        }
    )


frames = hpd.data_frames(
    columns=[
        hpd.column("x", dtype=float),
        hpd.column("k", dtype=int),
        hpd.column("flag", dtype=bool),
        hpd.column("word", elements=st.one_of(st.none(), st.text(max_size=5))),
    ],
    index=hpd.range_indexes(min_size=1, max_size=30),
)


@given(frames)
def test_same_content_same_fingerprint(df):
    assert fingerprint(df) == fingerprint(df.copy(deep=True))


@given(frames, st.data())
def test_any_single_cell_change_changes_it(df, data):
    row = data.draw(st.integers(0, len(df) - 1))
    column = data.draw(st.sampled_from(list(df.columns)))
    changed = df.copy()
    old = df.iloc[row][column]
    if column == "x":
        new = data.draw(st.floats(allow_nan=True))
        assume(not (np.isnan(new) and np.isnan(old)) and new != old)
    elif column == "k":
        new = data.draw(st.integers(-(2**63), 2**63 - 1).filter(lambda v: v != old))
    elif column == "flag":
        new = not old
    else:
        new = data.draw(st.one_of(st.none(), st.text(max_size=5)))
        assume(not (pd.isna(new) and pd.isna(old)) and new != old)
    changed.iloc[row, changed.columns.get_loc(column)] = new
    assert fingerprint(changed) != fingerprint(df)


@given(frames)
def test_row_order_counts(df):
    assume(len(df) > 1)
    reordered = df.iloc[::-1]
    assert fingerprint(reordered) != fingerprint(df)
    # Same rows, same order, but a different index: still different content.
    assert fingerprint(reordered.reset_index(drop=True)) != fingerprint(df) or (
        reordered.reset_index(drop=True).equals(df)
    )


def test_column_name_order_and_dtype_count():
    df = _mixed()
    base = fingerprint(df)
    assert fingerprint(df.rename(columns={"f": "g"})) != base
    assert fingerprint(df[list(reversed(df.columns))]) != base
    assert fingerprint(df.astype({"i": "int32"})) != base
    assert fingerprint(df.astype({"f": "float32"})) != base
    assert fingerprint(df.set_axis([1, *df.columns[1:]], axis=1)) != base
    assert fingerprint(df.set_index(pd.Index(list("abcde")))) != base


@pytest.mark.parametrize("column", list(_mixed().columns))
def test_every_supported_dtype_sees_a_changed_cell(column):
    df = _mixed()
    changed = df.copy()
    changed[column] = df[column].iloc[[1, 0, 2, 3, 4]].to_numpy()
    if changed[column].equals(df[column]):
        pytest.skip("first two cells are equal")
    changed[column] = changed[column].astype(df[column].dtype)
    assert fingerprint(changed) != fingerprint(df)


def test_all_rows_count_not_only_the_first_ten_thousand():
    df = pd.DataFrame({"x": np.zeros(50_000), "when": pd.date_range("2020", periods=50_000)})
    changed = df.copy()
    changed.loc[49_999, "when"] = pd.Timestamp("1999-01-01")
    assert fingerprint(changed) != fingerprint(df)


def test_missing_values_are_one_thing():
    assert fingerprint(pd.DataFrame({"x": [1.0, np.nan]})) == fingerprint(
        pd.DataFrame({"x": [1.0, float("nan") * -1]})
    )


def test_parquet_round_trip_keeps_it(tmp_path):
    df = _mixed().drop(columns=["o"])  # object columns of mixed types do not fit Parquet
    df.to_parquet(tmp_path / "x.parquet")
    assert fingerprint(pd.read_parquet(tmp_path / "x.parquet")) == fingerprint(df)


def test_stable_across_processes(another_process):
    # The frame is built there too, not sent: nothing of this process's objects travels.
    code = (
        "from tests.data.test_fingerprint import _mixed\n"
        "from mlpipe import fingerprint\n"
        "result = fingerprint(_mixed())\n"
    )
    assert another_process.run(code) == fingerprint(_mixed())


def test_rejects_what_is_not_a_frame():
    with pytest.raises(TypeError, match="expects a pandas DataFrame or Series, got list"):
        fingerprint([1, 2])  # type: ignore[arg-type]
