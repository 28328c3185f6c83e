"""``check_model``: generated raw frames against a model, in process and served."""

from __future__ import annotations

import json
import math
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import mlflow
import pandas as pd
import requests
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from mlpipe import _compat
from mlpipe.testing._strategies import columns_of, frames

__all__ = ["Problem", "Report", "check_model"]

_MAX_ROWS = 10
_TIMEOUT = 60.0
_SHOWN_CHARS = 500
# Predictions of one row alone and in a batch may differ in the last bits of a float.
_REL_TOL = 1e-9
_ABS_TOL = 1e-12

CRASH = "crash"


@dataclass(frozen=True, eq=False)
class Problem:
    """One thing :func:`check_model` found wrong, with the smallest frame that shows it.

    Attributes
    ----------
    check : str
        What went wrong: ``"crash"``, ``"valid rows rejected"``, ``"wrong number
        of predictions"``, ``"row rejected alone"``, ``"row predicted differently
        alone"``, ``"served rejects what the model accepts"``, ``"served accepts
        what the model rejects"`` or ``"served predictions differ"``.
    where : str
        ``"in process"`` or ``"served"``.
    detail : str
        The error, or the predictions that differ.
    frame : pandas.DataFrame
        The frame that shows it, shrunk by Hypothesis to as few rows and as
        simple values as still show it.
    valid : bool
        Whether the frame was made of valid rows (else hostile ones).
    origin : str
        For a crash, the exception's type and the line that raised it (in
        process) or the HTTP status and exception type (served); else ``""``.
    """

    check: str
    where: str
    detail: str
    frame: pd.DataFrame = field(repr=False)
    valid: bool
    origin: str = ""

    @property
    def crash(self) -> bool:
        """Whether the model crashed, rather than answered inconsistently."""
        return self.check == CRASH

    def __str__(self) -> str:
        rows = "valid rows" if self.valid else "hostile rows"
        with pd.option_context("display.max_columns", None, "display.width", 120):
            shown = self.frame.to_string()
        frame = "\n".join(f"      {line}" for line in shown.splitlines())
        return f"{self.check} ({self.where}, {rows}): {self.detail}\n{frame}"


@dataclass(frozen=True)
class Report:
    """What :func:`check_model` found.

    ``str(report)`` lists every problem with its frame; :meth:`raise_for_problems`
    fails a test with that text.

    Attributes
    ----------
    model_uri : str
    url : str or None
        The served model that was checked too, if any.
    examples : int
        Frames of each kind (valid, hostile) that were tried, before shrinking.
    seed : int or None
    problems : tuple of Problem
        Crashes first, then inconsistencies.
    """

    model_uri: str
    url: str | None
    examples: int
    seed: int | None
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise ``AssertionError`` with :meth:`__str__` if any problem was found."""
        if self.problems:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        where = f"{self.model_uri}" + (f", served at {self.url}" if self.url else "")
        tried = f"{self.examples} valid and {self.examples} hostile frames"
        seed = f", seed {self.seed}" if self.seed is not None else ""
        if not self.problems:
            return f"check_model({where}): no problem in {tried}{seed}."
        lines = [f"check_model({where}): {len(self.problems)} problem(s) in {tried}{seed}:"]
        lines += [f"  {i}. {problem}" for i, problem in enumerate(self.problems, start=1)]
        return "\n".join(lines)


def check_model(
    model_uri: str, *, url: str | None = None, examples: int = 100, seed: int | None = None
) -> Report:
    """Run generated raw frames through a model and report crashes and inconsistencies.

    Frames come from :func:`raw_frames`, valid and hostile ones, ``examples`` of
    each. Each runs through the model loaded in this process
    (``mlflow.pyfunc.load_model``) and, with ``url``, through the model served
    there (``POST {url}/invocations`` with a ``dataframe_split`` body). A problem
    found is shrunk by Hypothesis to the smallest frame that still shows it.

    A **clean rejection** is no problem for a hostile frame: an ``MlflowException``
    with a 4xx error code in process, an HTTP 4xx answer when served. A **crash**
    is any other exception in process, or, when served, an HTTP 5xx, no answer,
    or the 400 that MLflow's scoring server sends when the model raised something
    other than an ``MlflowException``. **Inconsistencies** are valid rows
    rejected, a number of predictions other than the number of rows, a row
    predicted differently (or rejected) alone than in its batch (one row of each
    frame, picked by Hypothesis), and a served answer other than the one in
    process (floats compared to 1e-9, relative).

    A frame shows at most one problem, the first found in this order: in
    process, then served. ``inf`` is sent to the server as ``Infinity``, as
    Python's ``json`` module writes it. Warnings the model emits are not problems.

    Parameters
    ----------
    model_uri : str
        The model: ``models:/m-...`` (``LineagePipeline.model_uri_``), or any URI
        ``mlflow.pyfunc.load_model`` takes.
    url : str, optional
        Where the same model is served (``http://127.0.0.1:5001``).
    examples : int, default=100
        How many valid and how many hostile frames to try.
    seed : int, optional
        Makes the frames, and so the report, the same on every call.

    Returns
    -------
    Report

    Raises
    ------
    TypeError, ValueError
        If the model's input cannot be described (see :func:`columns_of`), or
        ``examples`` is not positive.
    """
    if examples < 1:
        raise ValueError(f"examples must be at least 1, got {examples}.")
    model = mlflow.pyfunc.load_model(model_uri)
    columns = columns_of(model_uri)
    session = requests.Session() if url is not None else None
    endpoint = f"{url.rstrip('/')}/invocations" if url is not None else None
    found: list[Problem] = []
    try:
        for valid in (True, False):
            # A frame, and which of its rows to predict alone too.
            strategy = st.tuples(frames(columns, valid, 1, _MAX_ROWS), st.integers(0, _MAX_ROWS))

            def check(drawn: tuple[pd.DataFrame, int], valid: bool = valid) -> None:
                frame, row = drawn
                for kind, where, detail, origin in _problems(
                    model, session, endpoint, frame, row % len(frame), valid
                ):
                    problem = Problem(kind, where, detail, frame, valid, origin)
                    raise _error_type(kind, where, origin)(problem)

            for problem in _search(check, strategy, examples, seed):
                # A problem valid rows show needs no hostile frame to show it again.
                if not any(_alike(problem, known) for known in found):
                    found.append(problem)
    finally:
        if session is not None:
            session.close()
    found.sort(key=lambda p: (not p.crash, not p.valid, p.where, p.check))
    return Report(model_uri=model_uri, url=url, examples=examples, seed=seed, problems=tuple(found))


def _alike(a: Problem, b: Problem) -> bool:
    return (a.check, a.where, a.origin) == (b.check, b.where, b.origin)


class _Found(Exception):
    """A problem, raised so that Hypothesis shrinks the frame that shows it."""

    def __init__(self, problem: Problem):
        super().__init__(f"{problem.check} ({problem.where}): {problem.detail}")
        self.problem = problem


_ERROR_TYPES: dict[tuple[str, str, str], type[_Found]] = {}


def _error_type(check: str, where: str, origin: str) -> type[_Found]:
    # Hypothesis tells failures apart by exception type and place, and shrinks each
    # on its own: one type per kind of problem (and per place a crash comes from)
    # keeps one problem from hiding another.
    key = (check, where, origin)
    if key not in _ERROR_TYPES:
        _ERROR_TYPES[key] = type(f"_Found[{check}, {where}, {origin}]", (_Found,), {})
    return _ERROR_TYPES[key]


def _search(
    check: Callable[[Any], None],
    strategy: st.SearchStrategy[Any],
    examples: int,
    seed: int | None,
) -> list[Problem]:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        report_multiple_bugs=True,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )
    @given(strategy)
    def search(drawn: Any) -> None:
        check(drawn)

    if seed is not None:
        search = hypothesis_seed(seed)(search)
    try:
        search()
    except Exception as error:
        if not _only_found(error):
            raise
        return list(_found(error))
    return []


def _found(error: BaseException) -> Iterator[Problem]:
    if isinstance(error, _Found):
        yield error.problem
    elif isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _found(inner)


def _only_found(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return all(_only_found(inner) for inner in error.exceptions)
    return isinstance(error, _Found)


@dataclass(frozen=True)
class _Outcome:
    predictions: Any = None  # as JSON, one entry per row
    rejected: str | None = None
    crashed: str | None = None
    origin: str = ""  # where a crash comes from: tells two crashes apart


def _problems(
    model: Any,
    session: requests.Session | None,
    endpoint: str | None,
    frame: pd.DataFrame,
    row: int,
    valid: bool,
) -> Iterator[tuple[str, str, str, str]]:
    """``(check, where, detail, origin)`` of each problem ``frame`` shows, worst first."""
    local = _in_process(model, frame)
    if local.crashed is not None:
        yield CRASH, "in process", local.crashed, local.origin
    elif local.rejected is not None and valid:
        yield "valid rows rejected", "in process", local.rejected, ""
    elif local.predictions is not None:
        yield from _batch_problems(model, frame, row, local.predictions)
    if session is None or endpoint is None:
        return
    served = _served(session, endpoint, frame)
    if served.crashed is not None:
        yield CRASH, "served", served.crashed, served.origin
    elif served.rejected is not None:
        if valid:
            yield "valid rows rejected", "served", served.rejected, ""
        elif local.predictions is not None:
            yield "served rejects what the model accepts", "served", served.rejected, ""
    elif local.rejected is not None:
        yield "served accepts what the model rejects", "served", local.rejected, ""
    elif local.predictions is not None and not _same(served.predictions, local.predictions):
        yield (
            "served predictions differ",
            "served",
            f"served {_short(served.predictions)}, in process {_short(local.predictions)}",
            "",
        )


def _batch_problems(
    model: Any, frame: pd.DataFrame, row: int, predictions: Any
) -> Iterator[tuple[str, str, str, str]]:
    """Problems of a batch the model answered: its length, and row ``row`` alone."""
    rows = len(frame)
    if not isinstance(predictions, list) or len(predictions) != rows:
        got = len(predictions) if isinstance(predictions, list) else type(predictions).__name__
        yield "wrong number of predictions", "in process", f"{rows} row(s), predictions: {got}", ""
        return
    alone = _in_process(model, frame.iloc[[row]])
    where = f"row {row} (label {frame.index[row]!r}) alone"
    if alone.crashed is not None:
        yield CRASH, "in process", f"{where}, not in its batch: {alone.crashed}", alone.origin
    elif alone.rejected is not None:
        yield "row rejected alone", "in process", f"{where}: {alone.rejected}", ""
    elif not (isinstance(alone.predictions, list) and len(alone.predictions) == 1):
        detail = f"{where}: {_short(alone.predictions)}"
        yield "wrong number of predictions", "in process", detail, ""
    elif not _same(alone.predictions[0], predictions[row]):
        detail = (
            f"{where}: {_short(alone.predictions[0])}, "
            f"in a batch of {rows}: {_short(predictions[row])}"
        )
        yield "row predicted differently alone", "in process", detail, ""


def _in_process(model: Any, frame: pd.DataFrame) -> _Outcome:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = model.predict(frame)
    except MlflowException as error:
        if 400 <= error.get_http_status_code() < 500:
            return _Outcome(rejected=_message(error))
        return _Outcome(crashed=_message(error), origin=_origin(error))
    except Exception as error:
        # Not swallowed: it is the finding, reported with the frame that caused it.
        return _Outcome(crashed=_message(error), origin=_origin(error))
    return _Outcome(predictions=_as_json(result))


def _origin(error: BaseException) -> str:
    """The exception's type and the line that raised it."""
    place = ""
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        place = f" at {frames[-1].filename}:{frames[-1].lineno}"
    return f"{type(error).__qualname__}{place}"


def _as_json(result: Any) -> Any:
    """Predictions as the scoring server writes them, so both compare alike."""
    return _compat.predictions_json(result)


def _served(session: requests.Session, endpoint: str, frame: pd.DataFrame) -> _Outcome:
    try:
        response = session.post(
            endpoint,
            data=_split_body(frame),
            headers={"Content-Type": "application/json"},
            timeout=_TIMEOUT,
        )
    except requests.RequestException as error:
        return _Outcome(crashed=f"no answer from {endpoint}: {_message(error)}")
    status = response.status_code
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if status == 200 and isinstance(payload, dict) and "predictions" in payload:
        return _Outcome(predictions=payload["predictions"])
    message = payload.get("message", "") if isinstance(payload, dict) else response.text
    # MLflow's scoring server answers HTTP 400 to *any* exception the model raises; only
    # its message tells a model that failed from one that rejected its input.
    if 400 <= status < 500 and not _compat.is_unexpected_model_error(str(message)):
        return _Outcome(rejected=f"HTTP {status}: {_shorten(str(message))}")
    origin = f"HTTP {status}"
    if isinstance(payload, dict) and payload.get("stack_trace"):
        # The model's own exception is the last line of the trace MLflow sends back.
        lines = [line for line in str(payload["stack_trace"]).splitlines() if line.strip()]
        message = lines[-1] if lines else message
        origin += f" {str(message).split(':')[0]}"
    return _Outcome(crashed=f"HTTP {status}: {_shorten(str(message))}", origin=origin)


def _split_body(frame: pd.DataFrame) -> str:
    """The ``dataframe_split`` request a client would send.

    A missing value is ``null``; ``inf`` is ``Infinity``, as Python's ``json``
    writes it (MLflow's scoring server reads it, though strict JSON has no infinity).
    """
    data = []
    for row in frame.itertuples(index=False, name=None):
        cells = []
        for value in row:
            if pd.api.types.is_scalar(value) and pd.isna(value):
                value = None
            elif hasattr(value, "item"):
                value = value.item()
            cells.append(value)
        data.append(cells)
    columns = [str(c) for c in frame.columns]
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}})


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=_ABS_TOL)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _message(error: BaseException) -> str:
    text = error.message if isinstance(error, MlflowException) else str(error)
    return _shorten(f"{type(error).__name__}: {text}")


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _short(value: Any) -> str:
    return _shorten(json.dumps(value, allow_nan=True, default=str))
