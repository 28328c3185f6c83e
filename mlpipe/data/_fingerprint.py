"""A hash of the full content of a data frame."""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import json
import pickle
import sys
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from mlpipe.exceptions import SerializationError

__all__ = ["fingerprint"]

# Bumped whenever the byte layout fed to the hash changes for data it already hashed
# by value, so that old and new fingerprints can never be confused. Issue 11 kept it:
# the layouts it changed (pd.ArrowDtype columns other than numbers and text, long
# doubles, containers in object columns) hashed memory addresses, padding, object
# identity or lossy conversions (an Arrow time64[ns] column kept microseconds), or
# crashed, so no old fingerprint of them was a fingerprint of the content.
_FORMAT = b"mlpipe-fingerprint-1"


def fingerprint(frame: pd.DataFrame | pd.Series) -> str:
    """Hash the full content of a data frame.

    Every cell counts, as do column names and their order, dtypes, row order and
    the index. The same content gives the same fingerprint in any process and on
    any platform; any change gives a new one. Unlike ``mlflow.data``'s digest, which
    reads only the first 10,000 rows and skips bool and datetime columns, nothing
    is left out.

    Every dtype is hashed by its values, never by memory layout or object identity:
    Arrow chunks and offsets, the bytes under a missing cell, a dictionary-encoded
    column's dictionary and the identity of the objects in an object column do not
    count.

    The hash is XXH3-128 (the xxHash library), fed with each column's buffer
    directly, so hashing runs near memory speed. It is built to tell data versions
    apart, not to resist a forger who crafts collisions on purpose.

    Parameters
    ----------
    frame : pandas.DataFrame or pandas.Series
        The data. A Series is hashed as a one-column frame.

    Returns
    -------
    str
        32 hexadecimal characters (128 bits).

    Raises
    ------
    SerializationError
        If a column holds values that have no stable value representation to hash:
        an object cell such as a function or an instance of a user class, or an Arrow
        type mlpipe does not know (a union). The message names the column, its dtype
        and, for an object cell, the row.

    Examples
    --------
    >>> import pandas as pd
    >>> from mlpipe import fingerprint
    >>> df = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    >>> fingerprint(df) == fingerprint(df.copy())
    True
    >>> fingerprint(df) == fingerprint(df.iloc[::-1])
    False
    >>> len(fingerprint(df))
    32
    """
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"fingerprint() expects a pandas DataFrame or Series, got {type(frame).__name__}."
        )
    h = xxhash.xxh3_128()
    index_header = _index_header(frame.index)
    header = {
        "index": index_header,
        "shape": list(frame.shape),
        "columns": [_label(c) for c in frame.columns],
        "dtypes": [str(d) for d in frame.dtypes],
    }
    _feed(h, _FORMAT)
    _feed(h, json.dumps(header, sort_keys=True).encode())
    if index_header["kind"] != "range":
        for level in range(frame.index.nlevels):
            name = frame.index.names[level]
            where = f"index level {level}" + (f" ({name!r})" if name is not None else "")
            _hash_values(h, pd.Series(frame.index.get_level_values(level), copy=False), where)
    for i in range(frame.shape[1]):
        _hash_values(h, frame.iloc[:, i], f"column {frame.columns[i]!r}")
    return h.hexdigest()


def _label(label: object) -> str:
    # The type is part of a label: column 1 and column "1" are different columns.
    return f"{type(label).__name__}:{label!s}"


def _index_header(index: pd.Index) -> dict[str, object]:
    if isinstance(index, pd.RangeIndex):
        return {"kind": "range", "start": index.start, "stop": index.stop, "step": index.step}
    return {
        "kind": type(index).__name__,
        "names": [_label(n) for n in index.names],
        "dtypes": [str(index.get_level_values(i).dtype) for i in range(index.nlevels)],
    }


def _feed(h: xxhash.xxh3_128, data: bytes | memoryview) -> None:
    # Length-prefixed, so that the boundary between two pieces is part of the hash.
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def _feed_array(h: xxhash.xxh3_128, array: np.ndarray) -> None:
    if array.size == 0:  # memoryview cannot cast an empty multidimensional array
        _feed(h, b"")
        return
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    _feed(h, memoryview(array.data).cast("B"))


def _hash_values(h: xxhash.xxh3_128, column: pd.Series, where: str) -> None:
    """Feed the values of one column (or index level) to the hash.

    ``where`` names the column for error messages: ``column 'a'``, ``index level 0``.
    """
    dtype = column.dtype
    if isinstance(dtype, pd.SparseDtype):
        _hash_values(h, column.sparse.to_dense(), where)
    elif isinstance(dtype, pd.CategoricalDtype):
        _hash_values(h, pd.Series(dtype.categories, copy=False), f"the categories of {where}")
        _feed(h, b"ordered" if dtype.ordered else b"unordered")
        _feed_array(h, column.cat.codes.to_numpy())
    elif isinstance(dtype, pd.ArrowDtype):
        _hash_arrow(h, pa.array(column), where, dtype)
    elif isinstance(dtype, pd.DatetimeTZDtype):
        _feed_array(h, column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().view("i8"))
    elif isinstance(dtype, np.dtype) and dtype.kind in "mM":
        _feed_array(h, column.to_numpy().view("i8"))
    elif isinstance(dtype, np.dtype) and dtype.kind == "f":
        _feed_array(h, _canonical_floats(column.to_numpy()))
    elif isinstance(dtype, np.dtype) and dtype.kind == "c":
        _feed_array(h, _without_padding(column.to_numpy()))
    elif isinstance(dtype, np.dtype) and dtype.kind in "biu":
        _feed_array(h, column.to_numpy())
    elif (
        isinstance(dtype, pd.api.extensions.ExtensionDtype)
        and (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))
        and np.dtype(getattr(dtype, "numpy_dtype", object)).kind in "biuf"
    ):
        # Nullable Int/Float/boolean: the values under the mask are undefined, so zero them.
        numpy_dtype = np.dtype(dtype.numpy_dtype)
        missing = column.isna().to_numpy()
        _feed_array(h, missing)
        values = column.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0))
        _feed_array(h, _canonical_floats(values) if numpy_dtype.kind == "f" else values)
    else:
        # Object, string, period, interval and any other extension dtype: by cell.
        _hash_objects(h, column, where)


# x86's long double has 80 bits of value in 16 (or 12) bytes of storage; the rest is
# padding that numpy leaves uninitialised. Elsewhere every byte of it is value.
_LONGDOUBLE_BYTES = 10 if np.finfo(np.longdouble).nmant == 63 else np.dtype(np.longdouble).itemsize


def _without_padding(values: np.ndarray) -> np.ndarray:
    """Float or complex values as the bytes that hold their value (long doubles padded)."""
    if values.dtype not in (np.dtype(np.longdouble), np.dtype(np.clongdouble)):
        return values
    part = np.dtype(np.longdouble).itemsize
    raw = np.ascontiguousarray(values).view(np.uint8)
    raw = raw.reshape(len(values), values.dtype.itemsize // part, part)
    return np.ascontiguousarray(raw[:, :, :_LONGDOUBLE_BYTES])


def _canonical_floats(values: np.ndarray) -> np.ndarray:
    missing = np.isnan(values)
    if missing.any():
        # NaN has many bit patterns; all of them mean the same missing cell.
        values = np.where(missing, np.array(np.nan, dtype=values.dtype), values)
    return _without_padding(values)


# --- Arrow ----------------------------------------------------------------------------


def _hash_arrow(
    h: xxhash.xxh3_128, array: pa.Array | pa.ChunkedArray, where: str, dtype: object
) -> None:
    """Feed an Arrow array by its logical values, never by its memory layout.

    Chunks, slice offsets, the bytes under null slots, the data a null list or string
    slot spans and the dictionary a dictionary-encoded array uses are storage, not
    content: none of them reaches the hash. The dtype (every parameter of the Arrow
    type) is in the header already.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    type_ = array.type
    if isinstance(type_, pa.BaseExtensionType):
        return _hash_arrow(h, array.storage, where, dtype)
    if pa.types.is_dictionary(type_):
        return _hash_arrow(h, array.dictionary_decode(), where, dtype)
    if pa.types.is_run_end_encoded(type_):
        return _hash_arrow(h, pc.run_end_decode(array), where, dtype)
    missing = array.is_null().to_numpy(zero_copy_only=False)
    if _is_text_or_binary(type_):
        # As for an object column of strings, so that the fingerprint of string
        # columns did not move when this branch was added.
        return _hash_text(h, array, missing)
    _feed_array(h, missing)
    if pa.types.is_null(type_):
        return None
    if pa.types.is_boolean(type_):
        return _feed_array(h, pc.fill_null(array, False).to_numpy(zero_copy_only=False))
    if _is_fixed_width(type_):
        return _feed_array(h, _fixed_width_values(array, missing))
    if pa.types.is_map(type_):
        entries = pa.struct([type_.key_field, type_.item_field])
        return _hash_arrow(h, array.cast(pa.list_(entries)), where, dtype)
    if _is_list(type_):
        lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
        _feed_array(h, lengths.astype(np.int64))
        # flatten() drops whatever a null slot spans and applies the slice offset.
        return _hash_arrow(h, array.flatten(), where, dtype)
    if pa.types.is_struct(type_):
        # flatten() gives each field with the struct's offset and nulls applied.
        for field in array.flatten():
            _hash_arrow(h, field, where, dtype)
        return None
    raise SerializationError(
        f"Cannot fingerprint {where} (dtype {dtype}): mlpipe does not know how to hash the "
        f"values of the Arrow type {type_}, and will not hash its memory instead. Expected "
        "numbers, booleans, decimals, text, binary, dates, times, timestamps, durations, "
        "intervals, and lists, maps, structs, dictionaries or run-end encodings of these. "
        "Convert the column to one of them first."
    )


def _is_fixed_width(type_: pa.DataType) -> bool:
    return (
        pa.types.is_integer(type_)
        or pa.types.is_floating(type_)
        or pa.types.is_decimal(type_)
        or pa.types.is_temporal(type_)
        or pa.types.is_fixed_size_binary(type_)
        or type_ == pa.month_day_nano_interval()
    )


def _is_text_or_binary(type_: pa.DataType) -> bool:
    return (
        pa.types.is_string(type_)
        or pa.types.is_large_string(type_)
        or pa.types.is_string_view(type_)
        or pa.types.is_binary(type_)
        or pa.types.is_large_binary(type_)
        or pa.types.is_binary_view(type_)
    )


def _is_list(type_: pa.DataType) -> bool:
    return (
        pa.types.is_list(type_)
        or pa.types.is_large_list(type_)
        or pa.types.is_fixed_size_list(type_)
        or pa.types.is_list_view(type_)
        or pa.types.is_large_list_view(type_)
    )


def _fixed_width_values(array: pa.Array, missing: np.ndarray) -> np.ndarray:
    """The value of every slot as a numpy array: zero under nulls, one NaN for all NaNs."""
    type_ = array.type
    width = type_.byte_width
    start, n = array.offset, len(array)
    buffer = array.buffers()[1]
    raw = np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, np.uint8)
    raw = raw[start * width : (start + n) * width]
    if pa.types.is_floating(type_):
        values: np.ndarray = raw.view(f"f{width}")
    elif width in (1, 2, 4, 8):
        values = raw.view(f"u{width}")  # little-endian once fed, whatever the host
    else:  # decimal128/256, month_day_nano, fixed_size_binary: one row of bytes per slot
        values = raw.reshape(n, width)
    if missing.any():
        values = values.copy()
        values[missing] = 0
    if values.dtype.kind == "f":
        values = _canonical_floats(values)
    return values


def _hash_text(h: xxhash.xxh3_128, array: pa.Array, missing: np.ndarray) -> None:
    """Text or binary: offsets and bytes, laid out as for object columns of strings."""
    text = not (
        pa.types.is_binary(array.type)
        or pa.types.is_large_binary(array.type)
        or pa.types.is_binary_view(array.type)
    )
    array = array.cast(pa.large_string() if text else pa.large_binary())
    offsets = np.frombuffer(array.buffers()[1], dtype="<i8")
    offsets = offsets[array.offset : array.offset + len(array) + 1]
    nulls = np.flatnonzero(missing)
    if len(nulls) and (offsets[nulls + 1] != offsets[nulls]).any():
        # A null slot may span bytes (legal Arrow); they are not content.
        array = pc.fill_null(array, pa.scalar("" if text else b"", array.type))
        offsets = np.frombuffer(array.buffers()[1], dtype="<i8")
        offsets = offsets[array.offset : array.offset + len(array) + 1]
    data = array.buffers()[2]
    _feed(h, b"strings" if text else b"binary")
    _feed_array(h, missing)
    _feed_array(h, offsets - offsets[0])
    _feed(h, memoryview(data)[offsets[0] : offsets[-1]] if data is not None else b"")


# --- Python objects -------------------------------------------------------------------


def _hash_objects(h: xxhash.xxh3_128, column: pd.Series, where: str) -> None:
    try:
        array = pa.array(column, from_pandas=True)
        if isinstance(array, pa.ChunkedArray):  # chunking is storage, not content
            array = array.combine_chunks()
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        array = None
    if array is not None and (
        pa.types.is_string(array.type) or pa.types.is_large_string(array.type)
    ):
        _hash_text(h, array, array.is_null().to_numpy(zero_copy_only=False))
        return
    _feed(h, b"objects")
    for row, value in enumerate(column.tolist()):
        if value is None or value is pd.NA or (isinstance(value, float) and value != value):
            _feed(h, b"\x00")
            continue
        try:
            _feed(h, _encode(value))
        except _NoValue as error:
            raise SerializationError(
                f"Cannot fingerprint {where} (dtype {column.dtype}): row {row} (counting "
                f"from 0) holds {error.what}, which has no stable value representation, and a "
                "fingerprint hashes values, never object identity or memory. Expected cells "
                "of None, bool, int, float, complex, str, bytes, Decimal, Fraction, UUID, enum "
                "members, dates, times, timedeltas, numpy and pandas scalars, numpy arrays, or "
                "tuples, lists, dicts, sets and frozensets of these. Convert the column to such "
                "values first (for example a string or a tuple of the object's fields)."
            ) from None


class _NoValue(Exception):
    """A cell that has no value representation; ``what`` describes it for the message."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


# Cells whose pickle is their value: pickle writes their type by name and their state
# as plain numbers and text, the same in every process.
_VALUE_TYPES = (
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
    datetime.date,  # and datetime.datetime, pandas.Timestamp
    datetime.time,
    datetime.timedelta,  # and pandas.Timedelta
    pd.Period,
    pd.Interval,
    type(pd.NaT),
    type(pd.NA),
    type(None),
    enum.Enum,
)


def _encode(value: object, depth: int = 0) -> bytes:
    """The bytes of one object cell: a function of its value only.

    A value type's bytes are its pickle (as before issue 11, so fingerprints of such
    cells did not move). Containers are encoded here, element by element, because their
    pickle is not a function of their value: pickle writes a back-reference when the
    same object (say, one string) occurs twice, and a set's elements in an order that
    depends on the process's hash seed.
    """
    if depth > 100:
        raise _NoValue("a container nested more than 100 deep (or containing itself)")
    if isinstance(value, float) and value != value:
        return pickle.dumps(float("nan"), protocol=4)  # NaN, whatever its bits
    if isinstance(value, _VALUE_TYPES):
        return pickle.dumps(value, protocol=4)
    if isinstance(value, np.generic | np.ndarray):
        return _encode_numpy(value, depth)
    if isinstance(value, tuple | list):
        return _container(value, [_encode(v, depth + 1) for v in value])
    if isinstance(value, dict):
        pairs = [_pair(_encode(k, depth + 1), _encode(v, depth + 1)) for k, v in value.items()]
        return _container(value, sorted(pairs))  # equal dicts, whatever their order
    if isinstance(value, set | frozenset):
        return _container(value, sorted(_encode(v, depth + 1) for v in value))
    raise _NoValue(_describe(value))


def _encode_numpy(value: np.generic | np.ndarray, depth: int) -> bytes:
    if value.dtype == object:
        if isinstance(value, np.generic):  # pragma: no cover - numpy has no object scalars
            raise _NoValue(_describe(value))
        parts = [_encode(v, depth + 1) for v in value.ravel().tolist()]
        return _container(value, [repr(value.shape).encode(), *parts])
    if value.dtype.type in (np.longdouble, np.clongdouble):
        # long double: its pickle holds uninitialised padding bytes.
        array = np.atleast_1d(value)
        floats = _canonical_floats(array) if array.dtype.kind == "f" else _without_padding(array)
        shape = repr(np.shape(value)).encode()
        return _container(value, [shape, np.ascontiguousarray(floats).tobytes()])
    return pickle.dumps(value, protocol=4)


def _container(value: object, parts: list[bytes]) -> bytes:
    kind = type(value)
    name = f"{kind.__module__}.{kind.__qualname__}".encode()
    out = [len(name).to_bytes(8, "little"), name]
    for part in parts:
        out += [len(part).to_bytes(8, "little"), part]
    return b"".join(out)


def _pair(key: bytes, value: bytes) -> bytes:
    return len(key).to_bytes(8, "little") + key + value


def _describe(value: object) -> str:
    kind = type(value)
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"a {kind.__module__}.{kind.__qualname__} ({text})"
