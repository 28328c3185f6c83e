"""fingerprint over every dtype pandas can hold: values count, memory and identity never do."""

from __future__ import annotations

import decimal
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import FunctionTransformer

import mlpipe
from mlpipe import fingerprint
from mlpipe.exceptions import SerializationError

from ..strategies import COLUMN_KINDS, build_frame, every_dtype_cells
from .conftest import AnotherProcess

ROOT = Path(__file__).parents[2]
KINDS = {kind.name: kind for kind in COLUMN_KINDS}


def _column_fingerprints(frame: pd.DataFrame) -> dict[str, str]:
    return {name: fingerprint(frame[[name]]) for name in frame.columns}


def _same_cell(a: Any, b: Any) -> bool:
    """Whether two drawn cells are the same content (then no change is expected)."""
    if a is None or b is None:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, float | complex) and a != a and b != b:
        return True  # NaN, whatever its bits
    return bool(a == b)


_FINGERPRINTS = (
    "from mlpipe import fingerprint\n"
    "result = [({c: fingerprint(f[[c]]) for c in f.columns}, fingerprint(f)) for f in frames]\n"
)


def _fingerprints_in_another_process(
    another_process: AnotherProcess, frames: list[pd.DataFrame]
) -> list[Any]:
    """Per-column and whole-frame fingerprints computed by another interpreter (with
    another hash seed: tests/data/conftest.py)."""
    return another_process.run(_FINGERPRINTS, frames=frames)


# --- the property, over every dtype ------------------------------------------------


# One example draws a column of every kind: Hypothesis now and then runs out of room in
# its buffer for one and discards it (an overrun, counted as filtered), never a
# filter of this test's own. Enough examples still run; the health check would fail
# the test for Hypothesis's own discards.
_EVERY_DTYPE = settings(
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.data_too_large]
)


@_EVERY_DTYPE
@given(every_dtype_cells())
def test_same_content_same_fingerprint_whatever_the_memory(cells):
    frame = build_frame(cells, variant=0)
    # Variant 1: Arrow arrays at an offset and in two chunks, strided numpy buffers,
    # object cells made of other (unshared) string and container objects.
    other = build_frame(cells, variant=1)
    assert (other.dtypes == frame.dtypes).all()
    expected = fingerprint(frame)
    for same in (other, build_frame(cells, variant=0), pickle.loads(pickle.dumps(frame))):
        if fingerprint(same) != expected:  # name the columns that differ
            mine, theirs = _column_fingerprints(frame), _column_fingerprints(same)
            assert {n: f for n, f in mine.items() if theirs[n] != f} == {}
        assert fingerprint(same) == expected


@_EVERY_DTYPE
@given(every_dtype_cells(), st.data())
def test_any_cell_change_changes_it_every_dtype(cells, data):
    unchanged = []
    for name, values in cells.items():
        kind = KINDS[name]
        if not kind.changeable:
            continue
        row = data.draw(st.integers(0, len(values) - 1), label=f"row of {name}")
        new = data.draw(kind.cells, label=f"new cell of {name}")
        if _same_cell(values[row], new):
            continue
        changed = [*values[:row], new, *values[row + 1 :]]
        if fingerprint(kind.build(values, 0)) == fingerprint(kind.build(changed, 0)):
            unchanged.append((name, row, values[row], new))
    assert unchanged == []


@settings(max_examples=2, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(every_dtype_cells(max_rows=3), min_size=2, max_size=2))
def test_same_fingerprint_in_another_process_every_dtype(another_process, many):
    frames = [build_frame(cells) for cells in many]
    there = _fingerprints_in_another_process(another_process, frames)
    for frame, (theirs, whole) in zip(frames, there, strict=True):
        if whole != fingerprint(frame):  # name the columns that differ
            mine = _column_fingerprints(frame)
            assert {n: f for n, f in mine.items() if theirs[n] != f} == {}
        assert whole == fingerprint(frame)


def test_every_dtype_the_issue_names_is_covered():
    names = set(KINDS)
    for dtype in ("Int8", "UInt64", "Float32", "boolean", "string[python]", "string[pyarrow]"):
        assert dtype in names
    for arrow in (
        "decimal128(38, 10)",
        "bool",
        "string",
        "large_binary",
        "timestamp[ns, tz=America/New_York]",
        "time32[s]",
        "large_list<item: string>",
        "dictionary<values=string, indices=int32, ordered=1>",
        "null",
    ):
        assert f"ArrowDtype({arrow})" in names
    assert len(names) == len(COLUMN_KINDS)
    assert len(COLUMN_KINDS) > 100


def test_empty_columns_of_every_dtype():
    prints = {}
    for kind in COLUMN_KINDS:
        empty = kind.build([], 0)
        prints[kind.name] = fingerprint(empty)
        assert fingerprint(kind.build([], 1)) == prints[kind.name]
    # The dtype alone tells empty columns apart (string[python] and string[pyarrow]
    # are both dtype "string": their storage is not content).
    assert len(set(prints.values())) == len(prints) - 1


def test_an_arrow_type_it_cannot_hash_is_refused():
    union = pa.UnionArray.from_sparse(
        pa.array([0, 1], pa.int8()), [pa.array([1, 2]), pa.array(["a", "b"])]
    )
    frame = pd.DataFrame({"u": pd.arrays.ArrowExtensionArray(union)})
    with pytest.raises(SerializationError, match=r"column 'u' \(dtype sparse_union<.*Expected"):
        fingerprint(frame)


# --- the defects of issue 11 -------------------------------------------------------


def _decimals(*values: str | None) -> pd.DataFrame:
    cells = [None if v is None else decimal.Decimal(v) for v in values]
    return pd.DataFrame({"d": pd.Series(cells, dtype=pd.ArrowDtype(pa.decimal128(10, 2)))})


def test_decimal_column_same_content_same_fingerprint():
    frame = _decimals("1.00", None, "2.50")
    assert fingerprint(frame) == fingerprint(_decimals("1.00", None, "2.50"))
    # In another process: see test_same_in_every_process.


def test_decimal_one_row_frames_do_not_collide():
    values = [f"{i}.00" for i in range(1, 21)]
    prints = {fingerprint(_decimals(v)) for v in values}
    assert len(prints) == len(values)


def test_dataset_from_run_of_a_decimal_frame_is_not_called_altered():
    frame = _decimals("1.00", None, "2.50").assign(y=[0, 1, 0])
    ds = mlpipe.load(frame, name="decimals", target="y")
    again = mlpipe.Dataset.from_run(ds.run_id)
    assert again.fingerprint == ds.fingerprint
    pd.testing.assert_frame_equal(again.frame, frame)


@pytest.mark.parametrize(
    "type_, storage",
    [(pa.time64("ns"), pa.int64()), (pa.date64(), pa.int64()), (pa.timestamp("ns"), pa.int64())],
)
def test_arrow_temporal_columns_count_every_unit(type_, storage):
    # The cells were once hashed as Python objects: datetime.time keeps microseconds
    # and datetime.date days, so 1 ns and 2 ns (or 1 ms and 2 ms) collided.
    def column(value: int) -> pd.DataFrame:
        array = pa.array([value], type=storage).cast(type_)
        return pd.DataFrame({"t": pd.arrays.ArrowExtensionArray(array)})

    assert fingerprint(column(1)) != fingerprint(column(2))


def _bools_with_na() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "flag": pd.Series([True, None, False, True, False, None], dtype="bool[pyarrow]"),
            "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "y": [0, 1, 0, 1, 0, 1],
        }
    )


def test_bool_arrow_column_with_na_fingerprints():
    frame = _bools_with_na()
    filled = frame.assign(flag=frame["flag"].fillna(False))
    assert fingerprint(frame) == fingerprint(_bools_with_na())
    assert fingerprint(frame) != fingerprint(filled)


def _numbers(X: pd.DataFrame) -> pd.DataFrame:
    return X.astype("float64").fillna(0.0)


def test_bool_arrow_column_with_na_loads_and_fits():
    frame = _bools_with_na()
    ds = mlpipe.load(frame, name="flags", target="y")
    assert mlpipe.Dataset.from_run(ds.run_id).fingerprint == ds.fingerprint
    pipe = mlpipe.LineagePipeline(
        [("processing", FunctionTransformer(_numbers)), ("model", LinearRegression())],
        cv=None,
        log_model=False,
    )
    pipe.fit(frame.drop(columns="y"), frame["y"])
    assert set(pipe.run_ids_) == {"load", "processing", "model"}
    assert pipe.predict(frame.drop(columns="y")).shape == (6,)


# --- memory that is not content -----------------------------------------------------


def _with_garbage_under_nulls(array: pa.Array) -> pa.Array:
    """The same cells, but every null slot's value bytes set to 0xAB."""
    width = array.type.bit_width // 8
    data = bytearray(array.buffers()[1].to_pybytes())
    for i, valid in enumerate(array.is_valid().to_pylist()):
        if not valid:
            data[i * width : (i + 1) * width] = b"\xab" * width
    return pa.Array.from_buffers(
        array.type, len(array), [array.buffers()[0], pa.py_buffer(bytes(data))]
    )


@pytest.mark.parametrize(
    "type_, values",
    [
        (pa.int32(), [1, None, 3]),
        (pa.float64(), [1.5, None, -0.5]),
        (pa.decimal128(10, 2), [decimal.Decimal("1.00"), None, decimal.Decimal("-2.50")]),
        (pa.timestamp("us", tz="UTC"), [1, None, 3]),
        (pa.date32(), [1, None, 3]),
    ],
)
def test_values_under_arrow_nulls_do_not_count(type_, values):
    clean = pa.array(values, type=type_)
    dirty = _with_garbage_under_nulls(clean)
    assert dirty.to_pylist() == clean.to_pylist()
    assert dirty.buffers()[1] != clean.buffers()[1]
    as_frame = lambda a: pd.DataFrame({"v": pd.arrays.ArrowExtensionArray(a)})  # noqa: E731
    assert fingerprint(as_frame(dirty)) == fingerprint(as_frame(clean))


def test_content_behind_arrow_null_strings_and_lists_does_not_count():
    strings = pa.array(["a", None, "c"], type=pa.string())
    # Slot 1 is null but its offsets span "zz": legal Arrow, invisible content.
    dirty = pa.Array.from_buffers(
        pa.string(),
        3,
        [
            strings.buffers()[0],
            pa.array([0, 1, 3, 4], pa.int32()).buffers()[1],
            pa.py_buffer(b"azzc"),
        ],
    )
    assert dirty.to_pylist() == strings.to_pylist()
    lists = pa.array([[1], None, [3]], type=pa.list_(pa.int64()))
    dirty_lists = pa.ListArray.from_arrays(
        pa.array([0, 1, 3, 4], pa.int32()),
        pa.array([1, 7, 7, 3], pa.int64()),
        mask=pa.array([False, True, False]),
    )
    assert dirty_lists.to_pylist() == lists.to_pylist()
    as_frame = lambda a: pd.DataFrame({"v": pd.arrays.ArrowExtensionArray(a)})  # noqa: E731
    assert fingerprint(as_frame(dirty)) == fingerprint(as_frame(strings))
    assert fingerprint(as_frame(dirty_lists)) == fingerprint(as_frame(lists))


def test_dictionary_columns_count_their_values_not_their_dictionary():
    type_ = pa.dictionary(pa.int32(), pa.string())
    one = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int32()), pa.array(["x", "y"]))
    other = pa.DictionaryArray.from_arrays(
        pa.array([2, 0, 2], pa.int32()), pa.array(["y", "unused", "x"])
    )
    assert one.type == other.type == type_
    assert one.to_pylist() == other.to_pylist()
    as_frame = lambda a: pd.DataFrame({"v": pd.arrays.ArrowExtensionArray(a)})  # noqa: E731
    assert fingerprint(as_frame(one)) == fingerprint(as_frame(other))


def test_object_cells_count_by_value_not_identity():
    shared = "ab"
    fresh = "".join(["a", "b"])
    assert shared is not fresh
    same = pd.DataFrame({"o": pd.Series([(shared, shared), 1], dtype=object)})
    other = pd.DataFrame({"o": pd.Series([(shared, fresh), 1], dtype=object)})
    assert fingerprint(same) == fingerprint(other)
    # Equal dicts are the same cell, whatever their insertion order.
    a = pd.DataFrame({"o": pd.Series([{"x": 1, "y": 2}, None], dtype=object)})
    b = pd.DataFrame({"o": pd.Series([{"y": 2, "x": 1}, None], dtype=object)})
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(
        pd.DataFrame({"o": pd.Series([{"x": 1, "y": 3}, None], dtype=object)})
    )


def _value_hashed_everywhere() -> pd.DataFrame:
    """Columns whose old fingerprint hashed memory: decimals, sets, long doubles."""
    return pd.DataFrame(
        {
            "decimals": _decimals("1.00", None, "2.50")["d"].iloc[:2],
            "tags": pd.Series(
                [frozenset({"alpha", "beta", "gamma", "delta"}), {"x", "yy", "zzz"}], dtype=object
            ),
            "wide": np.array([1.5, np.nan], dtype=np.longdouble),
            "cwide": np.array([1.5 + 2j, np.nan], dtype=np.clongdouble),
        }
    )


def test_same_in_every_process(another_process):
    frame = _value_hashed_everywhere()
    [there] = _fingerprints_in_another_process(another_process, [frame])
    assert there == (_column_fingerprints(frame), fingerprint(frame))


@pytest.mark.parametrize(
    "cell, what",
    [
        (lambda: 1, "function"),
        (object(), "object"),
        (pd.DataFrame({"a": [1]}), "DataFrame"),
        ((1, object()), "object"),
    ],
    ids=["lambda", "object", "frame", "nested"],
)
def test_cells_without_a_value_representation_are_refused(cell, what):
    column = pd.Series([1, None], dtype=object)
    column.iat[1] = cell
    frame = pd.DataFrame({"payload": column})
    with pytest.raises(SerializationError, match=r"column 'payload' \(dtype object\)") as info:
        fingerprint(frame)
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert "row 1" in message and what in message
    assert "Expected" in message


def test_a_refused_index_level_is_named():
    frame = pd.DataFrame({"x": [1, 2]}, index=pd.Index([object(), 2], dtype=object, name="k"))
    with pytest.raises(SerializationError, match=r"index level 0 \('k'\) \(dtype object\)"):
        fingerprint(frame)


# --- fingerprints that must not move ------------------------------------------------


def _golden_frame() -> pd.DataFrame:
    n = 5
    text = ["x", None, "yz", "", "w"]
    return pd.DataFrame(
        {
            "f": np.linspace(0, 1, n),
            "f32": np.linspace(0, 1, n, dtype="float32"),
            "fnan": [1.0, np.nan, 3.0, np.nan, 5.0],
            "i": np.arange(n),
            "u8": np.arange(n, dtype="uint8"),
            "b": np.arange(n) % 2 == 0,
            "s": pd.Series([f"s{k}" for k in range(n)], dtype="str"),
            "so": pd.Series(text, dtype=object),
            "sp": pd.Series(text, dtype="string[python]"),
            "sa": pd.Series(text, dtype="string[pyarrow]"),
            "o": pd.Series([1, "a", None, 2.5, decimal.Decimal("1.50")], dtype=object),
            "ob": pd.Series([b"a", b"", None, b"xyz", b"a"], dtype=object),
            "c": pd.Categorical(list("xyzxy")),
            "ci": pd.Categorical([3, 1, None, 3, 2], ordered=True),
            "n": pd.array([1, None, 3, 4, 5], dtype="Int64"),
            "fl": pd.array([1.5, None, 3.0, 4.0, 5.0], dtype="Float32"),
            "t": pd.date_range("2019-02-09", periods=n, freq="h", tz="Europe/Paris"),
            "d": pd.date_range("2019-02-09", periods=n, freq="D"),
            "ds": pd.Series(pd.date_range("2019-02-09", periods=n, freq="D")).astype(
                "datetime64[s]"
            ),
            "td": pd.to_timedelta(np.arange(n), unit="h"),
            "bn": pd.array([True, None, False, True, False], dtype="boolean"),
            "p": pd.period_range("2019-01", periods=n, freq="M"),
            "iv": pd.interval_range(0, n),
            "sparse": pd.arrays.SparseArray([0.0, 0.0, 1.5, np.nan, 0.0]),
            "ai": pd.Series([1, None, 3, 4, 5], dtype="int64[pyarrow]"),
            "af": pd.Series([1.5, None, 3.0, np.nan, 5.0], dtype="float64[pyarrow]"),
            "as": pd.Series(text, dtype=pd.ArrowDtype(pa.string())),
        },
        index=pd.Index(list("abcde"), name="key"),
    )


# Computed before issue 11's fix: the fix must not change the fingerprint of a dtype
# that was already hashed by value, or every cached stage of such data would refit.
GOLDEN = {
    "f": "fc84ffe75e28d47caca68d5e34b7dd12",
    "f32": "ebdc864d914f9c18c35bf3721e703b34",
    "fnan": "23f7bb4ed2357a5844d31a711b33bc8c",
    "i": "fcf31e32d63d86e7a9ed844d9e5d66b3",
    "u8": "e7f87d36bd92a969d0dd67da03411385",
    "b": "97e8d9b882770de24e358b1196f62862",
    "s": "f477bde6f53625b3edf74165c90a5b0b",
    "so": "1abe51a939954890c317504c1289a0d4",
    "sp": "1e0009c3535f170fc9944b1789dd0c47",
    "sa": "84e41cdc07009b41e89dd97a0371855c",
    "o": "e85811220d0ae31cdab87e2f1e65f97f",
    "ob": "c25274499d372103795864f2ca0d5705",
    "c": "6993d6e2821342f5909923361fb579b1",
    "ci": "0d223637b4e0bf033535441ff784a2b5",
    "n": "4c1bf23d5403c7f8c8abd3c67b88d4cc",
    "fl": "0c4b35ad1de416a06e091d1a9d1d6208",
    "t": "b9be14467a8c40130945632e524b2a87",
    "d": "31a2ff8dcb6a52e0c05127dc46b31aab",
    "ds": "89361d5fe55adccda85deee4e033634f",
    "td": "31fede6bbba4aec23f5f97501f5eac96",
    "bn": "5a2212fdb713f5f4032710f00831da6c",
    "p": "51524d63955571b11dd5cb7d8e8ac2c6",
    "iv": "2fb19e5be025afa04bde70fad82f403c",
    "sparse": "33f33fc93332b66e11b878e7e0e5a948",
    "ai": "2e0bae68c4cf231d8e7a7a3575497ca0",
    "af": "2f6a6a84543c16cc0af912f2b0056f05",
    "as": "ee22ed3537a76219c0ffb0fc179723c9",
}


def test_fingerprints_of_value_hashed_dtypes_did_not_move():
    frame = _golden_frame()
    assert _column_fingerprints(frame) == GOLDEN
    assert fingerprint(frame) == "eeeba600033d1911f2ffd39dfcb511ce"
