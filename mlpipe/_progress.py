"""Progress bars for long work, shown where a person watches and silent elsewhere.

A bar is drawn (with ``tqdm.auto``: a widget in a notebook, a line on a
terminal) when the environment variable ``MLPIPE_PROGRESS`` says ``1``, or, when
it is unset, when standard error is a terminal or the code runs in a Jupyter
kernel. ``MLPIPE_PROGRESS=0`` (which ``mlpipe -q`` sets) turns every bar off.
Output that goes to a file or a pipe (a CI log, ``mlpipe ... 2> log``, a test
that captures it) gets no bar.

A scikit-learn search (``GridSearchCV``, ...) counts its fits on a bar through
scikit-learn's public callback API (:func:`search_progress`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener
from typing import Any

from sklearn.callback import CallbackSupportMixin

__all__ = ["PROGRESS_ENV", "bar", "search_progress", "shown"]

PROGRESS_ENV = "MLPIPE_PROGRESS"
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def shown() -> bool:
    """Whether progress bars are drawn now (read each time: the CLI sets the variable)."""
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    return _on_terminal() or "ipykernel" in sys.modules


def _on_terminal() -> bool:
    stream = sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def bar(desc: str, *, total: int | None = None, unit: str = "it", scale: bool = False) -> Any:
    """A ``tqdm`` bar for ``total`` steps (unknown: a count), or a silent stand-in.

    ``scale`` shows large counts as ``1.2M``.

    Use as a context manager and call ``update(n)``. The bar is removed when
    done (``leave=False``): what a command prints after it reads as without it.
    """
    if not shown():
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(
        desc=desc,
        total=total,
        unit=unit,
        unit_scale=scale,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


class _Silent:
    """What :func:`bar` returns when no bar is shown: tqdm is not even imported."""

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None


# The task names scikit-learn (>= 1.9) gives, in a search's callback context, to the
# fit of one candidate on one split and to the refit with the best parameters
# (sklearn/model_selection/_search.py): one fit each.
SEARCH_SPLIT_TASK = "candidate-split-evaluation"
SEARCH_REFIT_TASK = "refit-with-best-params"
_FIT_TASKS = (SEARCH_SPLIT_TASK, SEARCH_REFIT_TASK)
# The task of the context mlpipe hands a search, which the search's own root task
# then merges with (its ``source_task_name``).
_WATCH_TASK = "mlpipe-search-progress"


@contextmanager
def search_progress(estimator: Any) -> Iterator[None]:
    """Count the fits of ``estimator``, a search fitted inside this block, on a bar.

    The bar counts each candidate on each split, and the refit, as it ends: in
    this process, or in a worker process of ``n_jobs`` (which reports it over a
    local socket). Nothing is drawn for an estimator that announces no such fits
    (anything but a search), nor when bars are off; then nothing is changed
    either. The estimator leaves the block as it came, but fitted: scikit-learn
    adds the callback for the fit and takes it off again.
    """
    if not shown() or not hasattr(estimator, "set_callbacks"):
        yield
        return
    counter = _FitCounter()
    # What a meta-estimator does for its sub-estimator: a context of its own, whose
    # auto-propagated callbacks scikit-learn hands to the search for its fit only.
    holder = _Holder().set_callbacks(counter)
    context = holder._init_callback_context(max_subtasks=1).subcontext(task_name=_WATCH_TASK)
    with ExitStack() as stack:
        stack.callback(counter.close)
        try:
            stack.enter_context(context.propagate_callback_context(estimator))
        except TypeError:
            # The search carries an auto-propagated callback of its own (such as
            # scikit-learn's ProgressBar), which scikit-learn allows only on the
            # outermost estimator: its own display, then, and no bar of mlpipe's.
            pass
        yield


class _Holder(CallbackSupportMixin):
    """The meta-estimator mlpipe's counter is set on, to be propagated to a search."""


class _FitCounter:
    """A scikit-learn callback (:mod:`sklearn.callback`) that counts a search's fits.

    Auto-propagated from :class:`_Holder` to the search, and no further
    (``max_propagation_depth=1``): the candidates keep their own callbacks. The
    bar opens when the search announces a batch of candidate-by-split fits (a
    context whose subtasks the search numbers itself, ``max_subtasks`` of them:
    all of GridSearchCV's or RandomizedSearchCV's, one iteration of a halving
    search), so an estimator that is no search never draws one.

    A copy sent to a worker process (in the search's callback context) reports
    each fit to the listener this process opened with the bar, and waits until it
    is counted: the fit's result cannot reach the search before its count.
    """

    max_propagation_depth = 1

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._bar: Any = None
        self._stack = ExitStack()
        self._refits = 0
        self._address: Any = None
        self._authkey = os.urandom(32)
        self._closing = False

    def __getstate__(self) -> dict[str, Any]:
        # What a worker needs to report a fit; the bar stays in this process.
        return {"_pid": self._pid, "_address": self._address, "_authkey": self._authkey}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock(), _bar=None, _refits=0)

    def setup(self, estimator: Any, context: Any) -> None:
        return None

    def teardown(self, estimator: Any, context: Any) -> None:
        return None

    def on_fit_task_begin(self, estimator: Any, context: Any) -> None:
        if context.source_task_name == _WATCH_TASK:  # the search's own root task
            self._refits = 1 if getattr(estimator, "refit", False) else 0
        elif context.max_subtasks and not context.sequential_subtasks:
            self._grow(estimator, context.max_subtasks)

    def on_fit_task_end(self, estimator: Any, context: Any) -> None:
        if context.task_name not in _FIT_TASKS:
            return
        if os.getpid() == self._pid:
            self._count(1)
        elif self._address is not None:
            _report(self._address, self._authkey)

    def _grow(self, search: Any, fits: int) -> None:
        """A batch of ``fits`` more (always in this process: the search announces it)."""
        with self._lock:
            if self._bar is None:
                inner = getattr(search, "estimator", None)
                name = type(search).__name__
                if inner is not None:
                    name = f"{name}({type(inner).__name__})"
                self._bar = self._stack.enter_context(
                    bar(name, total=fits + self._refits, unit=" fits")
                )
                if not isinstance(self._bar, _Silent):  # bars turned off since the search began
                    listener = Listener(authkey=self._authkey, backlog=128)
                    self._address = listener.address
                    serving = threading.Thread(target=self._serve, args=(listener,), daemon=True)
                    serving.start()
                    self._stack.callback(self._stop, listener, serving)
            elif not isinstance(self._bar, _Silent):
                self._bar.total += fits
                self._bar.refresh()

    def _count(self, fits: int) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(fits)

    def _serve(self, listener: Listener) -> None:
        """Count what the workers report, until :meth:`_stop` wakes it a last time.

        However it ends, it closes the listener: a worker's report is then refused,
        never left waiting for an answer that does not come.
        """
        try:
            while True:
                try:
                    connection = listener.accept()
                except (OSError, EOFError, AuthenticationError):
                    if self._closing:
                        return
                    continue  # one connection failed: a worker that died, a stranger
                with connection:
                    try:
                        fits = connection.recv()
                        if fits is None:  # from _stop
                            return
                        self._count(fits)
                        connection.send(None)
                    except (OSError, EOFError):  # a worker that died mid-report
                        continue
        finally:
            listener.close()

    def _stop(self, listener: Listener, serving: threading.Thread) -> None:
        self._closing = True
        if serving.is_alive():
            try:
                with Client(listener.address, authkey=self._authkey) as connection:
                    connection.send(None)
            except (OSError, EOFError, AuthenticationError):
                pass  # it stopped meanwhile, closing the listener
            serving.join(timeout=5)
        listener.close()

    def close(self) -> None:
        """Stop listening and take the bar away (the search has returned)."""
        self._stack.close()


def _report(address: Any, authkey: bytes) -> None:
    """Report one fit to the process that draws the bar; wait until it is counted."""
    try:
        with Client(address, authkey=authkey) as connection:
            connection.send(1)
            connection.recv()
    except (OSError, EOFError, AuthenticationError):
        # A worker that cannot reach it (on another machine, with a remote joblib
        # backend; or after the search ended): the count, not the fit, is lost.
        pass
