"""The model registry: a chain's raw-input model as a registered version, and promotion.

:func:`register` makes the model a new version of a registered model, with the chain
on the version's tags; :func:`promote` moves an alias (``champion``) to a version only
when its cross-validated score is at least the current holder's, on the same data
version. Everything is plain MLflow: ``mlflow.pyfunc.load_model("models:/credit@champion")``
needs no mlpipe.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlpipe import schema
from mlpipe.exceptions import PromotionError
from mlpipe.tracking import _store as store
from mlpipe.tracking._models import alias_holder, model_version, registered_model

__all__ = ["promote", "register"]

logger = logging.getLogger("mlpipe")

# MLflow 3.17's rule for an alias (mlflow/utils/validation.py): checked before anything
# is read, so that a bad alias fails with a line saying the rule.
_ALIAS = re.compile(r"^[\w\-]+$")
_VERSION_ALIAS = re.compile(r"^[vV]\d+$")
_MAX_ALIAS_LENGTH = 255


def register(
    client: mlflow.MlflowClient,
    name: str,
    *,
    model_id: str,
    run_id: str,
    tags: dict[str, str],
) -> str:
    """Register logged model ``model_id`` as a new version of ``name``; return the version.

    The registered model is created on first use. ``tags`` (the chain) go on the
    version in the same call that creates it. The logged model gets MLflow's own
    ``mlflow.modelVersions`` tag, which its UI page lists under "Model versions" (a
    tracking server sets it itself).
    """
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    version = client.create_model_version(
        name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id
    )
    if not mlflow.get_tracking_uri().startswith(("http:", "https:")):
        # Only a new model: no earlier versions to keep in the tag. As MLflow writes it
        # (mlflow.register_model, and the server), the version as the store gives it.
        entry = [{"name": name, "version": version.version}]
        client.set_logged_model_tags(model_id, {schema.MODEL_VERSIONS: json.dumps(entry)})
    return str(version.version)


def _check_alias(alias: Any) -> None:
    if (
        not isinstance(alias, str)
        or not _ALIAS.match(alias)
        or len(alias) > _MAX_ALIAS_LENGTH
        or alias.lower() == "latest"
        or _VERSION_ALIAS.match(alias)
    ):
        raise ValueError(
            f"Invalid alias {alias!r}: MLflow takes letters, digits, '_' and '-' (at most "
            f"{_MAX_ALIAS_LENGTH}), except 'latest' and version names such as 'v2'. "
            "Use a name such as 'champion'."
        )


def _metric_of(metrics: dict[str, float], wanted: str) -> str | None:
    """The logged metric ``wanted`` names: as logged, or a scorer's ``cv_<name>_mean``."""
    for name in (wanted, f"{schema.CV_PREFIX}{wanted}_mean"):
        if name in metrics:
            return name
    return None


def _score(
    client: mlflow.MlflowClient, version: ModelVersion, metric: str | None
) -> tuple[str | None, float | None, dict[str, float]]:
    """(metric name, score, every metric) of the run that logged ``version``."""
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    wanted = metric or version.tags.get(schema.SCORE_METRIC)
    name = _metric_of(metrics, wanted) if wanted else None
    return name or wanted, (metrics[name] if name else None), metrics


def _data_version(version: ModelVersion) -> str:
    """The data a version was trained and scored on: its load keys and fingerprint."""
    fingerprint = version.tags.get(schema.FINGERPRINT, "")
    try:
        chain = json.loads(version.tags.get(schema.CHAIN, "[]"))
    except ValueError:
        chain = []
    loads = [e["key"] for e in chain if e.get("stage") == schema.LOAD_STAGE and e.get("key")]
    if not loads and not fingerprint:
        return "unknown data"
    short = ",".join(f[:12] for f in fingerprint.split(",") if f)
    return f"{', '.join(loads) or 'data'} (fingerprint {short or 'unknown'})"


def promote(
    name: str,
    version_or_run: str | int,
    alias: str = "champion",
    metric: str | None = None,
    force: bool = False,
    *,
    reason: str | None = None,
) -> ModelVersion:
    """Move ``alias`` to a version of registered model ``name`` if it scores at least as well.

    The candidate's cross-validated score (the metric its chain was scored with, the
    first ``cv_<scorer>_mean``, or a search's ``best_score``; or ``metric``) is
    compared with the current alias holder's. Scores follow scikit-learn's convention:
    higher is better. The alias moves only when the candidate's score is at least the
    holder's and both were measured on the same data version (the same training data
    fingerprint); otherwise nothing changes and :class:`~mlpipe.exceptions.PromotionError`
    says both scores and both data versions. ``force=True`` moves it anyway. The
    version then records who promoted it, when, from which version and why, in the
    tags ``mlpipe.promoted.<alias>.by``, ``.at``, ``.from`` and ``.because``.

    Parameters
    ----------
    name : str
        The registered model.
    version_or_run : str or int
        A version number, or the run id of the chain's final stage that logged it.
    alias : str, default="champion"
        The alias to move; consumers load ``models:/<name>@<alias>``.
    metric : str, optional
        The metric to compare, as logged (``cv_f1_macro_mean``) or as a scorer's name
        (``f1_macro``).
    force : bool, default=False
        Move the alias whatever the scores and data versions say.
    reason : str, optional
        Why, recorded in ``mlpipe.promoted.<alias>.because``; by default the comparison.

    Returns
    -------
    mlflow.entities.model_registry.ModelVersion
        The version that now holds the alias.

    Raises
    ------
    NotFoundError
        If the registered model or the version does not exist; the message lists what does.
    PromotionError
        If the candidate scores lower, or on other data, or was never scored (without
        ``force``).
    ValueError
        If ``alias`` is a name MLflow refuses.

    Examples
    --------
    >>> import mlpipe
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True, as_frame=True)
    >>> pipe = mlpipe.LineagePipeline(
    ...     [("model", LogisticRegression(max_iter=500))], cv=3, registered_model_name="iris"
    ... ).fit(X, y)
    >>> mlpipe.promote("iris", pipe.model_version_).aliases
    ['champion']
    """
    _check_alias(alias)
    client = store.client()
    registered_model(client, name)
    candidate = model_version(client, name, version_or_run)
    holder = alias_holder(client, name, alias)
    metric_name, score, metrics = _score(client, candidate, metric)
    if holder is not None and str(holder.version) == str(candidate.version):
        logger.info("Version %s of %r already holds @%s.", candidate.version, name, alias)
        return candidate
    if score is None and not force:
        scored = ", ".join(sorted(k for k in metrics if k.startswith(schema.CV_PREFIX)))
        raise PromotionError(
            f"Version {candidate.version} of {name!r} has no score "
            f"{metric_name or '(it was never cross-validated)'}"
            f"{': its run has ' + scored if scored else ''}. Pass metric= one of those, "
            "fit with cv= to score it, or force=True."
        )
    because = reason
    if holder is not None:
        held_name, held, _ = _score(client, holder, metric_name)
        mine, theirs = _data_version(candidate), _data_version(holder)
        same_data = candidate.tags.get(schema.FINGERPRINT) == holder.tags.get(schema.FINGERPRINT)
        both = (
            f"version {candidate.version} scored {metric_name}={_fmt(score)} on {mine}; "
            f"@{alias} (version {holder.version}) scored {_fmt(held)} on {theirs}"
        )
        if force:
            because = because or f"forced: {both}"
        elif held is None:
            raise PromotionError(
                f"Cannot compare: {both}. The holder has no {metric_name}; "
                "pass force=True to promote anyway."
            )
        elif not same_data or candidate.tags.get(schema.FINGERPRINT) is None:
            raise PromotionError(
                f"Scores measured on different data versions are not comparable: {both}. "
                "Pass force=True to promote anyway."
            )
        elif score is not None and score < held:
            raise PromotionError(
                f"Not promoted: {both}; the candidate must score at least as well. Nothing changed."
            )
        else:
            because = because or f"at least as good: {both}"
    else:
        because = because or f"first holder of @{alias}: {metric_name}={_fmt(score)}"
    client.set_registered_model_alias(name, alias, candidate.version)
    record = {
        "by": store.current_user(),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "from": str(holder.version) if holder is not None else "none",
        "because": because,
    }
    for what, value in record.items():
        client.set_model_version_tag(
            name, candidate.version, schema.promoted_tag(alias, what), value
        )
    return client.get_model_version(name, candidate.version)


def _fmt(score: float | None) -> str:
    return "none" if score is None else f"{score:.6g}"
