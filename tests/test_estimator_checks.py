"""scikit-learn's estimator checks, with the failures it accepts for Pipeline itself."""

from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from mlpipe import LineagePipeline
from mlpipe.estimators import LabelEncodedClassifier

# The same exceptions scikit-learn grants Pipeline (fit replaces the steps it was given).
PIPELINE_XFAIL = {
    "check_dont_overwrite_parameters": "Pipeline changes the `steps` parameter.",
    "check_estimators_overwrite_params": "Pipeline changes the `steps` parameter.",
}


def _instances():
    return [
        LineagePipeline([("scaler", StandardScaler()), ("final_estimator", Ridge())]),
        LineagePipeline([("scaler", StandardScaler()), ("final_estimator", LogisticRegression())]),
        LineagePipeline(
            [("scaler", StandardScaler()), ("final_estimator", LogisticRegression())],
            serializer="skops",
        ),
    ]


@parametrize_with_checks(_instances(), expected_failed_checks=lambda est: PIPELINE_XFAIL)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@parametrize_with_checks([LabelEncodedClassifier(LogisticRegression())])
def test_label_encoded_classifier(estimator, check):
    check(estimator)
