"""The logics and algorithms that ship with mlpipe.

This module is a leaf: it imports nothing of mlpipe and no estimator. ``mlpipe._registry``
reads ``LOGICS`` and ``ALGORITHMS`` when it creates its registries, so the built-ins are
registered before anything else can be. Each factory imports its estimators in its body:
registering the built-ins must stay cheap, since `mlpipe main` checks names before it knows
whether anything needs fitting.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ALGORITHMS", "LOGICS"]

F = TypeVar("F", bound=Callable[..., Any])
Table = dict[str, tuple[Callable[..., Any], dict[str, list[Any]]]]

# Name to (factory, search space).
LOGICS: Table = {}
ALGORITHMS: Table = {}


def _builtin(table: Table, name: str, grid: dict[str, list[Any]] | None = None) -> Callable[[F], F]:
    def add(factory: F) -> F:
        table[name] = (factory, grid or {})
        return factory

    return add


def _text(max_categories: int | None) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    return make_pipeline(
        SimpleImputer(strategy="most_frequent"),
        OneHotEncoder(
            handle_unknown="infrequent_if_exist", max_categories=max_categories, sparse_output=False
        ),
    )


@_builtin(LOGICS, "plain")
def plain(*, scale: bool = True, max_categories: int | None = None) -> Any:
    """Impute numbers with their median (and scale them), text with its most frequent value
    and one-hot encode it; columns are picked by dtype, so any raw frame fits."""
    from sklearn.compose import make_column_selector, make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    numbers = [SimpleImputer(strategy="median")] + ([StandardScaler()] if scale else [])
    return make_column_transformer(
        (make_pipeline(*numbers), make_column_selector(dtype_include="number")),
        (_text(max_categories), make_column_selector(dtype_exclude="number")),
    )


@_builtin(LOGICS, "knn")
def knn(*, n_neighbors: int = 5, max_categories: int | None = None) -> Any:
    """Like ``plain``, but a missing number is imputed from its ``n_neighbors`` nearest
    rows (on scaled numbers) rather than the median: slower, and often closer to the truth."""
    from sklearn.compose import make_column_selector, make_column_transformer
    from sklearn.impute import KNNImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_column_transformer(
        (
            make_pipeline(StandardScaler(), KNNImputer(n_neighbors=n_neighbors)),
            make_column_selector(dtype_include="number"),
        ),
        (_text(max_categories), make_column_selector(dtype_exclude="number")),
    )


@_builtin(ALGORITHMS, "logreg", grid={"C": [0.01, 0.1, 1.0, 10.0]})
def logreg(*, C: float = 1.0, max_iter: int = 1000) -> Any:
    """Logistic regression."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=max_iter)


@_builtin(ALGORITHMS, "rf", grid={"n_estimators": [100, 300], "max_depth": [None, 8, 16]})
def rf(*, n_estimators: int = 200, max_depth: int | None = None, random_state: int = 0) -> Any:
    """Random forest."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=n_estimators, max_depth=max_depth, random_state=random_state
    )


@_builtin(
    ALGORITHMS, "hgb", grid={"learning_rate": [0.03, 0.1, 0.3], "max_leaf_nodes": [15, 31, 63]}
)
def hgb(
    *,
    learning_rate: float = 0.1,
    max_iter: int = 100,
    max_leaf_nodes: int = 31,
    random_state: int = 0,
) -> Any:
    """Histogram gradient boosting."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=learning_rate,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        random_state=random_state,
    )


if importlib.util.find_spec("xgboost") is not None:

    @_builtin(ALGORITHMS, "xgboost", grid={"learning_rate": [0.03, 0.1, 0.3], "max_depth": [3, 6]})
    def xgboost(
        *,
        n_estimators: int = 300,
        learning_rate: float = 0.1,
        max_depth: int = 6,
        random_state: int = 0,
    ) -> Any:
        """XGBoost, registered only when the xgboost package is installed."""
        from xgboost import XGBClassifier

        from mlpipe.estimators import LabelEncodedClassifier

        return LabelEncodedClassifier(
            XGBClassifier(
                n_estimators=n_estimators,
                learning_rate=learning_rate,
                max_depth=max_depth,
                random_state=random_state,
            )
        )
