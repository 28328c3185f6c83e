"""The chain logger: fit or reuse each stage of a pipeline, logging each as a stage run.

:func:`log_chain` owns everything a logged fit produces (the stage runs, their
upstream links, reuse from the cache, the raw-input model) and *returns* it as a
:class:`LoggedChain`; ``LineagePipeline`` assigns its fitted attributes from that in
one place. :func:`fit_unlogged` fits the same steps without touching MLflow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from sklearn.base import is_classifier, is_regressor
from sklearn.pipeline import Pipeline

from mlpipe import schema
from mlpipe._cache import (
    Uncacheable,
    cache_key,
    data_key,
    digest,
    distrusted,
    fitting_run,
    load_step,
    lookup,
    output_config,
    stage_file,
    stored_output,
)
from mlpipe._compat import quiet
from mlpipe._evaluation import (
    Evaluation,
    FoldSettings,
    StageFolds,
    evaluate,
    fit_step,
    search_results,
)
from mlpipe._graph import render
from mlpipe._promote import register
from mlpipe._recipe import not_seeded, registered_parts, unfitted_copy
from mlpipe._recipe import write as write_recipe
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
from mlpipe.model._package import default_model_name, log_raw_model
from mlpipe.model._serialize import dumps, referenced_modules
from mlpipe.tracking import _store as store
from mlpipe.tracking._notes import Linked, model_note, stage_note
from mlpipe.tracking._query import lineage

__all__ = [
    "LoggedChain",
    "Settings",
    "cache_type",
    "check_type",
    "fit_unlogged",
    "log_chain",
    "stage_type",
]

logger = logging.getLogger("mlpipe")

SKIPPED = (None, "passthrough")
# A non-final stage whose fit took this long also stores its output, so that reusing
# it later does not transform the training data again.
OUTPUT_CACHE_SECONDS = 0.1
OUTPUT_CACHE_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Settings:
    """mlpipe's own parameters of a ``LineagePipeline``, as one value."""

    project: str | None
    log_model: bool
    cv: Any
    scoring: Any
    cache: bool
    types: dict[str, str] | None
    serializer: str
    verbose: bool
    trusted_users: tuple[str, ...] | None = None  # reuse only runs these users created
    n_jobs: int | None = None  # folds evaluated at once (see LineagePipeline)
    model_name: str | None = None  # the raw-input model's name (default_model_name)
    registered_model_name: str | None = None  # register the model as a version of this


@dataclass(frozen=True)
class LoggedChain:
    """What a logged fit produced."""

    steps: list[tuple[str, Any]]  # the fitted steps (reused ones loaded from their runs)
    run_ids: dict[str, str]
    reused: list[str]
    model_uri: str | None
    output: Any  # fit_transform's or fit_predict's result; None for fit
    model_version: str | None = None  # the registered version of the model, if any


# A type names runs and is written into search filters: no '@' (it ends the type in a
# stage key), no quote, no space. The same characters store.safe_type keeps.
_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")
MAX_TYPE_LENGTH = 100
TYPE_RULE = (
    "a letter or digit, then letters, digits, '_', '.', '+' or '-', at most "
    f"{MAX_TYPE_LENGTH} characters"
)
# Steps that only reshape data, left out of a derived type when other steps remain.
_PLUMBING = ("FunctionTransformer",)
# A derived type joins at most this many class names, in at most this many characters;
# a longer Pipeline is named by its first and last classes: ``SimpleImputer..LogisticRegression``.
_MAX_DERIVED_NAMES = 3
_MAX_DERIVED_LENGTH = 60


def check_type(type_: Any, step: str) -> None:
    """Raise StageError unless ``type_`` can be the type of step ``step``'s runs."""
    if not isinstance(type_, str) or not _TYPE.match(type_) or len(type_) > MAX_TYPE_LENGTH:
        raise StageError(
            f"Invalid type {type_!r} for step {step!r} in types=: a type starts the stage "
            f"key 'type@yyyymmddHHMMSS' and is searched for, so it must be {TYPE_RULE}."
        )


def _class_names(estimator: Any) -> list[str]:
    if isinstance(estimator, Pipeline):
        return [n for _, e in estimator.steps if e not in SKIPPED for n in _class_names(e)]
    return [type(estimator).__name__]


def stage_type(estimator: Any) -> str:
    """The type of a stage run whose step ``types=`` does not name: its class name.

    For a Pipeline, the class names of its steps joined with ``+``, without
    FunctionTransformer (unless nothing else is left); beyond three names or 60
    characters, the first and last joined with ``..``.
    """
    names = _class_names(estimator)
    kept = [n for n in names if n not in _PLUMBING] or names
    if not kept:  # a Pipeline of passthrough steps only
        return type(estimator).__name__
    joined = "+".join(kept)
    if len(kept) <= _MAX_DERIVED_NAMES and len(joined) <= _MAX_DERIVED_LENGTH:
        return joined
    return f"{kept[0]}..{kept[-1]}"


def cache_type(estimator: Any) -> str:
    """The type that the cache key of a stage not named by ``types=`` holds.

    Every class name of a Pipeline joined with ``+``: the type such a stage had
    before derived types were shortened, kept in the key so that stages fitted
    then are still reused (the classes are in the key anyway).
    """
    return "+".join(_class_names(estimator))


def _active(steps: list[tuple[str, Any]]) -> list[tuple[int, str, Any]]:
    return [(i, n, e) for i, (n, e) in enumerate(steps) if e not in SKIPPED]


def fit_unlogged(
    steps: list[tuple[str, Any]], X: Any, y: Any, routed: dict[str, dict[str, Any]], final: str
) -> Any:
    """Fit ``steps`` in place as a plain Pipeline would; return the last output."""
    Xt = X
    last = len(steps) - 1
    for i, name, est in _active(steps):
        Xt = fit_step(est, Xt, y, routed[name], final if i == last else None)
    return Xt


def log_chain(
    steps: list[tuple[str, Any]],
    X: Any,
    y: Any,
    *,
    raw_X: Any,
    dataset: Dataset | None,
    params: dict[str, Any],
    routed: dict[str, dict[str, Any]],
    final: str,
    settings: Settings,
    input_dtypes: dict[str, str] | None,
) -> LoggedChain:
    """Fit or reuse each stage of ``steps``, logging each as a stage run.

    ``X`` is the training data with missing values normalised, ``raw_X`` as the
    caller gave it (for the load run). A tracking failure is raised as a
    :class:`~mlpipe.exceptions.TrackingError` naming the stage.
    """
    with store.reporting() as where, quiet():
        return _ChainLogger(steps, settings, where).run(
            X, y, raw_X, dataset, params, routed, final, input_dtypes
        )


class _ChainLogger:
    """One logged fit. Lives for the duration of :func:`log_chain` only."""

    def __init__(self, steps: list[tuple[str, Any]], settings: Settings, where: store.Where):
        self.steps = list(steps)
        self.settings = settings
        self.where = where
        self.client = store.client()
        self.last = len(steps) - 1
        # Of each non-final stage: where its fold outputs are kept, and fit seconds.
        self.fold_stages: dict[str, StageFolds | None] = {}
        self.chain_seconds = 0.0
        self.routed: dict[str, dict[str, Any]] = {}
        # What the model, its version and the runs' descriptions say of the chain:
        # every stage run so far (load first), the training data, and where each
        # stage's runs are.
        self.entries: list[dict[str, str]] = []
        self.dataset: Dataset | None = None
        self.inputs: list[Any] = []
        self.experiments: dict[str, str] = {}
        self.load_links: list[Linked] = []

    def run(
        self,
        X: Any,
        y: Any,
        raw_X: Any,
        dataset: Dataset | None,
        params: dict[str, Any],
        routed: dict[str, dict[str, Any]],
        final: str,
        input_dtypes: dict[str, str] | None,
    ) -> LoggedChain:
        settings, client = self.settings, self.client
        self.routed = routed
        self.where.stage = schema.LOAD_STAGE
        start = time.perf_counter()
        if dataset is None:
            frame, target = as_frame(raw_X, y)
            if settings.cache:
                dataset = find_frame_load(client, frame, target=target, project=settings.project)
                dataset = self._trusted_load(dataset)
            if dataset is None:
                dataset = log_load(
                    frame, name="frame", source="frame:fit", target=target, project=settings.project
                )
                _say(settings, "load", dataset.key, "logged", start)
            else:
                _say(settings, "load", dataset.key, f"reused from run {dataset.run_id}", start)
        experiments = {
            name: store.get_or_create_experiment(
                client, store.experiment_name(name, settings.project)
            )
            for _, name, _ in _active(self.steps)
        }
        # Load runs too: a load whose process died mid-way is ended by the next fit.
        load_experiment = store.get_or_create_experiment(
            client, store.experiment_name(schema.LOAD_STAGE, settings.project)
        )
        store.end_abandoned_runs(client, [load_experiment, *experiments.values()])
        # The load runs' datasets, logged as the inputs of every stage fitted on them,
        # and their experiments, which the descriptions link to.
        load_runs = [client.get_run(run_id) for _, run_id in dataset.loads]
        inputs = training_inputs(load_runs)
        run_ids = {schema.LOAD_STAGE: ",".join(run_id for _, run_id in dataset.loads)}
        reused: list[str] = []
        model_uri: str | None = None
        model_version: str | None = None
        upstream = [(schema.LOAD_STAGE, key, run_id) for key, run_id in dataset.loads]
        upstream_key = data_key(dataset.fingerprint, dataset.target)
        self.dataset, self.inputs, self.experiments = dataset, inputs, experiments
        # What every stage's recipe records of the data the chain was trained on.
        columns = list(X.columns) if isinstance(X, pd.DataFrame) else None
        self.data_recipe = {
            "fingerprint": dataset.fingerprint,
            "target": dataset.target,
            "rows": int(X.shape[0]) if hasattr(X, "shape") else None,
            "columns": columns if columns and all(isinstance(c, str) for c in columns) else None,
            "as": type(X).__name__,
            "loads": len(dataset.loads),
        }
        self.load_links = links = [
            Linked(schema.LOAD_STAGE, key, run.info.run_id, run.info.experiment_id)
            for (key, _), run in zip(dataset.loads, load_runs, strict=True)
        ]
        self.entries = [
            {"stage": schema.LOAD_STAGE, "key": key, "run_id": run_id, "cache_key": upstream_key}
            for key, run_id in dataset.loads
        ]
        common_tags = {schema.VERSION: __version__}
        commit = store.git_commit()
        if commit:
            common_tags[schema.GIT_COMMIT] = commit
        stages: list[tuple[str, str, bytes]] = []
        modules: set[str] = set()
        # Reused stages are applied to the data only when a later stage must be fitted:
        # an identical refit transforms nothing.
        data_in = _LazyData(X)
        for i, name, est in _active(self.steps):
            self.where.stage = name
            start = time.perf_counter()
            is_last = i == self.last
            method = final if is_last else None
            given = (settings.types or {}).get(name)
            type_ = given or stage_type(est)
            key = _stage_cache_key(
                settings, name, given or cache_type(est), est, routed[name], upstream_key, method
            )
            tags = {
                **common_tags,
                schema.CLASS: f"{type(est).__module__}.{type(est).__qualname__}",
                **({schema.CACHE_KEY: key, schema.cache_key_tag(key): name} if key else {}),
            }
            hit = None
            if key is not None:
                hit = lookup(
                    client,
                    experiments[name],
                    key,
                    need_model=is_last and settings.log_model,
                    stage=name,
                    trusted_users=settings.trusted_users,
                )
            loaded = self._load_cached(hit) if hit is not None else None
            if hit is not None and loaded is not None:
                est, data, serializer, owner = loaded
                self.steps[i] = (name, est)
                stages.append((name, serializer, data))
                modules |= referenced_modules(data, serializer)
                reused.append(name)
                if method is None or method == "fit_transform":
                    data_in.defer(est, owner)
                self._note_stage(
                    name, key, owner.info.run_id, hit.data.metrics.get(schema.FIT_TIME)
                )
                run_id, run_key, hit_model = self._reuse(
                    hit,
                    name,
                    type_,
                    upstream,
                    inputs,
                    tags,
                    experiments[name],
                    run_ids,
                    reused,
                    links=links,
                )
                model_uri = hit_model or model_uri
                if is_last and hit_model and settings.registered_model_name:
                    self.entries.append(_entry(name, run_key, run_id, key))
                    model_version = self._register_reused(run_id, hit_model, name)
                _say(settings, name, run_key, f"reused from run {hit.info.run_id}", start)
            else:
                with store.stage_run(
                    client,
                    stage=name,
                    type_=type_,
                    project=settings.project,
                    upstream=upstream,
                    tags=tags,
                    experiment_id=experiments[name],
                ) as run:
                    log_training_input(client, run.run_id, inputs)
                    # The rebuild recipe's estimator: a clone taken before the fit.
                    unfitted, why_no_copy = unfitted_copy(est)
                    seedless = not_seeded(est)
                    if seedless:
                        logger.warning(
                            "Stage %s (%s) is not seeded: %s left at None, so refitting it "
                            "can give other results. Set it to an integer to make the stage "
                            "reproducible.",
                            name,
                            type_,
                            ", ".join(seedless),
                        )
                    # The steps' own code runs now: an error it raises is theirs, and
                    # leaves `fitting` set for reporting() to pass it through.
                    self.where.fitting = True
                    Xt = data_in.value()
                    fit_start = time.perf_counter()
                    out = fit_step(est, Xt, y, routed[name], method)
                    seconds = time.perf_counter() - fit_start
                    self.where.fitting = False
                    self._note_stage(name, key, run.run_id, seconds)
                    data, serializer, found = dumps(est, settings.serializer)
                    stages.append((name, serializer, data))
                    modules |= found
                    with tempfile.TemporaryDirectory() as tmp:
                        # The fitted stage and its rebuild recipe, in one upload.
                        folder = Path(tmp, schema.STAGE_ARTIFACT)
                        folder.mkdir()
                        (folder / stage_file(serializer)).write_bytes(data)
                        recipe_tags = write_recipe(
                            folder,
                            unfitted=unfitted,
                            why_no_copy=why_no_copy,
                            serializer=settings.serializer,
                            modules=found,
                            method=method,
                            fit_params=list(routed[name]),
                            data=self.data_recipe,
                            registry=registered_parts(est),
                            evaluation=(settings.cv, settings.scoring) if is_last else None,
                            seedless=seedless,
                        )
                        client.log_artifacts(run.run_id, str(folder), schema.STAGE_ARTIFACT)
                        # The stored output is a pickle: never with skops.
                        if (
                            method is None
                            and seconds >= OUTPUT_CACHE_SECONDS
                            and serializer != "skops"
                        ):
                            _log_output(run, out, Path(tmp))
                    run.log(
                        params=_flat_params(est),
                        metrics={schema.FIT_TIME: seconds},
                        tags={
                            schema.SERIALIZER: serializer,
                            schema.STAGE_DIGEST: digest(data),
                            **recipe_tags,
                            # The final stage's, with its model, is written with it.
                            **(
                                {}
                                if is_last
                                else {schema.NOTE: self._note(name, type_, est, run.run_id, links)}
                            ),
                        },
                    )
                    if is_last:
                        self.entries.append(_entry(name, run.key, run.run_id, key))
                        model_uri, model_version = self._log_final(
                            run,
                            est,
                            X,
                            Xt,
                            y,
                            params,
                            stages,
                            modules,
                            input_dtypes,
                            type_=type_,
                            links=links,
                        )
                        self._log_graph(run.run_id, {**run_ids, name: run.run_id}, reused)
                    data_in = _LazyData(out)
                run_id, run_key = run.run_id, run.key
                _say(settings, name, run_key, "fitted", start)
            run_ids[name] = run_id
            upstream = [(name, run_key, run_id)]
            links = [Linked(name, run_key, run_id, experiments[name])]
            if not is_last:
                self.entries.append(_entry(name, run_key, run_id, key))
            upstream_key = key or f"uncached:{run_id}"
        output = data_in.value() if final != "fit" else None
        return LoggedChain(self.steps, run_ids, reused, model_uri, output, model_version)

    def _note(
        self,
        name: str,
        type_: str,
        est: Any,
        run_id: str,
        links: list[Linked],
        reused_from: str | None = None,
        model: tuple[str, str, str] | None = None,
        version: tuple[str, str] | None = None,
    ) -> str:
        """The Markdown description of stage ``name``'s run ``run_id``."""
        active = [n for _, n, _ in _active(self.steps)]
        position = active.index(name)
        after = active[position + 1] if position + 1 < len(active) else None
        return stage_note(
            stage=name,
            type_=type_,
            cls=f"{type(est).__module__}.{type(est).__qualname__}",
            run_id=run_id,
            upstream=links,
            downstream=(after, self.experiments[after]) if after else None,
            reused_from=reused_from,
            model=model,
            version=version,
        )

    def _model_note(self, name: str, run_id: str, key: str) -> str:
        """The Markdown description of the raw-input model logged by run ``run_id``."""
        chain = [*self.load_links]
        chain += [
            Linked(e["stage"], e["key"], e["run_id"], self.experiments.get(e["stage"]))
            for e in self.entries
            if e["stage"] != schema.LOAD_STAGE and e["run_id"] != run_id
        ]
        stage = next(n for _, n, _ in reversed(_active(self.steps)))
        chain.append(Linked(stage, key, run_id, self.experiments.get(stage)))
        return model_note(name, chain)

    def _lineage_tags(self) -> dict[str, str]:
        """The chain, as tags of the logged model and of its registered version."""
        dataset = self.dataset
        fingerprints = dataset.fingerprint if dataset is not None else ""
        return {
            schema.CHAIN: json.dumps(self.entries),
            schema.FINGERPRINT: fingerprints,
            schema.VERSION: __version__,
        }

    def _register_reused(self, run_id: str, model_uri: str, name: str) -> str:
        """The registered version of a reused final stage's model: the one it already
        has under that name, else a new one (recorded on the run)."""
        registered = self.settings.registered_model_name
        assert registered is not None
        tags = self.client.get_run(run_id).data.tags
        earlier = tags.get(schema.REGISTERED_VERSION, "")
        if earlier.rpartition("/")[0] == registered:
            return earlier.rpartition("/")[2]
        version_tags = {**self._lineage_tags(), schema.MODEL_URI: model_uri}
        if tags.get(schema.SCORE_METRIC):
            version_tags[schema.SCORE_METRIC] = tags[schema.SCORE_METRIC]
        version = register(
            self.client,
            registered,
            model_id=model_uri.removeprefix("models:/"),
            run_id=run_id,
            tags=version_tags,
        )
        self.client.set_tag(run_id, schema.REGISTERED_VERSION, f"{registered}/{version}")
        return version

    def _note_stage(self, name: str, key: str | None, run_id: str, seconds: float | None) -> None:
        """Remember where a stage's fold outputs are kept and how long it took to fit."""
        self.chain_seconds += seconds or 0.0
        keep = key is not None and self.settings.serializer != "skops"  # never unpickled
        self.fold_stages[name] = StageFolds(key, run_id) if keep and key else None

    def _reuse(
        self,
        hit: Run,
        name: str,
        type_: str,
        upstream: list[tuple[str, str, str]],
        inputs: list[Any],
        tags: dict[str, str],
        experiment_id: str,
        run_ids: dict[str, str],
        reused: list[str],
        *,
        links: list[Linked],
    ) -> tuple[str, str, str | None]:
        """Point at a cached stage run; return (run id, key, model URI) to continue from.

        The cached run itself serves when it sits on the same upstream runs. Otherwise
        (the same data or stage fitted under another run) a new run records this chain
        without refitting: it copies the cached run's parameters, metrics and
        evaluation, names it in ``mlpipe.reused_from``, and loads its fitted stage
        from there.
        """
        hit_tags = hit.data.tags
        model_uri = hit_tags.get(schema.MODEL_URI)
        if hit_tags.get(schema.UPSTREAM, "") == ",".join(r for _, _, r in upstream):
            return hit.info.run_id, hit_tags[schema.KEY], model_uri
        source = hit_tags.get(schema.REUSED_FROM) or hit.info.run_id
        copied = {
            schema.REUSED_FROM: source,
            schema.SERIALIZER: hit_tags[schema.SERIALIZER],
            schema.STAGE_DIGEST: hit_tags[schema.STAGE_DIGEST],
            **({schema.MODEL_URI: model_uri} if model_uri else {}),
            **{k: v for k, v in hit_tags.items() if k.startswith(schema.EVALUATION)},
        }
        with store.stage_run(
            self.client,
            stage=name,
            type_=type_,
            project=self.settings.project,
            upstream=upstream,
            tags={**tags, **copied},
            experiment_id=experiment_id,
        ) as run:
            log_training_input(self.client, run.run_id, inputs)
            metrics = {k: v for k, v in hit.data.metrics.items() if k != schema.KEY_TIME}
            model = None
            if model_uri:
                model_id = model_uri.removeprefix("models:/")
                model = (hit.info.experiment_id, model_id, model_id)
            note = self._note(
                name,
                type_,
                dict(self.steps)[name],
                run.run_id,
                links,
                reused_from=source,
                model=model,
            )
            run.log(params=hit.data.params, metrics=metrics, tags={schema.NOTE: note})
            if model_uri:
                self._log_graph(run.run_id, {**run_ids, name: run.run_id}, reused)
        return run.run_id, run.key, model_uri

    def _trusted_load(self, dataset: Dataset | None) -> Dataset | None:
        """``dataset``, an earlier load run of the frame, unless trusted_users rule it out."""
        if dataset is None or dataset.run_id is None or self.settings.trusted_users is None:
            return dataset
        why = distrusted(self.client.get_run(dataset.run_id), self.settings.trusted_users)
        if why is None:
            return dataset
        logger.info("Stage load: run %s is not reused: %s.", dataset.run_id, why)
        return None

    def _load_cached(self, hit: Run) -> tuple[Any, bytes, str, Run] | None:
        """The cached fitted stage (with its bytes, serializer and the run that fitted it),
        or None (the stage is refitted) if it cannot be read, or, with skops, was not
        saved with skops or holds an untrusted type."""
        skops = self.settings.serializer == "skops"
        try:
            owner = fitting_run(self.client, hit)
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
        input_dtypes: dict[str, str] | None,
        *,
        type_: str,
        links: list[Linked],
    ) -> tuple[str | None, str | None]:
        """Evaluate the final stage and log the raw-input model, and register it when
        asked; return its URI and registered version.

        The model is named, and carries the chain as tags and parameters; its scores
        are logged with its id and the training dataset, so that MLflow's model page
        lists them and the dataset. The run's description links all of it.
        """
        settings = self.settings
        evaluation = Evaluation()
        if getattr(est, "cv_results_", None) is not None and hasattr(est, "best_params_"):
            evaluation = search_results(run, est)
        elif (
            y is not None and settings.cv is not None and (is_classifier(est) or is_regressor(est))
        ):
            upstream = [n for _, n, _ in _active(self.steps)][:-1]
            evaluation = evaluate(
                run,
                self.steps,
                X,
                y,
                routed=self.routed,
                cv=settings.cv,
                scoring=settings.scoring,
                folds=FoldSettings(
                    stages=[self.fold_stages.get(n) for n in upstream],
                    trusted_users=settings.trusted_users,
                    keep_seconds=OUTPUT_CACHE_SECONDS,
                    keep_bytes=OUTPUT_CACHE_MAX_BYTES,
                    n_jobs=settings.n_jobs,
                    chain_seconds=self.chain_seconds,
                ),
            )
        metrics, tags = dict(evaluation.metrics), dict(evaluation.tags)
        threshold = getattr(est, "best_threshold_", None)
        if threshold is not None:
            # A model that tuned its decision threshold (TunedThresholdClassifierCV):
            # the value it chose, comparable across runs like any other metric.
            metrics[schema.BEST_THRESHOLD] = float(threshold)
        if y is not None and hasattr(est, "score"):
            # What Pipeline.score computes, on the final step's input already at hand.
            metrics[schema.TRAINING_SCORE] = float(est.score(Xt, y))
        score_metric = _score_metric(metrics)
        if score_metric:
            tags[schema.SCORE_METRIC] = score_metric
        model_uri = version = None
        model = None
        if settings.log_model and (hasattr(est, "predict") or hasattr(est, "transform")):
            lineage_tags = self._lineage_tags()
            name = settings.model_name or default_model_name(
                settings.project, self.dataset.name if self.dataset else "data", type_
            )
            model_uri = log_raw_model(
                run_id=run.run_id,
                experiment_id=run.experiment_id,
                stages=stages,
                modules=modules,
                fitted=Pipeline(list(self.steps)),
                X=X,
                dtypes=input_dtypes,
                serializer=settings.serializer,
                name=name,
                tags={
                    **lineage_tags,
                    **store.fit_source(),
                    schema.NOTE: self._model_note(name, run.run_id, run.key),
                },
                params=_lineage_params(self.entries, lineage_tags[schema.FINGERPRINT]),
            )
            tags[schema.MODEL_URI] = model_uri
            model_id = model_uri.removeprefix("models:/")
            model = (run.experiment_id, model_id, name)
            if settings.registered_model_name:
                version = register(
                    self.client,
                    settings.registered_model_name,
                    model_id=model_id,
                    run_id=run.run_id,
                    tags={
                        **lineage_tags,
                        schema.MODEL_URI: model_uri,
                        **({schema.SCORE_METRIC: score_metric} if score_metric else {}),
                    },
                )
                tags[schema.REGISTERED_VERSION] = f"{settings.registered_model_name}/{version}"
        tags[schema.NOTE] = self._note(
            self.entries[-1]["stage"],
            type_,
            est,
            run.run_id,
            links,
            model=model,
            version=(settings.registered_model_name, version)
            if settings.registered_model_name and version
            else None,
        )
        if evaluation.log_plots is not None:
            evaluation.log_plots()  # drawn meanwhile, when folds run in parallel
        # With the model's id and the training data's dataset: MLflow's model page lists
        # these scores, and the dataset under "Datasets used". (One dataset per metric:
        # the first load run's, when the data came from several.)
        dataset = self.inputs[0] if model is not None and self.inputs else None
        run.log(metrics=metrics, tags=tags, model_id=model[1] if model else None, dataset=dataset)
        return model_uri, version

    def _log_graph(self, run_id: str, run_ids: dict[str, str], reused: list[str]) -> None:
        # Drawn while the run is still open: show it as it will end, FINISHED.
        entries = [
            dataclasses.replace(e, status="FINISHED") if e.run_id == run_id else e
            for e in lineage(run_id)
        ]
        reused_ids = {run_ids.get(name, "") for name in reused}
        with tempfile.TemporaryDirectory() as tmp:
            path = render(entries, Path(tmp, schema.LINEAGE_GRAPH), reused=reused_ids)
            self.client.log_artifact(run_id, str(path))


def _entry(stage: str, key: str, run_id: str, cache_key: str | None) -> dict[str, str]:
    return {"stage": stage, "key": key, "run_id": run_id, "cache_key": cache_key or ""}


def _lineage_params(entries: list[dict[str, str]], fingerprint: str) -> dict[str, str]:
    """The chain as the logged model's parameters, which its UI page shows as a table."""
    params = {"data.fingerprint": fingerprint} if fingerprint else {}
    for entry in entries:
        stage = entry["stage"]
        suffix = "" if sum(e["stage"] == stage for e in entries) == 1 else f".{entry['run_id']}"
        params[f"{stage}{suffix}.key"] = entry["key"]
        params[f"{stage}{suffix}.run_id"] = entry["run_id"]
        if entry["cache_key"]:
            params[f"{stage}{suffix}.cache_key"] = entry["cache_key"]
    params["mlpipe.version"] = __version__
    return params


def _score_metric(metrics: dict[str, float]) -> str | None:
    """The metric a promotion compares: the first cross-validated mean, else a
    search's best score."""
    for name in metrics:
        if name.startswith(schema.CV_PREFIX) and name.endswith("_mean"):
            return name
    return schema.BEST_SCORE if schema.BEST_SCORE in metrics else None


def _say(settings: Settings, stage: str, key: str | None, what: str, start: float) -> None:
    """One line per stage on the ``mlpipe`` logger (and on stdout when verbose)."""
    line = f"Stage {stage}: {key} {what} in {time.perf_counter() - start:.2f} s"
    logger.info(line)
    if settings.verbose:
        print(f"[LineagePipeline] {line}", flush=True)


def _stage_cache_key(
    settings: Settings,
    name: str,
    type_: str,
    est: Any,
    fit_params: dict[str, Any],
    upstream_key: str,
    method: str | None,
) -> str | None:
    """The stage's cache key, or None when it must be fitted whatever the store holds."""
    if not settings.cache or method == "fit_predict":
        return None
    if method in (None, "fit_transform") and not hasattr(est, "transform"):
        return None
    if method is not None and (is_classifier(est) or is_regressor(est)):
        # A final predictor's logged evaluation depends on how it is evaluated. (Not
        # a transformer's: it must keep its key when it later sits under a model.)
        fit_params = {**fit_params, "__evaluation__": (settings.cv, settings.scoring)}
    if settings.serializer == "skops":
        # Reusing a stage loads it: a skops pipeline reuses only stages saved with
        # skops (the default keeps the keys it always had).
        fit_params = {**fit_params, "__serializer__": settings.serializer}
    try:
        return cache_key(
            stage=name, type_=type_, estimator=est, fit_params=fit_params, upstream=upstream_key
        )
    except Uncacheable as reason:
        logger.info("Stage %s is not cached: %s", name, reason)
        return None


def _flat_params(est: Any) -> dict[str, Any]:
    """The step's parameters, nested ones flattened; sub-estimators named by class."""
    return dict(sorted(est.get_params(deep=True).items()))


def _log_output(run: store.StageRun, output: Any, folder: Path) -> None:
    data = pickle.dumps(output, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > OUTPUT_CACHE_MAX_BYTES:
        return
    path = folder / schema.STAGE_OUTPUT
    path.write_bytes(data)
    run.client.log_artifact(run.run_id, str(path), schema.STAGE_ARTIFACT)
    run.log(
        tags={
            schema.OUTPUT: f"{schema.STAGE_ARTIFACT}/{schema.STAGE_OUTPUT}",
            schema.OUTPUT_DIGEST: digest(data),
            # The output's type follows this setting: it is read back only under the same.
            schema.OUTPUT_CONFIG: output_config(),
        }
    )


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


def _predicts(est: Any) -> bool:
    return bool(is_classifier(est) or is_regressor(est))
