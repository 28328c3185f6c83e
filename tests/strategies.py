"""Hypothesis strategies shared by the test suite."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
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
