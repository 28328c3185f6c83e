"""Hypothesis strategies shared by the test suite."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import strategies as st

MISSING = st.sampled_from([None, np.nan, pd.NA])


@st.composite
def penguin_rows(draw: st.DrawFn, *, n: int | None = None) -> pd.DataFrame:
    """Raw penguin records as production might send them.

    Nulls of every kind in every column, unseen islands, and fractional or missing
    values in the integer ``year`` column.
    """
    size = n if n is not None else draw(st.integers(1, 12))
    text = st.one_of(st.sampled_from(["Biscoe", "Dream", "Torgersen", "Atlantis"]), MISSING)
    sex = st.one_of(st.sampled_from(["male", "female"]), MISSING)
    measure = st.one_of(st.floats(0, 6000, allow_nan=False), MISSING)
    year = st.one_of(st.integers(2000, 2030), st.floats(2000, 2030), MISSING)
    rows = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "island": text,
                    "bill_length_mm": measure,
                    "bill_depth_mm": measure,
                    "flipper_length_mm": measure,
                    "body_mass_g": measure,
                    "sex": sex,
                    "year": year,
                }
            ),
            min_size=size,
            max_size=size,
        )
    )
    return pd.DataFrame(rows)


@st.composite
def training_frames(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.Series]:
    """Small raw training frames: numeric and text columns with missing values, two classes."""
    n = draw(st.integers(12, 40))
    floats = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.just(np.nan))
    words = st.one_of(st.sampled_from(["a", "b", "c"]), MISSING)
    frame = pd.DataFrame(
        {
            "amount": draw(st.lists(floats, min_size=n, max_size=n)),
            "count": draw(st.lists(st.integers(0, 50), min_size=n, max_size=n)),
            "kind": draw(st.lists(words, min_size=n, max_size=n)),
        }
    )
    labels = draw(st.lists(st.sampled_from(["yes", "no"]), min_size=n, max_size=n))
    labels[:2] = ["yes", "no"]  # both classes present
    return frame, pd.Series(labels, name="label")


# --- columns of every dtype pandas can hold (the fingerprint's property tests) -------------

# A cell is a plain Python value; None is a missing cell. ``build(values, variant)`` turns
# the cells of one column into a Series: variant 0 and variant 1 hold the same content in
# different memory (Arrow: a sliced, two-chunk array with its own dictionaries; object
# columns: every string and container a distinct object instead of shared ones), so a
# fingerprint that looks at memory rather than content tells them apart.


@dataclass(frozen=True)
class ColumnKind:
    """One dtype: how to draw a cell of it and how to build a column from cells."""

    name: str
    cells: st.SearchStrategy[Any]
    build: Callable[[list[Any], int], pd.Series]
    changeable: bool = True  # False: every cell is the same (the Arrow null type)


def _nat_ints(values: list[Any]) -> np.ndarray:
    return np.array([np.iinfo(np.int64).min if v is None else v for v in values], dtype="i8")


def _numpy(dtype: str, cells: st.SearchStrategy[Any]) -> ColumnKind:
    def build(values: list[Any], variant: int) -> pd.Series:
        if np.dtype(dtype).kind in "mM":
            array = _nat_ints(values).view(dtype)
        elif np.dtype(dtype).kind in "fc":
            array = np.array([np.nan if v is None else v for v in values], dtype=dtype)
        else:
            array = np.array(values, dtype=dtype)
        if variant:  # a strided view of a larger buffer
            wide = np.zeros(2 * len(array), dtype=array.dtype)
            wide[1::2] = array
            array = wide[1::2]
        return pd.Series(array, copy=False)

    return ColumnKind(f"numpy {dtype}", cells, build)


def _fresh(value: Any) -> Any:
    """An equal value whose strings and containers are all new objects."""
    if isinstance(value, str):
        return (value + "\0")[:-1]
    if isinstance(value, tuple | list | frozenset):
        return type(value)(_fresh(v) for v in value)
    if isinstance(value, dict):
        return {_fresh(k): _fresh(v) for k, v in value.items()}
    return value


def _shared(value: Any) -> Any:
    """An equal value in which equal strings are one object."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, tuple | list | frozenset):
        return type(value)(_shared(v) for v in value)
    if isinstance(value, dict):
        return {_shared(k): _shared(v) for k, v in value.items()}
    return value


def _objects() -> ColumnKind:
    word = st.text("ab", max_size=3)
    leaf = st.one_of(
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        word,
        st.binary(max_size=3),
        st.decimals(allow_nan=False, allow_infinity=False, places=2),
        st.booleans(),
        st.datetimes(),
    )
    nested = st.one_of(
        st.tuples(word, word),
        st.lists(st.one_of(word, st.integers(0, 3), st.none()), max_size=3),
        st.dictionaries(word, word, max_size=3),
        st.frozensets(word, max_size=3),
    )

    def build(values: list[Any], variant: int) -> pd.Series:
        cells = [_fresh(v) if variant else _shared(v) for v in values]
        series = pd.Series([None] * len(cells), dtype=object)
        for i, cell in enumerate(cells):  # a list cell stays one cell
            series.iat[i] = cell
        return series

    return ColumnKind("numpy object", st.one_of(st.none(), leaf, nested), build)


def _extension(dtype: str, cells: st.SearchStrategy[Any]) -> ColumnKind:
    return ColumnKind(dtype, cells, lambda values, variant: pd.Series(values, dtype=dtype))


_CATEGORY_POOLS: dict[str, list[Any]] = {
    "int": [3, 1, 2],
    "float": [0.5, -1.5, 2.0],
    "str": ["b", "a", "c"],
    "bool": [True, False],
    "datetime": list(pd.to_datetime(["2019-02-09", "2019-02-10", "2000-01-01"])),
    "datetime tz": list(pd.to_datetime(["2019-02-09", "2019-02-10"]).tz_localize("Asia/Tokyo")),
    "period": list(pd.period_range("2019-01", periods=3, freq="M")),
    "interval": list(pd.interval_range(0, 3)),
}


def _category(kind: str, ordered: bool) -> ColumnKind:
    pool = _CATEGORY_POOLS[kind]

    def build(values: list[Any], variant: int) -> pd.Series:
        return pd.Series(pd.Categorical(values, categories=pool, ordered=ordered))

    name = f"category of {kind}{' (ordered)' if ordered else ''}"
    return ColumnKind(name, st.one_of(st.none(), st.sampled_from(pool)), build)


def _datetime_tz(unit: str, tz: str) -> ColumnKind:
    def build(values: list[Any], variant: int) -> pd.Series:
        index = pd.DatetimeIndex(_nat_ints(values).view(f"M8[{unit}]"))
        return pd.Series(index.tz_localize("UTC").tz_convert(tz))

    return ColumnKind(
        f"datetime64[{unit}, {tz}]", st.one_of(st.none(), st.integers(-(2**31), 2**31)), build
    )


def _period(freq: str) -> ColumnKind:
    def build(values: list[Any], variant: int) -> pd.Series:
        cells = [pd.NaT if v is None else pd.Period(ordinal=v, freq=freq) for v in values]
        return pd.Series(pd.array(cells, dtype=f"period[{freq}]"))

    return ColumnKind(f"period[{freq}]", st.one_of(st.none(), st.integers(-1000, 1000)), build)


def _interval(closed: str, missing: bool) -> ColumnKind:
    bound = st.integers(-100, 100)
    cells = st.tuples(bound, st.integers(0, 5))

    def build(values: list[Any], variant: int) -> pd.Series:
        left = [np.nan if v is None else v[0] for v in values]
        right = [np.nan if v is None else v[0] + v[1] for v in values]
        if not missing:
            left, right = np.array(left, dtype="i8"), np.array(right, dtype="i8")
        return pd.Series(pd.arrays.IntervalArray.from_arrays(left, right, closed=closed))

    return ColumnKind(
        f"interval ({closed}{', missing' if missing else ''})",
        st.one_of(st.none(), cells) if missing else cells,
        build,
    )


def _sparse(dtype: str, fill: Any, cells: st.SearchStrategy[Any]) -> ColumnKind:
    def build(values: list[Any], variant: int) -> pd.Series:
        dense = [fill if v is None else v for v in values]
        return pd.Series(pd.arrays.SparseArray(dense, fill_value=fill, dtype=dtype))

    return ColumnKind(f"Sparse[{dtype}, {fill}]", cells, build)


def _arrow(
    type_: pa.DataType,
    cells: st.SearchStrategy[Any],
    make: Callable[[list[Any]], pa.Array] | None = None,
    *,
    changeable: bool = True,
) -> ColumnKind:
    def array(values: list[Any]) -> pa.Array:
        return make(values) if make is not None else pa.array(values, type=type_)

    def build(values: list[Any], variant: int) -> pd.Series:
        if not variant:
            return pd.Series(pd.arrays.ArrowExtensionArray(array(values)))
        # The same cells at an offset into a longer array, split into two chunks.
        half = len(values) // 2
        chunks = [array(values[:1] + values[:half]).slice(1), array(values[half:] + values[:1])]
        chunks[1] = chunks[1].slice(0, len(values) - half)
        return pd.Series(pd.arrays.ArrowExtensionArray(pa.chunked_array(chunks, type=type_)))

    return ColumnKind(f"ArrowDtype({type_})", st.one_of(st.none(), cells), build, changeable)


def _via(type_: pa.DataType, storage: pa.DataType) -> Callable[[list[Any]], pa.Array]:
    """Temporal and similar Arrow arrays, built from their integer storage."""
    return lambda values: pa.array(values, type=storage).cast(type_)


def _decimal(type_: pa.Decimal128Type) -> ColumnKind:
    def make(values: list[Any]) -> pa.Array:
        # pa.array of Decimals infers a precision from the first cell and then refuses
        # cells with more digits; from text, every cell fits the declared type.
        text = [None if v is None else format(v, "f") for v in values]
        return pa.array(text, type=pa.string()).cast(type_)

    # From the unscaled integer: st.decimals rounds bounds of 38 digits and more.
    largest = 10**type_.precision - 1
    cells = st.integers(-largest, largest).map(lambda i: Decimal(f"{i}E-{type_.scale}"))
    return _arrow(type_, cells, make)


def _arrow_kinds() -> list[ColumnKind]:
    kinds = []
    for bits in (8, 16, 32, 64):
        for signed in (True, False):
            low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
            type_ = getattr(pa, f"{'' if signed else 'u'}int{bits}")()
            kinds.append(_arrow(type_, st.integers(low, high)))
    kinds.append(
        _arrow(
            pa.float16(),
            st.floats(width=16),
            lambda values: pa.array(
                np.array([0 if v is None else v for v in values], dtype=np.float16),
                mask=np.array([v is None for v in values], dtype=bool),
            ),
        )
    )
    kinds.append(_arrow(pa.float32(), st.floats(width=32)))
    kinds.append(_arrow(pa.float64(), st.floats()))
    kinds.append(_arrow(pa.bool_(), st.booleans()))
    text, blob = st.text(max_size=4), st.binary(max_size=4)
    for type_ in (pa.string(), pa.large_string(), pa.string_view()):
        kinds.append(_arrow(type_, text))
    for type_ in (pa.binary(), pa.large_binary(), pa.binary_view()):
        kinds.append(_arrow(type_, blob))
    kinds.append(_arrow(pa.binary(3), st.binary(min_size=3, max_size=3)))
    for precision, scale in ((1, 0), (10, 2), (38, 10), (20, 20)):
        kinds.append(_decimal(pa.decimal128(precision, scale)))
    kinds.append(_decimal(pa.decimal32(5, 2)))
    kinds.append(_decimal(pa.decimal64(12, 3)))
    kinds.append(_decimal(pa.decimal256(60, 5)))
    days = st.integers(-(10**5), 10**5)
    kinds.append(_arrow(pa.date32(), days, _via(pa.date32(), pa.int32())))
    kinds.append(
        _arrow(pa.date64(), days.map(lambda d: d * 86_400_000), _via(pa.date64(), pa.int64()))
    )
    moments = st.integers(-(2**40), 2**40)
    for unit in ("s", "ms", "us", "ns"):
        for tz in (None, "UTC", "America/New_York"):
            type_ = pa.timestamp(unit, tz=tz)
            kinds.append(_arrow(type_, moments, _via(type_, pa.int64())))
        kinds.append(_arrow(pa.duration(unit), moments, _via(pa.duration(unit), pa.int64())))
    for type_, per_day, storage in (
        (pa.time32("s"), 86_400, pa.int32()),
        (pa.time32("ms"), 86_400_000, pa.int32()),
        (pa.time64("us"), 86_400_000_000, pa.int64()),
        (pa.time64("ns"), 86_400_000_000_000, pa.int64()),
    ):
        kinds.append(_arrow(type_, st.integers(0, per_day - 1), _via(type_, storage)))
    small = st.one_of(st.none(), st.integers(-3, 3))
    word = st.one_of(st.none(), st.text("ab", max_size=2))
    for type_, item in (
        (pa.list_(pa.int64()), small),
        (pa.list_(pa.string()), word),
        (pa.large_list(pa.int64()), small),
        (pa.large_list(pa.string()), word),
        (pa.list_view(pa.int64()), small),
        (pa.large_list_view(pa.string()), word),
    ):
        kinds.append(_arrow(type_, st.lists(item, max_size=3)))
    kinds.append(_arrow(pa.list_(pa.int64(), 2), st.lists(small, min_size=2, max_size=2)))
    kinds.append(
        _arrow(pa.list_(pa.list_(pa.string())), st.lists(st.lists(word, max_size=2), max_size=2))
    )
    kinds.append(
        _arrow(pa.map_(pa.string(), pa.int64()), st.lists(st.tuples(text, small), max_size=3))
    )
    kinds.append(
        _arrow(
            pa.struct([("a", pa.int64()), ("b", pa.string()), ("c", pa.list_(pa.int8()))]),
            st.fixed_dictionaries({"a": small, "b": word, "c": st.lists(small, max_size=2)}),
        )
    )
    for index, ordered in ((pa.int8(), False), (pa.int32(), True)):
        type_ = pa.dictionary(index, pa.string(), ordered=ordered)
        kinds.append(
            _arrow(
                type_,
                st.sampled_from(["x", "y", "zz"]),
                lambda values, t=type_: pa.array(values, type=pa.string()).cast(t),
            )
        )
    kinds.append(_arrow(pa.null(), st.none(), changeable=False))
    kinds.append(
        _arrow(
            pa.month_day_nano_interval(),
            st.tuples(st.integers(-12, 12), st.integers(-31, 31), st.integers(-(2**40), 2**40)),
        )
    )
    ree = pa.run_end_encoded(pa.int32(), pa.int64())
    kinds.append(
        _arrow(ree, small, lambda values: pc.run_end_encode(pa.array(values, type=pa.int64())))
    )
    kinds.append(
        _arrow(
            pa.uuid(),
            st.binary(min_size=16, max_size=16),
            lambda values: pa.ExtensionArray.from_storage(
                pa.uuid(), pa.array(values, type=pa.binary(16))
            ),
        )
    )
    return kinds


def _column_kinds() -> list[ColumnKind]:
    units = ("s", "ms", "us", "ns")
    moments = st.one_of(st.none(), st.integers(-(2**40), 2**40))
    kinds = [_numpy("bool", st.booleans())]
    for dtype in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        info = np.iinfo(dtype)
        kinds.append(_numpy(dtype, st.integers(int(info.min), int(info.max))))
        kinds.append(_extension(dtype.capitalize().replace("Ui", "UI"), _or_none(info)))
    kinds += [
        _numpy("float16", st.floats(width=16)),
        _numpy("float32", st.floats(width=32)),
        _numpy("float64", st.floats()),
        _numpy("longdouble", st.floats()),
        _numpy("complex64", st.complex_numbers(width=64)),
        _numpy("complex128", st.complex_numbers()),
        _numpy("clongdouble", st.complex_numbers()),
        _numpy("S3", st.binary(max_size=3).filter(lambda b: not b.endswith(b"\0"))),
        _objects(),
        _extension("Float32", st.one_of(st.none(), st.floats(width=32, allow_nan=False))),
        _extension("Float64", st.one_of(st.none(), st.floats(allow_nan=False))),
        _extension("boolean", st.one_of(st.none(), st.booleans())),
        _extension("string[python]", st.one_of(st.none(), st.text(max_size=4))),
        _extension("string[pyarrow]", st.one_of(st.none(), st.text(max_size=4))),
        _extension("str", st.one_of(st.none(), st.text(max_size=4))),
        _period("D"),
        _period("M"),
        _interval("right", missing=True),
        _interval("both", missing=False),
        _sparse("float64", np.nan, st.one_of(st.none(), st.floats(allow_nan=False))),
        _sparse("int64", 0, st.integers(-5, 5)),
    ]
    for unit in units:
        kinds.append(_numpy(f"datetime64[{unit}]", moments))
        kinds.append(_numpy(f"timedelta64[{unit}]", moments))
        kinds.append(_datetime_tz(unit, "Europe/Paris" if unit != "ns" else "UTC"))
    for pool in _CATEGORY_POOLS:
        kinds.append(_category(pool, ordered=pool == "int"))
    return kinds + _arrow_kinds()


def _or_none(info: np.iinfo) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.integers(int(info.min), int(info.max)))


COLUMN_KINDS: list[ColumnKind] = _column_kinds()


@st.composite
def column_cells(draw: st.DrawFn, kind: ColumnKind, n: int) -> list[Any]:
    """``n`` cells of one kind of column."""
    return draw(st.lists(kind.cells, min_size=n, max_size=n))


@st.composite
def every_dtype_cells(draw: st.DrawFn, *, max_rows: int = 5) -> dict[str, list[Any]]:
    """The cells of one column of every kind in :data:`COLUMN_KINDS`, all of one length."""
    n = draw(st.integers(1, max_rows))
    return {kind.name: draw(column_cells(kind, n)) for kind in COLUMN_KINDS}


def build_frame(cells: dict[str, list[Any]], variant: int = 0) -> pd.DataFrame:
    """The frame of :func:`every_dtype_cells`' cells: one column per kind, named after it."""
    kinds = {kind.name: kind for kind in COLUMN_KINDS}
    return pd.DataFrame(
        {name: kinds[name].build(values, variant) for name, values in cells.items()}
    )


# --- raw frames of every dtype the raw-input model accepts (docs/pyfunc.rst, "Dtypes") ---

# Text a CSV body carries as text: no digits (a number), no "true"/"false", no "nan"/"NA"
# spelling, never empty (an empty CSV field is a missing value).
_CSV_WORDS = st.text(alphabet="abcxyzé ,'\"", min_size=1, max_size=6).filter(
    lambda w: any(c.isalpha() for c in w)
)
# Second counts from 1970 to 2200 (time zones), and from year 1000 to 9999 (ISO 8601 years).
_MODERN = (0, 7_258_118_400)
_ISO_YEARS = (-30_610_224_000, 253_402_300_799)
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}


def _moments(unit: str, modern: bool) -> st.SearchStrategy[int]:
    low, high = _MODERN if modern else _ISO_YEARS
    if unit == "ns":  # datetime64[ns] spans 1677 to 2262
        low, high = max(low, -(2**63) // 10**9 + 1), min(high, (2**63 - 1) // 10**9 - 1)
    scale = _PER_SECOND[unit]
    return st.integers(low * scale, high * scale)


def _counts(values: list[Any], dtype: str) -> np.ndarray:
    """Datetimes or durations from counts of their unit; None is NaT."""
    return np.array([np.iinfo(np.int64).min if v is None else v for v in values], "i8").view(dtype)


@dataclass(frozen=True)
class ModelColumn:
    """One dtype the raw-input model accepts: its cells (None is missing) and its column.

    ``csv`` is False for a column a CSV body cannot carry (a mixed object column comes
    back from CSV as numbers).
    """

    name: str
    cells: st.SearchStrategy[Any]
    build: Callable[[list[Any]], pd.Series]
    csv: bool = True


def _model_columns() -> list[ModelColumn]:
    def nullable(cells: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(st.none(), cells)

    floats = st.floats(-1e6, 1e6, allow_nan=False)
    ints = st.integers(-(10**12), 10**12)
    pool = ["blue", "red", "green", "unused"]

    def moments(unit: str, tz: str | None) -> ModelColumn:
        def build(values: list[Any]) -> pd.Series:
            stamps = pd.Series(_counts(values, f"M8[{unit}]"))
            return stamps.dt.tz_localize("UTC").dt.tz_convert(tz) if tz else stamps

        name = f"when_{unit}" + (f"_{tz.split('/')[-1].lower()}" if tz else "")
        return ModelColumn(name, nullable(_moments(unit, modern=tz is not None)), build)

    columns = [
        ModelColumn("float64", nullable(floats), lambda v: pd.Series(v, dtype="float64")),
        ModelColumn("int64", ints, lambda v: pd.Series(v, dtype="int64")),
        ModelColumn("Int64", nullable(ints), lambda v: pd.Series(v, dtype="Int64")),
        ModelColumn("Float64", nullable(floats), lambda v: pd.Series(v, dtype="Float64")),
        ModelColumn("boolean", nullable(st.booleans()), lambda v: pd.Series(v, dtype="boolean")),
        ModelColumn("bool", st.booleans(), lambda v: pd.Series(v, dtype="bool")),
        ModelColumn("object", nullable(_CSV_WORDS), lambda v: pd.Series(v, dtype=object)),
        ModelColumn("str", nullable(_CSV_WORDS), lambda v: pd.Series(v, dtype="str")),
        ModelColumn(
            "category",
            nullable(st.sampled_from(pool[:3])),
            lambda v: pd.Series(pd.Categorical(v, categories=pool)),
        ),
        ModelColumn(
            "category_int",
            nullable(st.sampled_from([3, 1, 2])),
            lambda v: pd.Series(pd.Categorical(v, categories=[3, 1, 2], ordered=True)),
        ),
        ModelColumn(
            "mixed",
            nullable(st.sampled_from([1, "1", 1.0, 2.5, "a", True])),
            lambda v: pd.Series(v, dtype=object),
            csv=False,
        ),
        ModelColumn(
            "duration",
            nullable(st.integers(-(10**15), 10**15)),
            lambda v: pd.Series(_counts(v, "m8[ns]")),
        ),
    ]
    for unit in ("s", "ms", "us", "ns"):
        columns.append(moments(unit, None))
    columns += [moments("us", "UTC"), moments("ms", "Europe/Paris"), moments("s", "Asia/Tokyo")]
    return columns


MODEL_COLUMNS: list[ModelColumn] = _model_columns()


@st.composite
def model_frames(
    draw: st.DrawFn,
    *,
    columns: list[str] | None = None,
    min_rows: int = 2,
    max_rows: int = 8,
    csv: bool = False,
) -> pd.DataFrame:
    """Raw frames of the dtypes the raw-input model accepts, with missing values.

    Every column of ``columns`` (names from :data:`MODEL_COLUMNS`), or a subset of
    them all, drawn by Hypothesis, when ``columns`` is None; with ``csv``, only
    columns a CSV body carries.
    """
    kinds = [c for c in MODEL_COLUMNS if not csv or c.csv]
    if columns is None:
        kinds = [k for k in kinds if draw(st.booleans())] or [draw(st.sampled_from(kinds))]
    else:
        kinds = [k for k in kinds if k.name in columns]
    n = draw(st.integers(min_rows, max_rows))
    return pd.DataFrame(
        {k.name: k.build(draw(st.lists(k.cells, min_size=n, max_size=n))) for k in kinds}
    )
