"""scikit-learn estimators that mlpipe uses and that are useful on their own.

``import mlpipe`` does not import this subpackage; it imports scikit-learn.
"""

from mlpipe.estimators._label_encoded import LabelEncodedClassifier

__all__ = ["LabelEncodedClassifier"]
