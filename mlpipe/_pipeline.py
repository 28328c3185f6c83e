"""LineagePipeline: a scikit-learn Pipeline whose every stage is an MLflow run."""

from __future__ import annotations

import inspect
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn import get_config
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import check_cv, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import process_routing
from sklearn.utils.metaestimators import available_if

from mlpipe._cache import Uncacheable, cache_key, data_key, load_step, lookup
from mlpipe._graph import render
from mlpipe._version import __version__
from mlpipe.data._dataset import (
    Dataset,
    as_frame,
    find_frame_load,
    log_load,
    log_training_input,
    training_inputs,
)
from mlpipe.exceptions import StageError
from mlpipe.model._package import dtypes_of, log_raw_model
from mlpipe.model._raw import prepare
from mlpipe.model._serialize import dumps, referenced_modules
from mlpipe.tracking import _schema as schema
from mlpipe.tracking import _store as store
from mlpipe.tracking._query import lineage

__all__ = ["LineagePipeline"]

logger = logging.getLogger("mlpipe")

_CLASSIFIER_SCORING = ("accuracy", "balanced_accuracy", "f1_macro")
_REGRESSOR_SCORING = ("r2", "neg_root_mean_squared_error", "neg_mean_absolute_error")
_SKIPPED = (None, "passthrough")


def _final_has(attr: str) -> Any:
    def check(self: LineagePipeline) -> bool:
        final = self.steps[-1][1]
        if attr in ("transform", "fit_transform") and final in _SKIPPED:
            return True
        if attr == "fit_transform":
            return hasattr(final, "transform") or hasattr(final, "fit_transform")
        return hasattr(final, attr)

    return check


def _fitted_by_meta_estimator() -> bool:
    """Whether this fit was called by scikit-learn on one fold or ensemble member.

    Cross-validation, ensembles and stacking fit copies of an estimator from inside
    scikit-learn; a search's final refit comes from the search's own ``fit``. Only
    the latter, or a fit from user code, is logged.
    """
    frame = inspect.currentframe()
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if (
            module.startswith("sklearn.")
            and not module.startswith(("sklearn.utils", "sklearn.base"))
            and frame.f_code.co_name != "fit"
        ):
            return True
        frame = frame.f_back
    return False


def stage_type(estimator: Any) -> str:
    """The type of a stage run: the estimator's class, or its steps' for a Pipeline."""
    if isinstance(estimator, Pipeline):
        return "+".join(stage_type(e) for _, e in estimator.steps if e not in _SKIPPED)
    return type(estimator).__name__


class LineagePipeline(Pipeline):
    """A scikit-learn Pipeline that logs every fitted stage as its own MLflow run.

    Fitting it logs the training data as a ``load`` run (unless it is given a
    :class:`~mlpipe.Dataset`, whose load run is reused), then each step as a run
    in an experiment named after the step, pointing at the run it was fitted on,
    and finally one raw-input pyfunc model holding every fitted step.

    Parameters
    ----------
    steps : list of (str, estimator) tuples
        As for :class:`sklearn.pipeline.Pipeline`. Each step name is a stage name
        and the name of its experiment; ``"load"`` is reserved.
    transform_input : None
        Not supported; present because :class:`~sklearn.pipeline.Pipeline` has it.
    memory : None
        Not supported: mlpipe keeps fitted stages in MLflow instead.
    verbose : bool, default=False
        Log each stage's fit time to the ``mlpipe`` logger at INFO level.
    project : str, optional
        Prefix of the experiment names: ``"credit"`` logs to ``credit/load``,
        ``credit/processing``, ...
    log_model : bool, default=True
        Log the raw-input pyfunc model on the final stage.
    cv : int, cross-validation generator, iterable or None, default=5
        How the final stage is evaluated: the whole chain is refitted and scored on
        each fold (:func:`sklearn.model_selection.cross_validate`), so no score
        comes from data a stage saw in training. ``None`` skips the evaluation. A
        search used as the final step is not evaluated again: its ``best_score_`` is
        logged instead.
    scoring : str, callable, list or dict, optional
        Scorers for the evaluation, as in ``cross_validate``. By default accuracy,
        balanced accuracy and macro F1 for a classifier, R², RMSE and MAE for a
        regressor.
    cache : bool, default=True
        Reuse a stage already fitted on the same inputs with the same code and
        parameters (a FINISHED run with the same cache key) instead of refitting it.
    types : dict of str to str, optional
        The type of each stage run, by step name (``{"processing": "plain",
        "model": "logreg"}``); by default the step's class name.

    Attributes
    ----------
    run_ids_ : dict of str to str
        The run id of each stage, ``"load"`` first. Empty when the fit was one fold
        of a cross-validation (those fits are not logged).
    model_uri_ : str or None
        URI of the raw-input pyfunc model, for ``mlflow.pyfunc.load_model`` and
        ``mlflow models serve``; None when no model was logged.
    reused_ : list of str
        The stages taken from earlier runs instead of being refitted.
    input_dtypes_ : dict of str to str or None
        The dtypes of the raw input columns after missing values were normalised;
        the raw-input model brings served records back to them.

    See Also
    --------
    mlpipe.load : Log a data version to fit on.

    Examples
    --------
    >>> import mlpipe
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.datasets import load_iris
    >>> X, y = load_iris(return_X_y=True, as_frame=True)
    >>> pipe = mlpipe.LineagePipeline(
    ...     [("processing", StandardScaler()), ("model", LogisticRegression())]
    ... ).fit(X, y)
    >>> sorted(pipe.run_ids_)
    ['load', 'model', 'processing']
    >>> import mlflow
    >>> served = mlflow.pyfunc.load_model(pipe.model_uri_)
    >>> (served.predict(X) == pipe.predict(X)).all()
    np.True_
    """

    def __init__(
        self,
        steps: list[tuple[str, Any]],
        *,
        transform_input: Any = None,
        memory: Any = None,
        verbose: bool = False,
        project: str | None = None,
        log_model: bool = True,
        cv: Any = 5,
        scoring: Any = None,
        cache: bool = True,
        types: dict[str, str] | None = None,
    ):
        super().__init__(steps, transform_input=transform_input, memory=memory, verbose=verbose)
        self.project = project
        self.log_model = log_model
        self.cv = cv
        self.scoring = scoring
        self.cache = cache
        self.types = types

    # --- fitting -------------------------------------------------------------------

    def fit(self, X: Any, y: Any = None, **params: Any) -> LineagePipeline:
        """Fit every step, logging each as a stage run, and log the raw-input model.

        Parameters
        ----------
        X : Dataset, DataFrame or array-like
            The raw training data, or a :class:`~mlpipe.Dataset` (then ``y`` must be
            None and the dataset's load run becomes the first stage's upstream).
        y : array-like, optional
            Target.
        **params : dict
            Fit parameters, ``step__param`` as in scikit-learn (or routed metadata
            when metadata routing is enabled).

        Returns
        -------
        self : LineagePipeline

        Raises
        ------
        StageError
            If the pipeline is set up in a way mlpipe cannot log.
        Exception
            Whatever a step raises; that step's run is ended FAILED first.
        """
        self._fit_chain(X, y, params, final="fit")
        return self

    @available_if(_final_has("fit_transform"))
    def fit_transform(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Fit every step as :meth:`fit` does and return the transformed training data."""
        return self._fit_chain(X, y, params, final="fit_transform")

    @available_if(_final_has("fit_predict"))
    def fit_predict(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Fit every step as :meth:`fit` does and return the final step's ``fit_predict``."""
        return self._fit_chain(X, y, params, final="fit_predict")

    def _fit_chain(self, X: Any, y: Any, params: dict[str, Any], *, final: str) -> Any:
        dataset = None
        if isinstance(X, Dataset):
            if y is not None:
                raise TypeError("fit(dataset) takes the target from the dataset; pass y=None.")
            dataset, X, y = X, X.X, X.y
        self._check_settings()
        raw_X, X = X, prepare(X, None)
        self.input_dtypes_ = dtypes_of(X)
        routed = self._route(params, final)
        self.run_ids_: dict[str, str] = {}
        self.model_uri_: str | None = None
        if _fitted_by_meta_estimator():
            Xt = X
            for i, name, est in self._active_steps():
                Xt = self._fit_step(est, Xt, y, routed[name], final if i == self._last else None)
            return Xt
        client = mlflow.MlflowClient()
        if dataset is None:
            frame, target = as_frame(raw_X, y)
            dataset = None
            if self.cache:
                dataset = find_frame_load(client, frame, target=target, project=self.project)
            if dataset is None:
                dataset = log_load(
                    frame, name="frame", source="frame:fit", target=target, project=self.project
                )
        inputs = training_inputs(client, dataset)
        self.run_ids_ = {schema.LOAD_STAGE: ",".join(run_id for _, run_id in dataset.loads)}
        self.reused_: list[str] = []
        upstream = [(schema.LOAD_STAGE, key, run_id) for key, run_id in dataset.loads]
        upstream_key = data_key(dataset.fingerprint, dataset.target)
        common_tags = {schema.VERSION: __version__}
        commit = store.git_commit()
        if commit:
            common_tags[schema.GIT_COMMIT] = commit
        stages: list[tuple[str, str, bytes]] = []
        modules: set[str] = set()
        Xt = X
        for i, name, est in self._active_steps():
            method = final if i == self._last else None
            type_ = (self.types or {}).get(name) or stage_type(est)
            key = self._cache_key(name, type_, est, routed[name], upstream_key, method)
            tags = {
                **common_tags,
                schema.CLASS: f"{type(est).__module__}.{type(est).__qualname__}",
                **({schema.CACHE_KEY: key} if key else {}),
            }
            hit = None
            if key is not None:
                experiment = store.experiment_name(name, self.project)
                hit = lookup(
                    client,
                    store.get_or_create_experiment(client, experiment),
                    key,
                    need_model=i == self._last and self.log_model,
                )
            if hit is not None:
                est, data, serializer = load_step(client, hit)
                self.steps[i] = (name, est)
                stages.append((name, serializer, data))
                modules |= referenced_modules(data)
                self.reused_.append(name)
                if method is None or method == "fit_transform":
                    Xt = est.transform(Xt)
                run_id, run_key = self._reuse(
                    client, hit, name, type_, upstream, inputs, tags, X, y, stages, modules
                )
                logger.info("Reused stage %s from run %s", name, hit.info.run_id)
            else:
                with store.stage_run(
                    client,
                    stage=name,
                    type_=type_,
                    project=self.project,
                    upstream=upstream,
                    tags=tags,
                ) as run:
                    log_training_input(client, run.run_id, inputs)
                    start = time.perf_counter()
                    Xt = self._fit_step(est, Xt, y, routed[name], method)
                    seconds = time.perf_counter() - start
                    if self.verbose:
                        logger.info("Fitted stage %s (%s) in %.2f s", name, run.key, seconds)
                    data, serializer, found = dumps(est)
                    stages.append((name, serializer, data))
                    modules |= found
                    with tempfile.TemporaryDirectory() as tmp:
                        path = Path(tmp, schema.STAGE_FILE)
                        path.write_bytes(data)
                        client.log_artifact(run.run_id, str(path), schema.STAGE_ARTIFACT)
                    run.log(
                        params=_flat_params(est),
                        metrics={schema.FIT_TIME: seconds},
                        tags={schema.SERIALIZER: serializer},
                    )
                    if i == self._last:
                        self._log_final(run, est, X, y, params, stages, modules)
                run_id, run_key = run.run_id, run.key
            self.run_ids_[name] = run_id
            upstream = [(name, run_key, run_id)]
            upstream_key = key or f"uncached:{run_id}"
        return Xt

    def _cache_key(
        self,
        name: str,
        type_: str,
        est: Any,
        fit_params: dict[str, Any],
        upstream_key: str,
        method: str | None,
    ) -> str | None:
        """The stage's cache key, or None when it must be fitted whatever the store holds."""
        if not self.cache or method == "fit_predict":
            return None
        if method in (None, "fit_transform") and not hasattr(est, "transform"):
            return None
        try:
            return cache_key(
                stage=name, type_=type_, estimator=est, fit_params=fit_params, upstream=upstream_key
            )
        except Uncacheable as reason:
            logger.info("Stage %s is not cached: %s", name, reason)
            return None

    def _reuse(
        self,
        client: mlflow.MlflowClient,
        hit: Any,
        name: str,
        type_: str,
        upstream: list[tuple[str, str, str]],
        inputs: list[Any],
        tags: dict[str, str],
        X: Any,
        y: Any,
        stages: list[tuple[str, str, bytes]],
        modules: set[str],
    ) -> tuple[str, str]:
        """Point at a cached stage run; return the (run id, key) the chain continues from.

        The cached run itself serves when it sits on the same upstream runs. Otherwise
        (the same data or stage fitted under another run) a new run records this chain
        without refitting: it copies the cached run's parameters and metrics, names it
        in ``mlpipe.reused_from``, and loads its fitted stage from there.
        """
        hit_tags = hit.data.tags
        model_uri = hit_tags.get(schema.MODEL_URI)
        if hit_tags.get(schema.UPSTREAM, "") == ",".join(r for _, _, r in upstream):
            if model_uri:
                self.model_uri_ = model_uri
            return hit.info.run_id, hit_tags[schema.KEY]
        source = hit_tags.get(schema.REUSED_FROM) or hit.info.run_id
        copied = {
            schema.REUSED_FROM: source,
            schema.SERIALIZER: hit_tags.get(schema.SERIALIZER, "cloudpickle"),
            **({schema.MODEL_URI: model_uri} if model_uri else {}),
            **(
                {schema.EVALUATION: hit_tags[schema.EVALUATION]}
                if schema.EVALUATION in hit_tags
                else {}
            ),
        }
        with store.stage_run(
            client,
            stage=name,
            type_=type_,
            project=self.project,
            upstream=upstream,
            tags={**tags, **copied},
        ) as run:
            log_training_input(client, run.run_id, inputs)
            metrics = {k: v for k, v in hit.data.metrics.items() if k != schema.KEY_TIME}
            run.log(params=hit.data.params, metrics=metrics)
            if model_uri:
                self.model_uri_ = model_uri
                self._log_graph(run)
        return run.run_id, run.key

    @property
    def _last(self) -> int:
        return len(self.steps) - 1

    def _log_graph(self, run: store.StageRun) -> None:
        entries = lineage(run.run_id)
        reused = {self.run_ids_.get(name, "") for name in self.reused_}
        with tempfile.TemporaryDirectory() as tmp:
            path = render(entries, Path(tmp, schema.LINEAGE_GRAPH), reused=reused)
            run.client.log_artifact(run.run_id, str(path))

    def _active_steps(self) -> list[tuple[int, str, Any]]:
        return [(i, n, e) for i, (n, e) in enumerate(self.steps) if e not in _SKIPPED]

    def _check_settings(self) -> None:
        if self.memory is not None:
            raise StageError(
                "LineagePipeline does not support memory=: it keeps fitted stages in MLflow. "
                f"Got memory={self.memory!r}; leave it None."
            )
        if self.transform_input is not None:
            raise StageError(
                "LineagePipeline does not support transform_input=; "
                f"got {self.transform_input!r}. Leave it None."
            )
        names = [name for name, _ in self.steps]
        if schema.LOAD_STAGE in names:
            raise StageError(
                f"Step name {schema.LOAD_STAGE!r} is reserved for the data's load stage; "
                f"got steps {names}. Rename that step."
            )
        if self.project is not None and (not isinstance(self.project, str) or not self.project):
            raise StageError(f"project must be a non-empty string or None, got {self.project!r}.")

    def _route(self, params: dict[str, Any], final: str) -> dict[str, dict[str, Any]]:
        """The fit parameters of each step, keyed by step name."""
        names = [name for name, _ in self.steps]
        if get_config().get("enable_metadata_routing"):
            routed = process_routing(self, "fit", **params)
            out = {}
            for i, name, _ in self._active_steps():
                method = final if i == self._last else "fit_transform"
                out[name] = dict(getattr(routed[name], method, {}) or routed[name].fit)
            return out
        out = {name: {} for name in names}
        for key, value in params.items():
            step, sep, param = key.partition("__")
            if not sep or step not in out:
                raise ValueError(
                    f"Fit parameter {key!r} does not name a step: pass 'step__param' with a "
                    f"step among {names} (or enable metadata routing)."
                )
            out[step][param] = value
        return out

    @staticmethod
    def _fit_step(est: Any, X: Any, y: Any, params: dict[str, Any], final: str | None) -> Any:
        if final == "fit":
            est.fit(X, y, **params)
            return None
        if final == "fit_predict":
            return est.fit_predict(X, y, **params)
        if hasattr(est, "fit_transform"):
            return est.fit_transform(X, y, **params)
        return est.fit(X, y, **params).transform(X)

    def _log_final(
        self,
        run: store.StageRun,
        est: Any,
        X: Any,
        y: Any,
        params: dict[str, Any],
        stages: list[tuple[str, str, bytes]],
        modules: set[str],
    ) -> None:
        metrics: dict[str, float] = {}
        tags: dict[str, str] = {}
        search = getattr(est, "cv_results_", None)
        if search is not None and hasattr(est, "best_params_"):
            run.log(
                params={f"{schema.BEST_PARAM_PREFIX}{k}": v for k, v in est.best_params_.items()}
            )
            if hasattr(est, "best_score_"):
                metrics[schema.BEST_SCORE] = float(est.best_score_)
            table = pd.DataFrame(
                {
                    k: v if np.asarray(v).dtype.kind in "biuf" else [str(x) for x in v]
                    for k, v in search.items()
                }
            )
            run.client.log_table(run.run_id, data=table, artifact_file=schema.CV_RESULTS)
            tags[schema.EVALUATION] = "best_score_ of the search (its own cross-validation)"
        elif y is not None and self.cv is not None and (is_classifier(est) or is_regressor(est)):
            metrics.update(self._cross_validate(est, X, y, params, tags))
        if y is not None and hasattr(est, "score"):
            # X is already prepared: skip LineagePipeline.score's second pass over it.
            metrics[schema.TRAINING_SCORE] = float(Pipeline.score(self, X, y))
        if self.log_model and (hasattr(est, "predict") or hasattr(est, "transform")):
            fitted = Pipeline([(n, e) for n, e in self.steps])
            self.model_uri_ = log_raw_model(
                run_id=run.run_id,
                experiment_id=run.experiment_id,
                stages=stages,
                modules=modules,
                fitted=fitted,
                X=X,
                dtypes=self.input_dtypes_,
            )
            tags[schema.MODEL_URI] = self.model_uri_
        run.log(metrics=metrics, tags=tags)
        self._log_graph(run)

    def _cross_validate(
        self, est: Any, X: Any, y: Any, params: dict[str, Any], tags: dict[str, str]
    ) -> dict[str, float]:
        splitter = check_cv(self.cv, y, classifier=is_classifier(est))
        n_splits = splitter.get_n_splits(X, y)
        n_rows = X.shape[0] if hasattr(X, "shape") else len(np.asarray(X))
        if n_rows < 2 * n_splits:
            tags[schema.EVALUATION] = f"skipped: {n_rows} rows are too few for {n_splits} folds"
            return {}
        scoring = self.scoring or (
            _CLASSIFIER_SCORING if is_classifier(est) else _REGRESSOR_SCORING
        )
        chain = Pipeline([(n, clone(e) if e not in _SKIPPED else e) for n, e in self.steps])
        result = cross_validate(chain, X, y, cv=splitter, scoring=scoring, params=params)
        tags[schema.EVALUATION] = (
            f"{n_splits}-fold cross-validation ({type(splitter).__name__}), "
            "the whole chain refitted on each fold"
        )
        metrics = {}
        for key, values in result.items():
            if key.startswith("test_"):
                scorer = key[len("test_") :]
                metrics[f"{schema.CV_PREFIX}{scorer}_mean"] = float(np.mean(values))
                metrics[f"{schema.CV_PREFIX}{scorer}_std"] = float(np.std(values))
        return metrics

    # --- using a fitted pipeline: raw input gets the same treatment as in training ---

    def _raw(self, X: Any) -> Any:
        return prepare(X, getattr(self, "input_dtypes_", None))

    @available_if(_final_has("predict"))
    def predict(self, X: Any, **params: Any) -> Any:
        """Predict from raw data; missing values are normalised as in training."""
        return super().predict(self._raw(X), **params)

    @available_if(_final_has("predict_proba"))
    def predict_proba(self, X: Any, **params: Any) -> Any:
        """Class probabilities for raw data."""
        return super().predict_proba(self._raw(X), **params)

    @available_if(_final_has("predict_log_proba"))
    def predict_log_proba(self, X: Any, **params: Any) -> Any:
        """Log class probabilities for raw data."""
        return super().predict_log_proba(self._raw(X), **params)

    @available_if(_final_has("decision_function"))
    def decision_function(self, X: Any, **params: Any) -> Any:
        """Decision function for raw data."""
        return super().decision_function(self._raw(X), **params)

    @available_if(_final_has("score_samples"))
    def score_samples(self, X: Any) -> Any:
        """Score samples of raw data."""
        return super().score_samples(self._raw(X))

    @available_if(_final_has("transform"))
    def transform(self, X: Any, **params: Any) -> Any:
        """Transform raw data through every step."""
        return super().transform(self._raw(X), **params)

    @available_if(_final_has("score"))
    def score(self, X: Any, y: Any = None, sample_weight: Any = None, **params: Any) -> float:
        """Score on raw data, as the final step's ``score`` does."""
        return super().score(self._raw(X), y, sample_weight=sample_weight, **params)

    def __getitem__(self, ind: Any) -> Any:
        """Index or slice as :class:`~sklearn.pipeline.Pipeline` does.

        A slice is a LineagePipeline with the same mlpipe settings.
        """
        item = super().__getitem__(ind)
        if isinstance(ind, slice):
            own = ("transform_input", "project", "log_model", "cv", "scoring", "cache", "types")
            item.set_params(**{name: getattr(self, name) for name in own})
        return item


def _flat_params(est: Any) -> dict[str, Any]:
    """The step's parameters, nested ones flattened; sub-estimators named by class."""
    return dict(sorted(est.get_params(deep=True).items()))
