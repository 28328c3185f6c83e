"""Hypothesis strategies shared by the test suite."""

from __future__ import annotations

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
