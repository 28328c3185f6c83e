"""The logics and algorithms that ship with mlpipe.

This module is a leaf: it imports nothing of mlpipe and no estimator. ``mlpipe._registry``
reads ``LOGICS`` and ``ALGORITHMS`` when it creates its registries, so the built-ins are
registered before anything else can be. Each factory imports its estimators in its body:
registering the built-ins must stay cheap, since `mlpipe main` checks names before it knows
whether anything needs fitting.

An algorithm says which kinds of target it fits (scikit-learn's ``type_of_target``:
``"binary"``, ``"multiclass"``, ``"continuous"``). One that fits several takes the
keyword ``target_type`` and returns the estimator for it (``rf``: a random forest
classifier or regressor); the registry passes it and never lists it as a hyperparameter.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ALGORITHMS", "LOGICS"]

F = TypeVar("F", bound=Callable[..., Any])
Table = dict[str, tuple[Callable[..., Any], dict[str, list[Any]], tuple[str, ...]]]

# The kinds of target (type_of_target) a classifier and a regressor fit.
CLASSIFICATION = ("binary", "multiclass")
REGRESSION = ("continuous",)
BOTH = CLASSIFICATION + REGRESSION

# Name to (factory, search space, kinds of target it fits; () for a logic).
LOGICS: Table = {}
ALGORITHMS: Table = {}


def _builtin(
    table: Table,
    name: str,
    grid: dict[str, list[Any]] | None = None,
    targets: tuple[str, ...] = (),
) -> Callable[[F], F]:
    def add(factory: F) -> F:
        table[name] = (factory, grid or {}, targets)
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


def _regression(target_type: str) -> bool:
    return target_type in REGRESSION


@_builtin(ALGORITHMS, "logreg", grid={"C": [0.01, 0.1, 1.0, 10.0]}, targets=CLASSIFICATION)
def logreg(*, C: float = 1.0, max_iter: int = 1000) -> Any:
    """Logistic regression."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=max_iter)


@_builtin(ALGORITHMS, "ridge", grid={"alpha": [0.1, 1.0, 10.0, 100.0]}, targets=REGRESSION)
def ridge(*, alpha: float = 1.0) -> Any:
    """Ridge regression (least squares with an L2 penalty)."""
    from sklearn.linear_model import Ridge

    return Ridge(alpha=alpha)


@_builtin(
    ALGORITHMS,
    "rf",
    grid={"n_estimators": [100, 300], "max_depth": [None, 8, 16]},
    targets=BOTH,
)
def rf(
    *,
    n_estimators: int = 200,
    max_depth: int | None = None,
    random_state: int = 0,
    target_type: str = "multiclass",
) -> Any:
    """Random forest: a classifier, or a regressor for a continuous target."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    forest = RandomForestRegressor if _regression(target_type) else RandomForestClassifier
    return forest(n_estimators=n_estimators, max_depth=max_depth, random_state=random_state)


@_builtin(
    ALGORITHMS,
    "hgb",
    grid={"learning_rate": [0.03, 0.1, 0.3], "max_leaf_nodes": [15, 31, 63]},
    targets=BOTH,
)
def hgb(
    *,
    learning_rate: float = 0.1,
    max_iter: int = 100,
    max_leaf_nodes: int = 31,
    random_state: int = 0,
    target_type: str = "multiclass",
) -> Any:
    """Histogram gradient boosting: a classifier, or a regressor for a continuous target."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    boosting = (
        HistGradientBoostingRegressor
        if _regression(target_type)
        else HistGradientBoostingClassifier
    )
    return boosting(
        learning_rate=learning_rate,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        random_state=random_state,
    )


if importlib.util.find_spec("xgboost") is not None:

    @_builtin(
        ALGORITHMS,
        "xgboost",
        grid={"learning_rate": [0.03, 0.1, 0.3], "max_depth": [3, 6]},
        targets=BOTH,
    )
    def xgboost(
        *,
        n_estimators: int = 300,
        learning_rate: float = 0.1,
        max_depth: int = 6,
        random_state: int = 0,
        target_type: str = "multiclass",
    ) -> Any:
        """XGBoost, registered only when the xgboost package is installed."""
        from xgboost import XGBClassifier, XGBRegressor

        from mlpipe.estimators import LabelEncodedClassifier

        params = dict(
            n_estimators=n_estimators,
            learning_rate=learning_rate,
            max_depth=max_depth,
            random_state=random_state,
        )
        if _regression(target_type):
            return XGBRegressor(**params)
        return LabelEncodedClassifier(XGBClassifier(**params))
