"""Evaluation of the final stage: cross-validation of the whole chain, out-of-fold
predictions and their plots, or a search's own results.

Each function takes what it needs and returns what it measured; the chain logger
decides where it goes. Fits made here are folds: :data:`IN_EVALUATION` says so to
any ``LineagePipeline`` nested in the chain, which then does not log them.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import clone, is_classifier
from sklearn.model_selection import check_cv, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.utils import indexable

from mlpipe import schema
from mlpipe.tracking import _store as store

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["IN_EVALUATION", "Evaluation", "evaluate", "search_results"]

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
    """What an evaluation measured: metrics and tags for the final stage run."""

    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


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


def evaluate(
    run: store.StageRun,
    steps: list[tuple[str, Any]],
    X: Any,
    y: Any,
    *,
    params: dict[str, Any],
    cv: Any,
    scoring: Any,
) -> Evaluation:
    """Cross-validate the unfitted chain ``steps`` on ``X, y``; log plots and predictions.

    Every fold refits the whole chain, so no score comes from rows a stage saw in
    training. Returns the ``cv_<scorer>_mean``/``_std`` metrics and the evaluation
    tags; nothing is logged to ``run`` but the plots and the predictions table.
    """
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
    chain = Pipeline([(n, clone(e) if e not in _SKIPPED else e) for n, e in steps])
    token = IN_EVALUATION.set(True)
    try:
        result = cross_validate(
            chain,
            X,
            y,
            cv=splitter,
            scoring=scoring,
            params=params,
            return_estimator=True,
            return_indices=True,
        )
        # The k fitted chains are only needed to predict their own test rows: drop
        # them as soon as that is done rather than keep k models for the whole fit.
        fitted = result.pop("estimator")
        test_rows = result.pop("indices")["test"]
        # A fold whose fit failed got error_score (NaN) for every scorer, with a
        # FitFailedWarning; its model cannot predict.
        scores = np.array([v for k, v in result.items() if k.startswith("test_")], dtype=float)
        failed = [k for k in range(len(test_rows)) if np.isnan(scores[:, k]).all()]
        predictions = _out_of_fold(
            fitted, test_rows, X, y, classes=_classes(final, y), failed=failed
        )
    finally:
        IN_EVALUATION.reset(token)
    del fitted
    tags = {
        schema.EVALUATION: schema.EVALUATED_BY_CROSS_VALIDATION,
        schema.EVALUATION_FOLDS: str(n_splits),
        schema.EVALUATION_SPLITTER: type(splitter).__name__,
    }
    if failed:
        tags[schema.EVALUATION_FAILED_FOLDS] = ",".join(map(str, failed))
    if isinstance(predictions, str):
        tags[schema.EVALUATION_NO_PLOTS] = predictions
    else:
        kept = _log_evaluation(run, predictions)
        if kept < len(predictions.rows):
            tags[schema.EVALUATION_ROWS_KEPT] = str(kept)
    metrics = {}
    for key, values in result.items():
        if key.startswith("test_"):
            scorer = key[len("test_") :]
            metrics[f"{schema.CV_PREFIX}{scorer}_mean"] = float(np.mean(values))
            metrics[f"{schema.CV_PREFIX}{scorer}_std"] = float(np.std(values))
    return Evaluation(metrics, tags)


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
    if hasattr(data, "iloc"):
        return data.iloc[rows]
    if hasattr(data, "shape"):
        return data[rows]
    return [data[i] for i in rows]


def _out_of_fold(
    fitted: list[Any],
    test_rows: list[np.ndarray],
    X: Any,
    y: Any,
    *,
    classes: np.ndarray | None,
    failed: list[int],
) -> _OutOfFold | str:
    """Predict each fold's test rows with that fold's model, skipping ``failed`` folds.

    Returns why there are no predictions instead, when there are none.
    """
    # As cross_validate split them: anything without rows of its own becomes an array.
    X, y = indexable(X, y)
    target = np.asarray(y)
    if target.ndim == 2 and target.shape[1] == 1:
        target = target.ravel()
    if target.ndim != 1:
        return "the target is not one column"
    predicted = [k for k in range(len(fitted)) if k not in failed]
    if not predicted:
        return "no fold has a score"
    method = None
    if classes is not None and len(classes) > 1:
        if hasattr(fitted[predicted[0]], "predict_proba"):
            method = "predict_proba"
        elif hasattr(fitted[predicted[0]], "decision_function"):
            method = "decision_function"
    predictions, scores = [], []
    for k in predicted:
        model, rows = fitted[k], test_rows[k]
        X_test = _take(X, rows)
        predictions.append(np.asarray(model.predict(X_test)).reshape(len(rows), -1)[:, 0])
        if method is not None and classes is not None:
            fold_scores = _class_scores(model, method, X_test, classes)
            if fold_scores is None:
                method = None
            else:
                scores.append(fold_scores)
    all_rows = np.concatenate([test_rows[k] for k in predicted])
    order = np.argsort(all_rows, kind="stable")
    folds = np.concatenate([np.full(len(test_rows[k]), k) for k in predicted])
    result = _OutOfFold(
        rows=all_rows[order],
        folds=folds[order],
        target=target[all_rows[order]],
        prediction=np.concatenate(predictions)[order],
        classes=classes,
    )
    if method is not None and classes is not None:
        result.scores = np.concatenate(scores)[order]
        binary_decision = method == "decision_function" and len(classes) == 2
        result.score_labels = classes[1:] if binary_decision else classes
        result.kind = "proba" if method == "predict_proba" else "decision"
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


@contextmanager
def _figure(width: float = 6.4, height: float = 4.8) -> Iterator[tuple[Figure, Axes]]:
    # A Figure of its own, never registered with pyplot: no backend is chosen or
    # switched (a notebook keeps its own), and nothing stays open once it is freed.
    # Saving it to PNG renders with Agg whatever the session's backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    try:
        yield figure, figure.subplots()
    finally:
        figure.clear()


def _log_evaluation(run: store.StageRun, oof: _OutOfFold) -> int:
    """Log the plots and the table of out-of-fold predictions; return the rows tabled."""
    from sklearn.metrics import (
        ConfusionMatrixDisplay,
        PrecisionRecallDisplay,
        PredictionErrorDisplay,
        RocCurveDisplay,
    )
    from sklearn.preprocessing import label_binarize

    def log(figure: Figure, name: str) -> None:
        run.client.log_figure(run.run_id, figure, f"{schema.EVALUATION_DIR}/{name}")

    n = len(oof.rows)
    if oof.classes is None:
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
            log(figure, schema.RESIDUALS)
    else:
        classes = oof.classes
        labels = [str(c) for c in classes]
        side = max(4.8, 1.5 + 0.45 * len(classes))
        with _figure(side + 1.2, side) as (figure, axes):
            ConfusionMatrixDisplay.from_predictions(
                oof.target,
                oof.prediction,
                labels=classes,
                display_labels=labels,
                include_values=len(classes) <= 30,
                xticks_rotation="vertical" if len(classes) > 4 else "horizontal",
                ax=axes,
            )
            axes.set_title("Out-of-fold confusion matrix")
            log(figure, schema.CONFUSION_MATRIX)
        # (name, truth, score, positive label) of each curve. A class with no row, or
        # only rows, among the predictions has no curve.
        curves: list[tuple[str, np.ndarray, np.ndarray, Any]] = []
        axis_note = ""
        if oof.scores is not None and len(classes) == 2:
            positive = classes[1]
            if 0 < np.count_nonzero(oof.target == positive) < n:
                curves = [("out-of-fold", oof.target, oof.scores[:, -1], positive)]
            title = f"positive class {positive!s}"
        elif oof.scores is not None:
            onehot = label_binarize(oof.target, classes=classes)
            curves = [
                (label, onehot[:, k], oof.scores[:, k], 1)
                for k, label in enumerate(labels)
                if 0 < onehot[:, k].sum() < n
            ]
            title = "one-vs-rest, per class"
            # The displays would label the axes "Positive label: 1", the one-hot column.
            axis_note = " (each class against the rest)"
        if curves:
            with _figure() as (figure, axes):
                for i, (name, y_true, score, pos) in enumerate(curves):
                    RocCurveDisplay.from_predictions(
                        y_true,
                        score,
                        pos_label=pos,
                        name=name,
                        ax=axes,
                        plot_chance_level=i == len(curves) - 1,
                    )
                axes.set_title(f"Out-of-fold ROC curve, {title}")
                if axis_note:
                    axes.set_xlabel(f"False positive rate{axis_note}")
                    axes.set_ylabel(f"True positive rate{axis_note}")
                axes.legend(fontsize="small")
                log(figure, schema.ROC_CURVE)
            with _figure() as (figure, axes):
                for name, y_true, score, pos in curves:
                    PrecisionRecallDisplay.from_predictions(
                        y_true,
                        score,
                        pos_label=pos,
                        name=name,
                        drop_intermediate=True,
                        ax=axes,
                        plot_chance_level=len(curves) == 1,
                    )
                axes.set_title(f"Out-of-fold precision-recall curve, {title}")
                if axis_note:
                    axes.set_xlabel(f"Recall{axis_note}")
                    axes.set_ylabel(f"Precision{axis_note}")
                axes.legend(fontsize="small")
                log(figure, schema.PRECISION_RECALL_CURVE)
    return _log_predictions(run, oof)


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
