"""Evaluation of the final stage: cross-validation of the whole chain, out-of-fold
predictions and their plots, or a search's own results.

Each function takes what it needs and returns what it measured; the chain logger
decides where it goes. Fits made here are folds: :data:`IN_EVALUATION` says so to
any ``LineagePipeline`` nested in the chain, which then does not log them.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import hashlib
import io
import json
import logging
import pickle
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from joblib import cpu_count, effective_n_jobs
from joblib.parallel import get_active_backend
from mlflow.exceptions import MlflowException
from sklearn.base import clone, is_classifier
from sklearn.exceptions import FitFailedWarning
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils import indexable
from sklearn.utils.parallel import Parallel, delayed

from mlpipe import schema
from mlpipe._cache import digest, output_config, read_checked
from mlpipe._progress import bar, search_progress
from mlpipe.exceptions import SerializationError
from mlpipe.model._serialize import travelling_by_value
from mlpipe.tracking import _store as store

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "IN_EVALUATION",
    "Evaluation",
    "FoldSettings",
    "StageFolds",
    "evaluate",
    "fit_step",
    "search_results",
]

logger = logging.getLogger("mlpipe")

_CLASSIFIER_SCORING = ("accuracy", "balanced_accuracy", "f1_macro")
_REGRESSOR_SCORING = ("r2", "neg_root_mean_squared_error", "neg_mean_absolute_error")
_SKIPPED = (None, "passthrough")
# The out-of-fold predictions table is for reading, not for analysis at scale.
_MAX_PREDICTION_ROWS = 100_000
# Points drawn in the residual plot; more only blur into one cloud.
_MAX_RESIDUAL_POINTS = 10_000

IN_EVALUATION: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "mlpipe_in_evaluation", default=False
)
"""True while mlpipe fits the folds of its own evaluation (in this thread or task)."""


@dataclass(frozen=True)
class Evaluation:
    """What an evaluation measured: metrics and tags for the final stage run, and
    what logs its plots once they are drawn (they may still be drawing: call it before
    the run ends)."""

    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    log_plots: Callable[[], None] | None = None


def search_results(run: store.StageRun, search: Any) -> Evaluation:
    """Log a search's ``cv_results_`` table and return its best parameters' evaluation.

    The best parameters are logged as ``best.<name>`` parameters.
    """
    run.log(params={f"{schema.BEST_PARAM_PREFIX}{k}": v for k, v in search.best_params_.items()})
    metrics = {}
    if hasattr(search, "best_score_"):
        metrics[schema.BEST_SCORE] = float(search.best_score_)
    table = pd.DataFrame(
        {
            k: v if np.asarray(v).dtype.kind in "biuf" else [str(x) for x in v]
            for k, v in search.cv_results_.items()
        }
    )
    run.client.log_table(run.run_id, data=table, artifact_file=schema.CV_RESULTS)
    return Evaluation(metrics, {schema.EVALUATION: schema.EVALUATED_BY_SEARCH})


@dataclass(frozen=True)
class StageFolds:
    """Where a non-final stage's fold outputs are kept: the stage's cache key and the
    run that fitted it (which holds them)."""

    key: str
    run_id: str


@dataclass(frozen=True)
class FoldSettings:
    """How folds are run and kept.

    ``stages`` has one entry per non-final active stage, in order: where its fold
    outputs are kept, or None for a stage whose folds are never kept (no cache key,
    or ``serializer="skops"``, which never unpickles). A fold output is kept when
    fitting and transforming it took at least ``keep_seconds`` and its pickle is at
    most ``keep_bytes``. ``chain_seconds`` is what fitting the chain once took, to
    judge whether running folds in parallel pays.
    """

    stages: list[StageFolds | None] = dataclasses.field(default_factory=list)
    trusted_users: tuple[str, ...] | None = None
    keep_seconds: float = 0.1
    keep_bytes: int = 256 * 2**20
    n_jobs: int | None = None
    chain_seconds: float = 0.0


def evaluate(
    run: store.StageRun,
    steps: list[tuple[str, Any]],
    X: Any,
    y: Any,
    *,
    routed: dict[str, dict[str, Any]],
    cv: Any,
    scoring: Any,
    folds: FoldSettings | None = None,
) -> Evaluation:
    """Cross-validate the unfitted chain ``steps`` on ``X, y``; log plots and predictions.

    Every fold refits the whole chain, so no score comes from rows a stage saw in
    training; but a non-final stage's fold already fitted on the same rows under
    the same cache key (by any earlier fit, see :class:`FoldSettings`) is read back
    instead of fitted again. ``routed`` holds each step's fit parameters; sample-
    aligned ones are split with the rows. Returns the ``cv_<scorer>_mean``/``_std``
    metrics, the evaluation tags and what logs the plots (started here, drawn in
    the workers meanwhile when folds run in parallel); nothing else is logged to
    ``run`` but the predictions table, and the kept fold outputs to the upstream
    stages' runs.
    """
    folds = folds or FoldSettings()
    final = steps[-1][1]
    splitter = check_cv(cv, y, classifier=is_classifier(final))
    n_splits = splitter.get_n_splits(X, y)
    n_rows = X.shape[0] if hasattr(X, "shape") else len(np.asarray(X))
    if n_rows < 2 * n_splits:
        return Evaluation(
            tags={
                schema.EVALUATION: schema.EVALUATED_BY_NOTHING,
                schema.EVALUATION_SKIPPED: f"{n_rows} rows are too few for {n_splits} folds",
            }
        )
    scoring = scoring or (_CLASSIFIER_SCORING if is_classifier(final) else _REGRESSOR_SCORING)
    X, y = indexable(X, y)
    splits = [(np.asarray(train), np.asarray(test)) for train, test in splitter.split(X, y)]
    n_splits = len(splits)
    active = [(n, clone(e)) for n, e in steps if e not in _SKIPPED]
    # A user's scorer may expect the whole chain and raw rows: then every fold fits it
    # all. scikit-learn's named scorers only call the final estimator's methods.
    named = isinstance(scoring, str) or (
        isinstance(scoring, list | tuple | set | dict)
        and all(
            isinstance(v, str) for v in (scoring.values() if isinstance(scoring, dict) else scoring)
        )
    )
    kept = _FoldStore(run.client, folds) if named and folds.stages else None
    classes = _classes(final, y)
    n_jobs = _n_jobs(folds, n_splits)
    results: list[_Fold] = []
    with (
        # The workers may not import what this process can: the stages go by value.
        travelling_by_value(active) if n_jobs > 1 else nullcontext(),
        Parallel(n_jobs=n_jobs) as parallel,
        bar(f"Cross-validating {steps[-1][0]}", total=n_splits, unit=" folds") as progress,
    ):
        # Folds go out n_jobs at a time, so at most that many folds' data are in memory.
        for wave in range(0, n_splits, n_jobs):
            jobs, starts = [], {}
            for k in range(wave, min(wave + n_jobs, n_splits)):
                train, test = splits[k]
                keys: list[str | None] = [None] * (len(active) - 1)
                if kept is not None:
                    keys = kept.keys(train, test)
                start, X_train, X_test = kept.deepest(keys) if kept else (0, None, None)
                if start == 0:
                    X_train, X_test = _take(X, train), _take(X, test)
                starts[k] = start
                jobs.append(
                    delayed(_fit_fold)(
                        k,
                        active[start:],
                        X_train,
                        X_test,
                        _take(y, train),
                        _take(y, test),
                        {n: _fold_params(routed.get(n, {}), n_rows, train) for n, _ in active},
                        scoring,
                        classes,
                        whole_chain=not named,
                        keep=[key is not None for key in keys[start:]],
                        keep_seconds=folds.keep_seconds,
                        keep_bytes=folds.keep_bytes,
                    )
                )
                del X_train, X_test
            for fold in parallel(jobs):
                if kept is not None:
                    train, test = splits[fold.index]
                    keys = kept.keys(train, test)
                    for offset, data in fold.outputs_to_keep:
                        position = starts[fold.index] + offset
                        if data is not None and keys[position] is not None:
                            kept.write(position, keys[position], data)
                fold.outputs_to_keep = []
                results.append(fold)
                progress.update(1)
    scores = _check_failures(results, n_splits)
    failed = [fold.index for fold in results if fold.error is not None]
    test_rows = [test for _, test in splits]
    predictions = _out_of_fold(results, test_rows, y, classes=classes)
    tags = {
        schema.EVALUATION: schema.EVALUATED_BY_CROSS_VALIDATION,
        schema.EVALUATION_FOLDS: str(n_splits),
        schema.EVALUATION_SPLITTER: type(splitter).__name__,
    }
    if failed:
        tags[schema.EVALUATION_FAILED_FOLDS] = ",".join(map(str, failed))
    finish = None
    if isinstance(predictions, str):
        tags[schema.EVALUATION_NO_PLOTS] = predictions
    else:
        finish = _start_plots(run, predictions, n_jobs)
        rows_kept = _log_predictions(run, predictions)
        if rows_kept < len(predictions.rows):
            tags[schema.EVALUATION_ROWS_KEPT] = str(rows_kept)
    metrics = {}
    for scorer, values in scores.items():
        metrics[f"{schema.CV_PREFIX}{scorer}_mean"] = float(np.mean(values))
        metrics[f"{schema.CV_PREFIX}{scorer}_std"] = float(np.std(values))
    return Evaluation(metrics, tags, finish)


# Folds run in parallel only when fitting them one after another would take about
# this long (the chain's own fit times the folds): below it, starting the worker
# processes (a second or two, once per session) and sending them the data costs more.
_PARALLEL_SECONDS = 1.0


def _n_jobs(folds: FoldSettings, n_splits: int) -> int:
    """How many folds run at once: ``n_jobs`` as scikit-learn reads it, or, for None
    outside ``joblib.parallel_config(n_jobs=...)``, every core when it pays."""
    if folds.n_jobs is not None:
        return max(1, min(n_splits, effective_n_jobs(folds.n_jobs)))
    if get_active_backend()[1] is not None:  # the user's joblib.parallel_config
        return max(1, min(n_splits, effective_n_jobs(None)))
    if folds.chain_seconds * n_splits < _PARALLEL_SECONDS:
        return 1
    return max(1, min(n_splits, cpu_count(only_physical_cores=False)))


def _fold_params(params: dict[str, Any], n_rows: int, rows: np.ndarray) -> dict[str, Any]:
    """A step's fit parameters for one fold: those with one value per row, split."""
    return {
        k: _take(v, rows)
        if not isinstance(v, str | bytes | dict) and hasattr(v, "__len__") and len(v) == n_rows
        else v
        for k, v in params.items()
    }


@dataclass
class _Fold:
    """What one fold gave back from the process that fitted it."""

    index: int
    scores: dict[str, float]
    error: str | None = None  # the traceback of a failed fit
    scoring_error: str | None = None
    prediction: np.ndarray | None = None
    class_scores: np.ndarray | None = None  # one column per class (see _class_scores)
    kind: str | None = None  # "proba" or "decision"
    # For each non-final stage fitted here, by position from the first one fitted:
    # its pickled (train output, test output) when worth keeping, else None.
    outputs_to_keep: list[tuple[int, bytes | None]] = dataclasses.field(default_factory=list)


def _as_fold(fit: Callable[..., _Fold]) -> Callable[..., _Fold]:
    """``fit`` with :data:`IN_EVALUATION` set while it runs, in whichever process."""

    @functools.wraps(fit)
    def marked(*args: Any, **kwargs: Any) -> _Fold:
        token = IN_EVALUATION.set(True)
        try:
            return fit(*args, **kwargs)
        finally:
            IN_EVALUATION.reset(token)

    return marked


@_as_fold
def _fit_fold(
    index: int,
    stages: list[tuple[str, Any]],
    X_train: Any,
    X_test: Any,
    y_train: Any,
    y_test: Any,
    params: dict[str, dict[str, Any]],
    scoring: Any,
    classes: np.ndarray | None,
    *,
    whole_chain: bool,
    keep: list[bool],
    keep_seconds: float,
    keep_bytes: int,
) -> _Fold:
    """Fit ``stages`` (unfitted; the last is the final estimator) on one fold.

    ``X_train`` and ``X_test`` are the fold's rows as the first of ``stages`` takes
    them. Runs in a worker process when folds run in parallel, so it returns all
    it found instead of logging, and says itself (``_as_fold``) that it fits a fold.
    """
    (final_name, final), upstream = stages[-1], stages[:-1]
    scorer = check_scoring(final, scoring=scoring)
    names = list(scoring) if isinstance(scoring, list | tuple | set | dict) else ["score"]
    fold = _Fold(index, scores=dict.fromkeys(names, np.nan))
    raw_test = X_test
    try:
        for position, (name, stage) in enumerate(upstream):
            start = time.perf_counter()
            X_train = fit_step(stage, X_train, y_train, params.get(name, {}), None)
            X_test = stage.transform(X_test)
            seconds = time.perf_counter() - start
            data = None
            if keep[position] and seconds >= keep_seconds:
                data = pickle.dumps((X_train, X_test), protocol=pickle.HIGHEST_PROTOCOL)
                data = data if len(data) <= keep_bytes else None
            fold.outputs_to_keep.append((position, data))
        final.fit(X_train, y_train, **params.get(final_name, {}))
    except Exception:
        fold.error = traceback.format_exc()
        return fold
    try:
        if whole_chain:
            scored = scorer(Pipeline([*upstream, (final_name, final)]), raw_test, y_test)
        else:
            scored = scorer(final, X_test, y_test)
        fold.scores = dict(scored) if isinstance(scored, dict) else {"score": scored}
        fold.scores = {k: float(v) for k, v in fold.scores.items()}
    except Exception:
        fold.scoring_error = traceback.format_exc()
    fold.prediction = np.asarray(final.predict(X_test)).reshape(_num_rows(X_test), -1)[:, 0]
    if classes is not None and len(classes) > 1:
        for method, kind in (("predict_proba", "proba"), ("decision_function", "decision")):
            if hasattr(final, method):
                fold.class_scores = _class_scores(final, method, X_test, classes)
                fold.kind = kind if fold.class_scores is not None else None
                break
    return fold


def fit_step(est: Any, X: Any, y: Any, params: dict[str, Any], final: str | None) -> Any:
    """Fit one step; return its output on ``X`` (None for a final ``fit``).

    A search counts its fits on a progress bar, unless it fits inside a fold
    (whose own bar counts the folds)."""
    with nullcontext() if IN_EVALUATION.get() else search_progress(est):
        if final == "fit":
            est.fit(X, y, **params)
            return None
        if final == "fit_predict":
            return est.fit_predict(X, y, **params)
        if hasattr(est, "fit_transform"):
            return est.fit_transform(X, y, **params)
        return est.fit(X, y, **params).transform(X)


def _num_rows(X: Any) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _check_failures(results: list[_Fold], n_splits: int) -> dict[str, list[float]]:
    """Every scorer's fold scores; warns of failed folds as cross_validate does, and
    raises when every fold failed."""
    failed = [fold for fold in results if fold.error is not None]
    if failed:
        summary = "\n".join(
            f"{count} fits failed with the following error:\n{error}"
            for error, count in Counter(fold.error for fold in failed).items()
        )
        if len(failed) == n_splits:
            raise ValueError(
                f"\nAll the {n_splits} fits failed.\nIt is very likely that your model is "
                "misconfigured.\nYou can try to debug the error by fitting the pipeline "
                f"with cv=None.\n\nBelow are more details about the failures:\n{summary}"
            )
        warnings.warn(
            f"\n{len(failed)} fits failed out of a total of {n_splits}.\nThe score on these "
            "train-test partitions for these parameters will be set to nan.\nIf these "
            "failures are not expected, you can try to debug them by fitting the pipeline "
            f"with cv=None.\n\nBelow are more details about the failures:\n{summary}",
            FitFailedWarning,
            stacklevel=2,
        )
    for fold in results:
        if fold.scoring_error is not None:
            warnings.warn(
                "Scoring failed. The score on this train-test partition for these parameters "
                f"will be set to nan. Details: \n{fold.scoring_error}",
                UserWarning,
                stacklevel=2,
            )
    # A failed fold has NaN under the names scoring was given; a scorer that returns a
    # dict names its own.
    scored = [fold for fold in results if fold.error is None and fold.scoring_error is None]
    names = (scored or results)[0].scores.keys()
    return {name: [fold.scores.get(name, np.nan) for fold in results] for name in names}


class _FoldStore:
    """The fold outputs kept on the runs that fitted the non-final stages."""

    def __init__(self, client: Any, folds: FoldSettings):
        self.client = client
        self.folds = folds
        self.tags: dict[int, dict[str, str]] = {}
        self.config = output_config()

    def keys(self, train: np.ndarray, test: np.ndarray) -> list[str | None]:
        """Each stage's fold key for these rows (None for a stage whose folds are not kept)."""
        rows = [
            hashlib.sha256(np.asarray(r, dtype=np.int64).tobytes()).hexdigest()
            for r in (train, test)
        ]
        return [
            None
            if stage is None
            else hashlib.sha256(json.dumps([stage.key, *rows, self.config]).encode()).hexdigest()
            for stage in self.folds.stages
        ]

    def _tags(self, position: int) -> dict[str, str]:
        if position not in self.tags:
            stage = self.folds.stages[position]
            assert stage is not None
            try:
                self.tags[position] = self.client.get_run(stage.run_id).data.tags
            except MlflowException:
                self.tags[position] = {}
        return self.tags[position]

    def deepest(self, keys: list[str | None]) -> tuple[int, Any, Any]:
        """(first stage to fit, its training input, its test input) for the fold of
        ``keys``: after the deepest stage whose output on it is kept and sound, else
        (0, None, None)."""
        for position in range(len(keys) - 1, -1, -1):
            key = keys[position]
            if key is None:
                continue
            found = self._read(position, key)
            if found is not None:
                return position + 1, found[0], found[1]
        return 0, None, None

    def _read(self, position: int, key: str) -> tuple[Any, Any] | None:
        stage = self.folds.stages[position]
        assert stage is not None
        entry = self._tags(position).get(f"{schema.FOLD_PREFIX}{key}")
        if entry is None:
            return None
        try:
            record = json.loads(entry)
            expected, user = record["digest"], record["user"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(expected, str):  # no digest, no read: the fold is fitted
            return None
        trusted = self.folds.trusted_users
        if trusted is not None and user not in trusted:
            logger.info(
                "Fold output %s of run %s is not used: written by %r, not one of trusted_users=%s.",
                key,
                stage.run_id,
                user,
                list(trusted),
            )
            return None
        try:
            data = read_checked(
                stage.run_id,
                f"{schema.FOLD_DIR}/{key}.pkl",
                expected,
                f"{schema.FOLD_PREFIX}{key} tag",
            )
            train_out, test_out = pickle.loads(data)
        except (MlflowException, OSError, pickle.UnpicklingError, SerializationError) as error:
            logger.warning(
                "Cannot read fold output %s of run %s, fitting the fold: %s",
                key,
                stage.run_id,
                error,
            )
            return None
        return train_out, test_out

    def write(self, position: int, key: str, data: bytes) -> None:
        """Keep a fold output: the file first, then the tag that makes it visible."""
        stage = self.folds.stages[position]
        assert stage is not None
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp, f"{key}.pkl")
                path.write_bytes(data)
                self.client.log_artifact(stage.run_id, str(path), schema.FOLD_DIR)
            record = json.dumps({"digest": digest(data), "user": store.current_user()})
            self.client.set_tag(stage.run_id, f"{schema.FOLD_PREFIX}{key}", record)
        except (MlflowException, OSError) as error:
            # Keeping it only saves time later: the evaluation goes on without.
            logger.info("Fold output %s not kept on run %s: %s", key, stage.run_id, error)


@dataclass
class _OutOfFold:
    """Each test row's prediction by the fold model that did not train on it.

    Rows are in training order (and repeat when test folds overlap). ``scores``
    holds one column per entry of ``score_labels``: probabilities (``kind``
    ``"proba"``) or decision values (``"decision"``; one column, the positive
    class's, for a binary classifier). ``classes`` is None for a regressor.
    """

    rows: np.ndarray
    folds: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    classes: np.ndarray | None = None
    scores: np.ndarray | None = None
    score_labels: np.ndarray | None = None
    kind: str | None = None


def _classes(est: Any, y: Any) -> np.ndarray | None:
    if not is_classifier(est):
        return None
    classes = getattr(est, "classes_", None)
    return np.asarray(classes) if classes is not None else np.unique(np.asarray(y))


def _take(data: Any, rows: np.ndarray) -> Any:
    """The given rows (positions) of a frame, array, sparse matrix or list."""
    if data is None:
        return None
    if hasattr(data, "iloc"):
        return data.iloc[rows]
    if hasattr(data, "shape"):
        return data[rows]
    return [data[i] for i in rows]


def _out_of_fold(
    results: list[_Fold], test_rows: list[np.ndarray], y: Any, *, classes: np.ndarray | None
) -> _OutOfFold | str:
    """Each test row's prediction by its fold's model, from the folds that did not fail.

    Returns why there are no predictions instead, when there are none.
    """
    target = np.asarray(y)
    if target.ndim == 2 and target.shape[1] == 1:
        target = target.ravel()
    if target.ndim != 1:
        return "the target is not one column"
    predicted = [fold for fold in results if fold.error is None and fold.prediction is not None]
    if not predicted:
        return "no fold has a score"
    all_rows = np.concatenate([test_rows[fold.index] for fold in predicted])
    order = np.argsort(all_rows, kind="stable")
    folds = np.concatenate([np.full(len(test_rows[f.index]), f.index) for f in predicted])
    result = _OutOfFold(
        rows=all_rows[order],
        folds=folds[order],
        target=target[all_rows[order]],
        prediction=np.concatenate([fold.prediction for fold in predicted])[order],
        classes=classes,
    )
    kinds = {fold.kind for fold in predicted}
    if classes is not None and len(kinds) == 1 and None not in kinds:
        (kind,) = kinds
        result.scores = np.concatenate([fold.class_scores for fold in predicted])[order]
        binary_decision = kind == "decision" and len(classes) == 2
        result.score_labels = classes[1:] if binary_decision else classes
        result.kind = kind
    return result


def _class_scores(model: Any, method: str, X: Any, classes: np.ndarray) -> np.ndarray | None:
    """A fold model's scores with one column per class of the whole training data.

    A fold that never saw a class gives it probability 0; decision values cannot be
    filled in that way, so then the evaluation has no scores (None).
    """
    values = np.asarray(getattr(model, method)(X), dtype=float)
    values = values.reshape(len(values), -1)
    fold_classes = np.asarray(model.classes_)
    if np.array_equal(fold_classes, classes):
        return values
    if method != "predict_proba":
        return None
    position = {label: i for i, label in enumerate(classes.tolist())}
    aligned = np.zeros((len(values), len(classes)))
    aligned[:, [position[label] for label in fold_classes.tolist()]] = values
    return aligned


# The margins of the curves' plots, as fractions of the figure: their tick labels are
# rates from 0 to 1, always as wide.
_CURVE_MARGINS = {"left": 0.1, "right": 0.96, "bottom": 0.1, "top": 0.93}
# A confusion matrix of up to _MANY_CLASSES classes named in up to _SHORT_LABEL
# characters gets margins computed from the names' length (in inches, at matplotlib's
# default 10-point font: about 0.075 in a character); longer names or more classes
# get the constrained layout (which also fits the colour bar to a large matrix).
_SHORT_LABEL = 12
_MANY_CLASSES = 12
_INCH_PER_CHAR = 0.075


@contextmanager
def _figure(
    width: float = 6.4, height: float = 4.8, *, margins: dict[str, float] | None = None
) -> Iterator[tuple[Figure, Axes]]:
    # A Figure of its own, never registered with pyplot: no backend is chosen or
    # switched (a notebook keeps its own), and nothing stays open once it is freed.
    # Saving it to PNG renders with Agg whatever the session's backend.
    # ``margins`` where the labels' widths are known beforehand: the constrained
    # layout measures every text first, and that costs as much as drawing the figure.
    from matplotlib.figure import Figure

    if margins is not None:
        figure = Figure(figsize=(width, height))
        figure.subplots_adjust(**margins)
    else:
        figure = Figure(figsize=(width, height), layout="constrained")
    try:
        yield figure, figure.subplots()
    finally:
        figure.clear()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _plots(oof: _OutOfFold) -> list[str]:
    """The names of the plots the out-of-fold predictions make, in the order logged."""
    if oof.classes is None:
        return [schema.RESIDUALS]
    plots = [schema.CONFUSION_MATRIX]
    if _curves(oof)[0]:
        plots += [schema.ROC_CURVE, schema.PRECISION_RECALL_CURVE]
    return plots


def _curves(oof: _OutOfFold) -> tuple[list[tuple[str, np.ndarray, np.ndarray, Any]], str, str]:
    """(name, truth, score, positive label) of each ROC or precision-recall curve, the
    plots' title and the note on their axes. A class with no row, or only rows, among
    the predictions has no curve."""
    from sklearn.preprocessing import label_binarize

    classes, n = oof.classes, len(oof.rows)
    curves: list[tuple[str, np.ndarray, np.ndarray, Any]] = []
    if classes is None or oof.scores is None:
        return curves, "", ""
    if len(classes) == 2:
        positive = classes[1]
        if 0 < np.count_nonzero(oof.target == positive) < n:
            curves = [("out-of-fold", oof.target, oof.scores[:, -1], positive)]
        return curves, f"positive class {positive!s}", ""
    onehot = label_binarize(oof.target, classes=classes)
    curves = [
        (str(label), onehot[:, k], oof.scores[:, k], 1)
        for k, label in enumerate(classes)
        if 0 < onehot[:, k].sum() < n
    ]
    # The displays would label the axes "Positive label: 1", the one-hot column.
    return curves, "one-vs-rest, per class", " (each class against the rest)"


def _render(name: str, oof: _OutOfFold) -> bytes:
    """One plot of the out-of-fold predictions, as PNG bytes (in a worker when folds
    run in parallel, while the caller logs the model)."""
    from sklearn.metrics import (
        ConfusionMatrixDisplay,
        PrecisionRecallDisplay,
        PredictionErrorDisplay,
        RocCurveDisplay,
    )

    n = len(oof.rows)
    if name == schema.RESIDUALS:
        shown = min(n, _MAX_RESIDUAL_POINTS)
        with _figure() as (figure, axes):
            PredictionErrorDisplay.from_predictions(
                oof.target,
                oof.prediction,
                kind="residual_vs_predicted",
                subsample=shown,
                random_state=0,
                ax=axes,
            )
            sample = f", {shown} of {n} rows shown" if shown < n else ""
            axes.set_title(f"Out-of-fold residuals{sample}")
            return _png(figure)
    assert oof.classes is not None
    classes = oof.classes
    if name == schema.CONFUSION_MATRIX:
        side = max(4.8, 1.5 + 0.45 * len(classes))
        width, vertical = side + 1.2, len(classes) > 4
        names = [str(c) for c in classes]
        longest = max(len(n) for n in names)
        margins = None
        # (ASCII only: a character of many scripts is twice as wide.)
        short = longest <= _SHORT_LABEL and all(n.isascii() for n in names)
        if short and len(classes) <= _MANY_CLASSES:
            # The axis title and the class names, left of the matrix and under it.
            labels = 0.55 + _INCH_PER_CHAR * longest
            margins = {
                "left": labels / width,
                "right": 0.97,
                "bottom": (labels if vertical else 0.65) / side,
                "top": 1 - 0.4 / side,
            }
        with _figure(width, side, margins=margins) as (figure, axes):
            ConfusionMatrixDisplay.from_predictions(
                oof.target,
                oof.prediction,
                labels=classes,
                display_labels=names,
                include_values=len(classes) <= 30,
                xticks_rotation="vertical" if vertical else "horizontal",
                ax=axes,
            )
            axes.set_title("Out-of-fold confusion matrix")
            return _png(figure)
    curves, title, axis_note = _curves(oof)
    with _figure(margins=_CURVE_MARGINS) as (figure, axes):
        if name == schema.ROC_CURVE:
            for i, (label, y_true, score, pos) in enumerate(curves):
                RocCurveDisplay.from_predictions(
                    y_true,
                    score,
                    pos_label=pos,
                    name=label,
                    ax=axes,
                    plot_chance_level=i == len(curves) - 1,
                )
            axes.set_title(f"Out-of-fold ROC curve, {title}")
            if axis_note:
                axes.set_xlabel(f"False positive rate{axis_note}")
                axes.set_ylabel(f"True positive rate{axis_note}")
        else:
            for label, y_true, score, pos in curves:
                PrecisionRecallDisplay.from_predictions(
                    y_true,
                    score,
                    pos_label=pos,
                    name=label,
                    drop_intermediate=True,
                    ax=axes,
                    plot_chance_level=len(curves) == 1,
                )
            axes.set_title(f"Out-of-fold precision-recall curve, {title}")
            if axis_note:
                axes.set_xlabel(f"Recall{axis_note}")
                axes.set_ylabel(f"Precision{axis_note}")
        axes.legend(fontsize="small")
        return _png(figure)


def _start_plots(run: store.StageRun, oof: _OutOfFold, n_jobs: int) -> Callable[[], None]:
    """Start drawing the plots (in the background with ``n_jobs`` > 1); return what logs them."""
    names = _plots(oof)
    # Drawn here, on this machine's cores, whatever backend the folds went to: a
    # cluster's (joblibspark) cannot return a generator, nor would it save any time.
    drawn = Parallel(n_jobs=min(n_jobs, len(names)), backend="loky", return_as="generator")(
        delayed(_render)(name, oof) for name in names
    )

    def log() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in zip(names, drawn, strict=True):
                path = Path(tmp, name)
                path.write_bytes(data)
                run.client.log_artifact(run.run_id, str(path), schema.EVALUATION_DIR)

    return log


def _log_predictions(run: store.StageRun, oof: _OutOfFold) -> int:
    n = len(oof.rows)
    keep = np.arange(n)
    if n > _MAX_PREDICTION_ROWS:
        keep = np.sort(np.random.default_rng(0).choice(n, _MAX_PREDICTION_ROWS, replace=False))
    table = pd.DataFrame(
        {
            schema.ROW_COLUMN: oof.rows[keep],
            schema.FOLD_COLUMN: oof.folds[keep],
            schema.TARGET_COLUMN: oof.target[keep],
            schema.PREDICTION_COLUMN: oof.prediction[keep],
        }
    )
    if oof.scores is not None and oof.score_labels is not None:
        prefix = schema.PROBA_PREFIX if oof.kind == "proba" else schema.DECISION_PREFIX
        for k, label in enumerate(oof.score_labels):
            table[f"{prefix}{label}"] = oof.scores[keep, k]
    run.client.log_table(
        run.run_id, data=table, artifact_file=f"{schema.EVALUATION_DIR}/{schema.PREDICTIONS}"
    )
    return len(keep)
