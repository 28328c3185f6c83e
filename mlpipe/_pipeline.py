"""LineagePipeline: a scikit-learn Pipeline whose every stage is an MLflow run.

This module is the estimator surface only: parameters, their validation, the
decision whether a fit is logged, and the fitted attributes. The logging itself is
:mod:`mlpipe._chain`'s, the evaluation :mod:`mlpipe._evaluation`'s.
"""

from __future__ import annotations

import logging
from numbers import Integral
from typing import Any

from sklearn import get_config
from sklearn.base import _fit_context
from sklearn.metrics import get_scorer_names
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metadata_routing import process_routing
from sklearn.utils.metaestimators import available_if

from mlpipe import schema
from mlpipe._chain import SKIPPED, LoggedChain, Settings, check_type, fit_unlogged, log_chain
from mlpipe._evaluation import IN_EVALUATION
from mlpipe._progress import SEARCH_SPLIT_TASK
from mlpipe.data._dataset import Dataset
from mlpipe.exceptions import StageError
from mlpipe.model._package import check_model_name, dtypes_of
from mlpipe.model._raw import prepare
from mlpipe.tracking._models import check_registered_model_name
from mlpipe.tracking._store import check_name

__all__ = ["LineagePipeline"]

logger = logging.getLogger("mlpipe")

# Searches already told that their candidates' fits are not logged (by the root
# task of their callback context), so that the warning comes once per search.
_warned_searches: set[Any] = set()


def _final_has(attr: str) -> Any:
    def check(self: LineagePipeline) -> bool:
        final = self.steps[-1][1]
        if attr in ("transform", "fit_transform") and final in SKIPPED:
            return True
        if attr == "fit_transform":
            return hasattr(final, "transform") or hasattr(final, "fit_transform")
        return hasattr(final, attr)

    return check


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
        Also print each stage's line (its key, fitted or reused, and the time) to
        standard output; the line always goes to the ``mlpipe`` logger at INFO.
    project : str, optional
        Prefix of the experiment names: ``"credit"`` logs to ``credit/load``,
        ``credit/processing``, ...
    log_model : bool, default=True
        Log the raw-input pyfunc model on the final stage.
    cv : int, cross-validation generator, iterable or None, default=5
        How the final stage is evaluated: the whole chain is refitted and scored on each
        fold, as :func:`sklearn.model_selection.cross_validate` does, so no score comes
        from data a stage saw in training. A non-final stage's fold that took at least
        half a second is kept on that stage's run, keyed on the stage's cache key and
        the fold's rows, and read back by any later fit of the same stage on the same
        folds (a refit with another final step, another process or machine on the same
        store) instead of being fitted again; the predictions are bit-identical. (Not
        with ``serializer="skops"``, which never unpickles, nor with a ``scoring``
        callable, which may need the whole chain.) The same fitted folds also predict
        their test rows, and from these out-of-fold predictions the final stage's run
        gets plots under ``evaluation/``: for a classifier the confusion matrix and,
        when it has ``predict_proba`` or ``decision_function``, the ROC and
        precision-recall curves (one-vs-rest, one curve per class, for more than two
        classes); for a regressor the residuals against the predictions. The predictions
        themselves are logged as the MLflow table ``evaluation/predictions.json``, one
        row per training row when the folds partition the data: its position (``row``),
        ``fold``, ``target``, ``prediction`` and each class's ``proba_<class>`` (or
        ``decision_<class>`` when the model has no ``predict_proba``); a random 100,000
        of them when there are more. Nothing is fitted for the plots beyond the folds.
        ``None`` skips the evaluation, as do too few rows for the folds. A search used
        as the final step is not evaluated again: its ``best_score_`` is logged instead.
    scoring : str, callable, list or dict, optional
        Scorers for the evaluation, as in ``cross_validate``. By default accuracy,
        balanced accuracy and macro F1 for a classifier, R², RMSE and MAE for a
        regressor.
    cache : bool, default=True
        Reuse a stage already fitted on the same inputs with the same code and
        parameters (a FINISHED run with the same cache key) instead of refitting it.
    types : dict of str to str, optional
        The type of each stage run, by step name (``{"processing": "plain",
        "model": "logreg"}``): it starts the runs' names and stage keys
        (``plain@20190209143000``) and is what ``mlpipe.runs(type=...)`` and
        ``mlpipe.find_chain(logic=..., algorithm=...)`` look for. Each must be
        a letter or digit, then letters, digits, ``_``, ``.``, ``+`` or ``-``, at
        most 100 characters, and name a step. A step not named here gets its
        class name (for a ``Pipeline``, a short form of its steps' class names:
        see :doc:`/concepts`, "Type").
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
    log : {"auto", True, False}, default="auto"
        Whether a fit is logged. ``True``: always. ``False``: never; the pipeline
        then fits as a plain :class:`~sklearn.pipeline.Pipeline` and its
        ``run_ids_`` is empty. ``"auto"``: every fit is logged except the fits that
        are one split of an evaluation, which would flood the store with a chain
        per fold: the folds of mlpipe's own ``cv`` evaluation, and the candidates
        a scikit-learn search (``GridSearchCV``, ``RandomizedSearchCV``, ...) fits
        on each split, which scikit-learn's callback context names
        ``candidate-split-evaluation``; the search's refit on all the data is
        logged. :func:`~sklearn.model_selection.cross_validate` and
        :func:`~sklearn.model_selection.cross_val_score` give their fits no such
        context, so under ``"auto"`` each of their folds is logged: pass
        ``log=False`` to cross-validate a LineagePipeline yourself. A fit that is
        not logged says so, and why, on the ``mlpipe`` logger (INFO; WARNING,
        once per search, for the candidates of a search). See
        :doc:`/concepts`.
    trusted_users : list of str, optional
        Reuse only cached stages whose runs (and the runs they reuse from) were
        created by one of these users, as MLflow records them in the tag
        ``mlflow.user``; the load run that ``fit(X, y)`` would reuse too. A cache hit
        created by anyone else is fitted again instead, with an INFO line on the
        ``mlpipe`` logger saying why. By default every run in the store is trusted:
        anyone who can write to it can plant a stage that your next fit loads. MLflow
        does not check the name a client gives, so this keeps out mistakes and
        honest colleagues' runs, not a writer who claims your name. Kept fold
        outputs (see ``cv``) are read only when one of these users wrote them. See
        :doc:`/caching`, "What the cache trusts".
    n_jobs : int, optional
        How many folds of the ``cv`` evaluation are fitted at once, in joblib's
        backend (worker processes by default), as scikit-learn reads ``n_jobs``:
        ``-1`` is every core, ``1`` one fold after another. ``None`` takes
        ``joblib.parallel_config(n_jobs=...)`` when one is active, and otherwise
        lets mlpipe choose: every core (at most one per fold) when the folds
        would take a second or more one after another (judged by how long the
        chain took to fit once), one at a time below that, where starting workers
        would cost more than it saves. At most ``n_jobs`` folds' data are
        in memory at once. Results do not depend on it.
    model_name : str, optional
        The name of the raw-input model (MLflow's LoggedModel), as the UI lists it.
        By default ``<project or data name>-<final stage type>``
        (``credit-LogisticRegression``), with the characters MLflow refuses in a
        model name (``/ : . %`` and quotes) replaced by ``-``. The model also
        carries the chain: the stage runs' ids and keys, the data fingerprint, the
        cache keys and mlpipe's version, as tags (``mlpipe.chain``) and parameters;
        its scores are logged with its id and the training dataset. See
        :doc:`/registry`.
    registered_model_name : str, optional
        Also register the raw-input model as a new version of this registered
        model (created on first use), with the chain on the version's tags; a
        final stage reused from an earlier run keeps the version it already has
        under that name. Serve or load it as ``models:/<name>/<version>``, or by
        alias once :func:`mlpipe.promote` has set one. See :doc:`/registry`.

    Attributes
    ----------
    run_ids_ : dict of str to str
        The run id of each stage, ``"load"`` first. Empty when the fit was not
        logged (see ``log``).
    model_uri_ : str or None
        URI of the raw-input pyfunc model, for ``mlflow.pyfunc.load_model`` and
        ``mlflow models serve``; None when no model was logged.
    reused_ : list of str
        The stages taken from earlier runs instead of being refitted.
    model_version_ : str or None
        The registered version of the model (see ``registered_model_name``), else None.
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

    steps: list[tuple[str, Any]]
    _parameter_constraints: dict = {
        **Pipeline._parameter_constraints,
        "project": [str, None],
        "log_model": ["boolean"],
        "cv": ["cv_object", None],
        "scoring": [StrOptions(set(get_scorer_names())), callable, list, tuple, dict, None],
        "cache": ["boolean"],
        "types": [dict, None],
        "serializer": [StrOptions({"cloudpickle", "skops"})],
        "log": [StrOptions({"auto"}), "boolean"],
        "trusted_users": [list, tuple, None],
        "n_jobs": [Integral, None],
        "model_name": [str, None],
        "registered_model_name": [str, None],
    }

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
        log: bool | str = "auto",
        trusted_users: list[str] | None = None,
        n_jobs: int | None = None,
        model_name: str | None = None,
        registered_model_name: str | None = None,
    ):
        super().__init__(steps, transform_input=transform_input, memory=memory, verbose=verbose)
        self.project = project
        self.log_model = log_model
        self.cv = cv
        self.scoring = scoring
        self.cache = cache
        self.types = types
        self.serializer = serializer
        self.log = log
        self.trusted_users = trusted_users
        self.n_jobs = n_jobs
        self.model_name = model_name
        self.registered_model_name = registered_model_name

    # --- fitting -------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=False)
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
        sklearn.utils._param_validation.InvalidParameterError
            If a parameter has a value of the wrong type or outside its options.
        StageError
            If the pipeline is set up in a way mlpipe cannot log.
        TrackingError
            If the tracking store fails; it names the stage.
        Exception
            Whatever a step raises; that step's run is ended FAILED first.
        """
        self._fit_chain(X, y, params, final="fit")
        return self

    @available_if(_final_has("fit_transform"))
    @_fit_context(prefer_skip_nested_validation=False)
    def fit_transform(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Fit every step as :meth:`fit` does and return the transformed training data."""
        return self._fit_chain(X, y, params, final="fit_transform")

    @available_if(_final_has("fit_predict"))
    @_fit_context(prefer_skip_nested_validation=False)
    def fit_predict(self, X: Any, y: Any = None, **params: Any) -> Any:
        """Fit every step as :meth:`fit` does and return the final step's ``fit_predict``."""
        return self._fit_chain(X, y, params, final="fit_predict")

    def _fit_chain(self, X: Any, y: Any, params: dict[str, Any], *, final: str) -> Any:
        """Fit (logging or not), then set every fitted attribute here, in one place."""
        # As Pipeline.fit does: the root of this fit's callback context, which also
        # tells whether a meta-estimator fits this pipeline on one split.
        context = self._init_callback_context(max_subtasks=0)
        context.call_on_fit_task_begin(estimator=self, X=X, y=y)
        # A fit that fails leaves no attribute of an earlier fit behind.
        self.run_ids_: dict[str, str] = {}
        self.reused_: list[str] = []
        self.model_uri_: str | None = None
        self.model_version_: str | None = None
        dataset = None
        if isinstance(X, Dataset):
            if y is not None:
                raise TypeError("fit(dataset) takes the target from the dataset; pass y=None.")
            dataset, X, y = X, X.X, X.y
        self._validate_steps()
        self._check_settings()
        raw_X, X = X, prepare(X, None)
        input_dtypes = dtypes_of(X)
        routed = self._route(params, final)
        logged, why_not = self._decide_logging(context)
        if logged:
            chain = log_chain(
                self.steps,
                X,
                y,
                raw_X=raw_X,
                dataset=dataset,
                params=params,
                routed=routed,
                final=final,
                settings=self._settings(),
                input_dtypes=input_dtypes,
            )
        else:
            logger.info("LineagePipeline fit not logged: %s.", why_not)
            output = fit_unlogged(self.steps, X, y, routed, final)
            chain = LoggedChain(self.steps, {}, [], None, output)
        for i, step in enumerate(chain.steps):
            if step[1] is not self.steps[i][1]:  # a stage reused: its fitted object
                self.steps[i] = step
        self.input_dtypes_ = input_dtypes
        self.run_ids_ = chain.run_ids
        self.reused_ = chain.reused
        self.model_uri_ = chain.model_uri
        self.model_version_ = chain.model_version
        context.call_on_fit_task_end(estimator=self, X=X, y=y)
        return chain.output

    def _decide_logging(self, context: Any) -> tuple[bool, str]:
        """Whether this fit is logged and, when not, why (see ``log``)."""
        if self.log is True:
            return True, ""
        if self.log is False:
            return False, "log=False"
        if IN_EVALUATION.get():
            return False, "it fits one fold of mlpipe's own cross-validation (log='auto')"
        if context.source_task_name == SEARCH_SPLIT_TASK:
            search = context.source_estimator_name
            reason = (
                f"{search} fits it as one candidate on one split (log='auto'); "
                "the search's refit with the best parameters is logged"
            )
            if context.root_uuid not in _warned_searches:
                _warned_searches.add(context.root_uuid)
                logger.warning("LineagePipeline fits not logged: %s.", reason)
            return False, reason
        return True, ""

    def _settings(self) -> Settings:
        return Settings(
            project=self.project,
            log_model=self.log_model,
            cv=self.cv,
            scoring=self.scoring,
            cache=self.cache,
            types=self.types,
            serializer=self.serializer,
            verbose=self.verbose,
            trusted_users=None if self.trusted_users is None else tuple(self.trusted_users),
            n_jobs=self.n_jobs,
            model_name=self.model_name,
            registered_model_name=self.registered_model_name,
        )

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
        # Model names are MLflow's to refuse, after the fit: checked before it.
        if self.model_name is not None:
            check_model_name(self.model_name)
        if self.registered_model_name is not None:
            check_registered_model_name(self.registered_model_name)
        if self.registered_model_name is not None and not self.log_model:
            raise StageError(
                f"registered_model_name={self.registered_model_name!r} registers the logged "
                "model, but log_model=False logs none. Set log_model=True, or leave "
                "registered_model_name None."
            )
        names = [name for name, _ in self.steps]
        # Names become experiment names and folders: checked before anything runs.
        for name in names:
            check_name(name, "step name")
        if self.project is not None:
            check_name(self.project, "project")
        if schema.LOAD_STAGE in names:
            raise StageError(
                f"Step name {schema.LOAD_STAGE!r} is reserved for the data's load stage; "
                f"got steps {names}. Rename that step."
            )
        # A type names runs and stage keys: checked before anything runs.
        for step, type_ in (self.types or {}).items():
            if step not in names:
                raise StageError(
                    f"types= names step {step!r}, which is not a step of this pipeline; "
                    f"its steps are {names}."
                )
            check_type(type_, step)
        if self.trusted_users is not None and not all(
            isinstance(user, str) and user for user in self.trusted_users
        ):
            raise StageError(
                "trusted_users must list user names, as MLflow records them in the tag "
                f"'{schema.MLFLOW_USER}' (non-empty strings); got {self.trusted_users!r}."
            )
        if self.serializer == "skops":
            from mlpipe.model._skops import check_steps

            # Before anything is logged: a class skops would refuse fails the fit now.
            check_steps(self.steps)

    def _route(self, params: dict[str, Any], final: str) -> dict[str, dict[str, Any]]:
        """The fit parameters of each step, keyed by step name."""
        names = [name for name, _ in self.steps]
        last = len(self.steps) - 1
        if get_config().get("enable_metadata_routing"):
            routed = process_routing(self, "fit", **params)
            out = {}
            for i, (name, est) in enumerate(self.steps):
                if est in SKIPPED:
                    continue
                method = final if i == last else "fit_transform"
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
                "log",
                "trusted_users",
                "model_name",
                "registered_model_name",
            )
            item.set_params(**{name: getattr(self, name) for name in own})
            if self.types is not None:  # only the slice's own steps can be named
                kept = {name for name, _ in item.steps}
                item.set_params(types={k: v for k, v in self.types.items() if k in kept})
        return item
