"""The logics and algorithms that ship with mlpipe."""

from __future__ import annotations

import importlib.util
from typing import Any

from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted

from mlpipe._registry import algorithm, logic

__all__ = ["LabelEncodedClassifier"]

# The estimators are imported inside each factory: registering the built-ins must stay
# cheap, since `mlpipe main` checks names before it knows whether anything needs fitting.


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


@logic("plain")
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


@logic("knn")
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


@algorithm("logreg", grid={"C": [0.01, 0.1, 1.0, 10.0]})
def logreg(*, C: float = 1.0, max_iter: int = 1000) -> Any:
    """Logistic regression."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=max_iter)


@algorithm("rf", grid={"n_estimators": [100, 300], "max_depth": [None, 8, 16]})
def rf(*, n_estimators: int = 200, max_depth: int | None = None, random_state: int = 0) -> Any:
    """Random forest."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=n_estimators, max_depth=max_depth, random_state=random_state
    )


@algorithm("hgb", grid={"learning_rate": [0.03, 0.1, 0.3], "max_leaf_nodes": [15, 31, 63]})
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


def _inner_has(attr):
    return lambda self: hasattr(self.estimator, attr)


class LabelEncodedClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Fit ``estimator`` on labels encoded as 0..n-1; answer with the original labels.

    For classifiers such as XGBoost's that accept only integer labels.

    Parameters
    ----------
    estimator : classifier
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y, **fit_params):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        # Finite labels first: type_of_target would otherwise cast inf to int.
        y = check_array(y, ensure_2d=False, dtype=None)
        check_classification_targets(y)
        self.encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.encoder_.classes_
        self.estimator_ = clone(self.estimator).fit(X, self.encoder_.transform(y), **fit_params)
        for name in ("n_features_in_", "feature_names_in_"):
            if hasattr(self.estimator_, name):
                setattr(self, name, getattr(self.estimator_, name))
        return self

    def predict(self, X):
        check_is_fitted(self)
        return self.encoder_.inverse_transform(self.estimator_.predict(X))

    @available_if(_inner_has("predict_proba"))
    def predict_proba(self, X):
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    @available_if(_inner_has("decision_function"))
    def decision_function(self, X):
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self.estimator.__sklearn_tags__()
        tags.input_tags = inner.input_tags
        return tags


if importlib.util.find_spec("xgboost") is not None:

    @algorithm("xgboost", grid={"learning_rate": [0.03, 0.1, 0.3], "max_depth": [3, 6]})
    def xgboost(
        *,
        n_estimators: int = 300,
        learning_rate: float = 0.1,
        max_depth: int = 6,
        random_state: int = 0,
    ) -> Any:
        """XGBoost, registered only when the xgboost package is installed."""
        from xgboost import XGBClassifier

        return LabelEncodedClassifier(
            XGBClassifier(
                n_estimators=n_estimators,
                learning_rate=learning_rate,
                max_depth=max_depth,
                random_state=random_state,
            )
        )
