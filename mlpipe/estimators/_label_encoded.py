"""A classifier that fits its estimator on labels encoded as 0..n-1."""

from __future__ import annotations

from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted

__all__ = ["LabelEncodedClassifier"]


def _estimator_has(attr):
    """Whether the (fitted, once there is one) estimator has ``attr``; as scikit-learn's
    own meta-estimators do, its own AttributeError comes through rather than a bare False."""

    def check(self):
        getattr(self.estimator_ if hasattr(self, "estimator_") else self.estimator, attr)
        return True

    return check


class LabelEncodedClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Fit ``estimator`` on labels encoded as 0..n-1; answer with the original labels.

    For classifiers, such as XGBoost's, that accept only the integer labels 0..n-1:
    ``fit`` encodes ``y`` with a :class:`~sklearn.preprocessing.LabelEncoder`,
    ``predict`` decodes what the fitted estimator predicts. ``predict_proba`` and
    ``decision_function`` are those of the estimator, whose columns are in the order
    of ``classes_``; they exist when the estimator has them.

    Parameters
    ----------
    estimator : classifier
        The classifier to fit, cloned by ``fit``; it is never fitted itself.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The original labels, sorted, in the order of the encoded labels 0..n-1.
    encoder_ : LabelEncoder
        The encoder fitted on ``y``.
    estimator_ : classifier
        The clone of ``estimator`` fitted on the encoded labels.
    n_features_in_ : int
        The number of features seen in ``fit``, when ``estimator_`` has it.
    feature_names_in_ : ndarray of shape (n_features,)
        The names of the features seen in ``fit``, when ``estimator_`` has them
        (``X`` was a data frame with string column names).

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from mlpipe.estimators import LabelEncodedClassifier
    >>> X = [[0.0], [0.2], [0.9], [1.0]]
    >>> y = ["cat", "cat", "dog", "dog"]
    >>> model = LabelEncodedClassifier(LogisticRegression()).fit(X, y)
    >>> model.classes_.tolist()
    ['cat', 'dog']
    >>> model.estimator_.classes_.tolist()
    [0, 1]
    >>> model.predict([[0.1], [0.95]]).tolist()
    ['cat', 'dog']
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y, **fit_params):
        """Fit a clone of ``estimator`` on ``X`` and ``y`` encoded as 0..n-1.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            What the estimator accepts.
        y : array-like of shape (n_samples,)
            The labels, of any type that can be sorted.
        **fit_params : dict
            Passed to the estimator's ``fit``.

        Returns
        -------
        self : LabelEncodedClassifier
            The fitted classifier.
        """
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
        """The original label of the class that the estimator predicts for each row."""
        check_is_fitted(self)
        return self.encoder_.inverse_transform(self.estimator_.predict(X))

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """The estimator's class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """The estimator's decision function, columns in the order of ``classes_``."""
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = self.estimator.__sklearn_tags__()
        tags.input_tags = inner.input_tags
        return tags
