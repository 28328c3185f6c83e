"""LineagePipeline: a scikit-learn Pipeline whose every stage is an MLflow run."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import pickle
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn import get_config
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import check_cv, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.utils import indexable
from sklearn.utils.metadata_routing import process_routing
from sklearn.utils.metaestimators import available_if

from mlpipe._cache import (
    Uncacheable,
    cache_key,
    data_key,
    fitting_run,
    load_step,
    lookup,
    stage_file,
    stored_output,
)
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
from mlpipe.exceptions import SerializationError, StageError
from mlpipe.model._package import dtypes_of, log_raw_model
from mlpipe.model._raw import prepare
from mlpipe.model._serialize import dumps, referenced_modules
from mlpipe.tracking import _schema as schema
from mlpipe.tracking import _store as store
from mlpipe.tracking._query import lineage

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["LineagePipeline"]

logger = logging.getLogger("mlpipe")

_CLASSIFIER_SCORING = ("accuracy", "balanced_accuracy", "f1_macro")
_REGRESSOR_SCORING = ("r2", "neg_root_mean_squared_error", "neg_mean_absolute_error")
_SKIPPED = (None, "passthrough")
_SERIALIZERS = ("cloudpickle", "skops")
# The out-of-fold predictions table is for reading, not for analysis at scale.
_MAX_PREDICTION_ROWS = 100_000
# Points drawn in the residual plot; more only blur into one cloud.
_MAX_RESIDUAL_POINTS = 10_000


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
        comes from data a stage saw in training. The same fitted folds also predict
        their test rows, and from these out-of-fold predictions the final stage's
        run gets plots under ``evaluation/``: for a classifier the confusion matrix
        and, when it has ``predict_proba`` or ``decision_function``, the ROC and
        precision-recall curves (one-vs-rest, one curve per class, for more than
        two classes); for a regressor the residuals against the predictions. The
        predictions themselves are logged as the MLflow table
        ``evaluation/predictions.json``, one row per training row when the folds
        partition the data: its position (``row``), ``fold``, ``target``,
        ``prediction`` and each class's ``proba_<class>`` (or ``decision_<class>``
        when the model has no ``predict_proba``); a random 100,000 of them when
        there are more. Nothing is fitted for the plots beyond the folds. ``None``
        skips the evaluation, as do too few rows for the folds. A search used as
        the final step is not evaluated again: its ``best_score_`` is logged
        instead.
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
    serializer : {"cloudpickle", "skops"}, default="cloudpickle"
        How fitted steps are saved, in the stage runs and in the raw-input model.
        ``"cloudpickle"`` takes any step (falling back to dill), but loading the
        model, or reusing a cached stage, unpickles and so runs code from the
        store. ``"skops"`` saves each step with :func:`skops.io.dump`, loads it
        only after checking that every type in it is one skops trusts
        (scikit-learn, numpy, scipy) or on mlpipe's short allow-list, and logs
        the model as code rather than as a pickle: loading it unpickles nothing.
        A step of any other class (your own, a tree-based model that skops
        distrusts) then raises :class:`~mlpipe.exceptions.SerializationError`,
        before anything is logged when the class is already visible unfitted.
        Stages are reused only from runs saved the same way. See
        :doc:`/pyfunc`.

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
        serializer: str = "cloudpickle",
    ):
        super().__init__(steps, transform_input=transform_input, memory=memory, verbose=verbose)
        self.project = project
        self.log_model = log_model
        self.cv = cv
        self.scoring = scoring
        self.cache = cache
        self.types = types
        self.serializer = serializer

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
        self.reused_: list[str] = []
        if _fitted_by_meta_estimator():
            Xt = X
            for i, name, est in self._active_steps():
                Xt = self._fit_step(est, Xt, y, routed[name], final if i == self._last else None)
            return Xt
        with store.reporting() as where:
            return self._log_chain(X, y, raw_X, dataset, params, routed, final, where)

    def _log_chain(
        self,
        X: Any,
        y: Any,
        raw_X: Any,
        dataset: Dataset | None,
        params: dict[str, Any],
        routed: Any,
        final: str,
        where: store.Where,
    ) -> Any:
        """Fit or reuse each stage, logging it as a run; ``where.stage`` follows along."""
        client = store.client()
        where.stage = schema.LOAD_STAGE
        if dataset is None:
            frame, target = as_frame(raw_X, y)
            if self.cache:
                dataset = find_frame_load(client, frame, target=target, project=self.project)
            if dataset is None:
                dataset = log_load(
                    frame, name="frame", source="frame:fit", target=target, project=self.project
                )
        experiments = {
            name: store.get_or_create_experiment(client, store.experiment_name(name, self.project))
            for _, name, _ in self._active_steps()
        }
        store.end_abandoned_runs(client, list(experiments.values()))
        inputs = training_inputs(client, dataset)
        self.run_ids_ = {schema.LOAD_STAGE: ",".join(run_id for _, run_id in dataset.loads)}
        upstream = [(schema.LOAD_STAGE, key, run_id) for key, run_id in dataset.loads]
        upstream_key = data_key(dataset.fingerprint, dataset.target)
        common_tags = {schema.VERSION: __version__}
        commit = store.git_commit()
        if commit:
            common_tags[schema.GIT_COMMIT] = commit
        stages: list[tuple[str, str, bytes]] = []
        modules: set[str] = set()
        # Reused stages are applied to the data only when a later stage must be fitted:
        # an identical refit transforms nothing.
        data_in = _LazyData(X)
        for i, name, est in self._active_steps():
            where.stage = name
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
                hit = lookup(
                    client,
                    experiments[name],
                    key,
                    need_model=i == self._last and self.log_model,
                )
            loaded = self._load_cached(client, hit) if hit is not None else None
            if hit is not None and loaded is not None:
                est, data, serializer, owner = loaded
                self.steps[i] = (name, est)
                stages.append((name, serializer, data))
                modules |= referenced_modules(data, serializer)
                self.reused_.append(name)
                if method is None or method == "fit_transform":
                    data_in.defer(est, owner)
                run_id, run_key = self._reuse(
                    client, hit, name, type_, upstream, inputs, tags, experiments[name]
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
                    experiment_id=experiments[name],
                ) as run:
                    log_training_input(client, run.run_id, inputs)
                    Xt = data_in.value()
                    start = time.perf_counter()
                    out = self._fit_step(est, Xt, y, routed[name], method)
                    seconds = time.perf_counter() - start
                    if self.verbose:
                        logger.info("Fitted stage %s (%s) in %.2f s", name, run.key, seconds)
                    data, serializer, found = dumps(est, self.serializer)
                    stages.append((name, serializer, data))
                    modules |= found
                    with tempfile.TemporaryDirectory() as tmp:
                        path = Path(tmp, stage_file(serializer))
                        path.write_bytes(data)
                        client.log_artifact(run.run_id, str(path), schema.STAGE_ARTIFACT)
                        # The stored output is a pickle: never with skops.
                        if (
                            method is None
                            and seconds >= _OUTPUT_CACHE_SECONDS
                            and serializer != "skops"
                        ):
                            _log_output(run, out, Path(tmp))
                    run.log(
                        params=_flat_params(est),
                        metrics={schema.FIT_TIME: seconds},
                        tags={schema.SERIALIZER: serializer},
                    )
                    if i == self._last:
                        self._log_final(run, est, X, Xt, y, params, stages, modules)
                    data_in = _LazyData(out)
                run_id, run_key = run.run_id, run.key
            self.run_ids_[name] = run_id
            upstream = [(name, run_key, run_id)]
            upstream_key = key or f"uncached:{run_id}"
        return data_in.value() if final != "fit" else None

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
        if method is not None and (is_classifier(est) or is_regressor(est)):
            # A final predictor's logged evaluation depends on how it is evaluated. (Not
            # a transformer's: it must keep its key when it later sits under a model.)
            fit_params = {**fit_params, "__evaluation__": (self.cv, self.scoring)}
        if self.serializer == "skops":
            # Reusing a stage loads it: a skops pipeline reuses only stages saved with
            # skops (the default keeps the keys it always had).
            fit_params = {**fit_params, "__serializer__": self.serializer}
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
        experiment_id: str,
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
            experiment_id=experiment_id,
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

    def _load_cached(
        self, client: mlflow.MlflowClient, hit: Any
    ) -> tuple[Any, bytes, str, Any] | None:
        """The cached fitted stage (with its bytes, serializer and the run that fitted it),
        or None (the stage is refitted) if it cannot be read, or, with skops, was not
        saved with skops or holds an untrusted type."""
        skops = self.serializer == "skops"
        try:
            owner = fitting_run(client, hit)
            est, data, serializer = load_step(owner, skops_only=skops)
            if serializer == "skops" and not skops:
                # The default model unpickles every step: give it a pickle.
                data, serializer, _ = dumps(est)
            return est, data, serializer, owner
        except (
            MlflowException,
            OSError,
            pickle.UnpicklingError,
            AttributeError,
            ImportError,
            SerializationError,
        ) as error:
            logger.warning("Cannot reuse run %s, refitting: %s", hit.info.run_id, error)
            return None

    def _log_graph(self, run: store.StageRun) -> None:
        # Drawn while the run is still open: show it as it will end, FINISHED.
        entries = [
            dataclasses.replace(e, status="FINISHED") if e.run_id == run.run_id else e
            for e in lineage(run.run_id)
        ]
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
        if self.serializer not in _SERIALIZERS:
            raise StageError(
                f"serializer must be one of {list(_SERIALIZERS)}, got {self.serializer!r}."
            )
        if self.serializer == "skops":
            from mlpipe.model._skops import check_steps

            # Before anything is logged: a class skops would refuse fails the fit now.
            check_steps(self.steps)

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
        Xt: Any,
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
            metrics.update(self._cross_validate(run, est, X, y, params, tags))
        if y is not None and hasattr(est, "score"):
            # What Pipeline.score computes, on the final step's input already at hand.
            metrics[schema.TRAINING_SCORE] = float(est.score(Xt, y))
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
                serializer=self.serializer,
            )
            tags[schema.MODEL_URI] = self.model_uri_
        run.log(metrics=metrics, tags=tags)
        self._log_graph(run)

    def _cross_validate(
        self,
        run: store.StageRun,
        est: Any,
        X: Any,
        y: Any,
        params: dict[str, Any],
        tags: dict[str, str],
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
        predictions = _out_of_fold(fitted, test_rows, X, y, classes=_classes(est, y), failed=failed)
        del fitted
        tags[schema.EVALUATION] = (
            f"{n_splits}-fold cross-validation ({type(splitter).__name__}), "
            "the whole chain refitted on each fold"
        )
        if isinstance(predictions, str):
            tags[schema.EVALUATION] += f"; no evaluation plots: {predictions}"
        else:
            kept = _log_evaluation(run, predictions)
            tags[schema.EVALUATION] += (
                f"; out-of-fold plots and predictions in {schema.EVALUATION_DIR}/"
            )
            if failed:
                tags[schema.EVALUATION] += (
                    f" (none for the rows of fold(s) {', '.join(map(str, failed))}, "
                    "whose fit failed)"
                )
            if kept < len(predictions.rows):
                tags[schema.EVALUATION] += (
                    f" ({schema.PREDICTIONS} holds a random {kept} of "
                    f"{len(predictions.rows)} predictions)"
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
            own = (
                "transform_input",
                "project",
                "log_model",
                "cv",
                "scoring",
                "cache",
                "types",
                "serializer",
            )
            item.set_params(**{name: getattr(self, name) for name in own})
        return item


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


def _flat_params(est: Any) -> dict[str, Any]:
    """The step's parameters, nested ones flattened; sub-estimators named by class."""
    return dict(sorted(est.get_params(deep=True).items()))


# A non-final stage whose fit took this long also stores its output, so that reusing
# it later does not transform the training data again.
_OUTPUT_CACHE_SECONDS = 0.5
_OUTPUT_CACHE_MAX_BYTES = 256 * 2**20


def _log_output(run: store.StageRun, output: Any, folder: Path) -> None:
    data = pickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > _OUTPUT_CACHE_MAX_BYTES:
        return
    path = folder / schema.STAGE_OUTPUT
    path.write_bytes(data)
    run.client.log_artifact(run.run_id, str(path), schema.STAGE_ARTIFACT)
    run.log(tags={schema.OUTPUT: f"{schema.STAGE_ARTIFACT}/{schema.STAGE_OUTPUT}"})


class _LazyData:
    """Training data with reused stages still to apply, applied only when needed."""

    def __init__(self, data: Any):
        self._data = data
        self._pending: list[tuple[Any, Any]] = []

    def defer(self, stage: Any, fitted_by: Any) -> None:
        """Apply ``stage`` (fitted by run ``fitted_by``) when the data is next needed."""
        self._pending.append((stage, fitted_by))

    def value(self) -> Any:
        if not self._pending:
            return self._data
        start = 0
        for index in range(len(self._pending) - 1, -1, -1):
            stored = stored_output(self._pending[index][1])
            if stored is not None:
                self._data, start = stored, index + 1
                break
        for stage, _ in self._pending[start:]:
            self._data = stage.transform(self._data)
        self._pending = []
        return self._data
