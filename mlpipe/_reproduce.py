"""Rebuild a chain from its lineage and say, stage by stage, whether it comes out the same.

:func:`reproduce` reads the chain upstream of a run, loads the data snapshots
(checking their fingerprints), rebuilds every stage from the recipe it recorded when
it was fitted (see :mod:`mlpipe._recipe`), refits them in order on the snapshot and
compares: each stage's output on the snapshot, the final predictions, then the
logged evaluation. It says why the first difference most likely arose (a stage not
seeded, changed code, a changed package) and logs a ``reproduce`` run fitted on the
run it reproduced.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import platform
import re
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import clone, is_classifier
from sklearn.model_selection import check_cv, cross_validate
from sklearn.pipeline import Pipeline

from mlpipe import schema
from mlpipe._cache import fitting_run, load_step, read_checked
from mlpipe._compat import quiet
from mlpipe._evaluation import fit_step
from mlpipe._recipe import RECIPE_VERSION, rebuild_current
from mlpipe.data._dataset import Dataset
from mlpipe.data._fingerprint import fingerprint
from mlpipe.exceptions import NotFoundError
from mlpipe.model._raw import prepare
from mlpipe.model._serialize import loads
from mlpipe.tracking import _store as store
from mlpipe.tracking._models import model_run
from mlpipe.tracking._query import LineageEntry, _project_of, lineage

__all__ = ["Reproduction", "StageResult", "reproduce"]

IDENTICAL = "identical"
DIFFERS = "differs"
CANNOT_REBUILD = "cannot rebuild"

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclasses.dataclass(frozen=True)
class StageResult:
    """How one stage of the chain reproduced.

    Attributes
    ----------
    stage, key, run_id : str
        The stage run reproduced (for the data: the load run).
    status : {"identical", "differs", "cannot rebuild"}
    reason : str
        How it differs and the most likely cause, or why it cannot be rebuilt, or
        what was compared.
    changed : float or None
        When it differs: the share of rows (predictions) or cells (outputs) that changed.
    largest_difference : float or None
        When it differs: the largest absolute difference of a numeric value.
    """

    stage: str
    key: str
    run_id: str
    status: str
    reason: str
    changed: float | None = None
    largest_difference: float | None = None


@dataclasses.dataclass(frozen=True)
class Reproduction:
    """What :func:`reproduce` found; ``print(report)`` shows it as ``mlpipe reproduce`` does.

    Attributes
    ----------
    ref : str
        The reference reproduced, as given.
    run_id : str
        The stage run it names.
    current_code : bool
        Whether the stages were rebuilt from the code importable now.
    stages : tuple of StageResult
        The data first, then every stage in chain order.
    environment : dict
        What changed since the fit: ``{name: (then, now)}`` for Python, the platform
        and every package a stage's code comes from (None: not installed).
    metrics : dict
        The logged evaluation against the same evaluation now: ``{metric: (logged, now)}``.
    cause : str or None
        The most likely cause of the first difference.
    reproduce_run_id : str or None
        The ``reproduce`` run that recorded this report.
    """

    ref: str
    run_id: str
    current_code: bool
    stages: tuple[StageResult, ...]
    environment: dict[str, tuple[str | None, str | None]]
    metrics: dict[str, tuple[float, float]]
    cause: str | None
    reproduce_run_id: str | None = None

    @property
    def identical(self) -> bool:
        """Whether every stage, the predictions and the metrics came out the same."""
        return self.verdict == IDENTICAL

    @property
    def verdict(self) -> str:
        """``"identical"``, ``"differs"`` or ``"cannot rebuild"`` (the worst stage's status)."""
        statuses = {s.status for s in self.stages}
        if CANNOT_REBUILD in statuses:
            return CANNOT_REBUILD
        if DIFFERS in statuses or any(a != b for a, b in self.metrics.values()):
            return DIFFERS
        return IDENTICAL

    @property
    def first_difference(self) -> StageResult | None:
        """The first stage that did not reproduce identically, if any."""
        return next((s for s in self.stages if s.status != IDENTICAL), None)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able values."""
        return {
            "ref": self.ref,
            "run_id": self.run_id,
            "current_code": self.current_code,
            "verdict": self.verdict,
            "cause": self.cause,
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "environment": {k: list(v) for k, v in self.environment.items()},
            "metrics": {k: list(v) for k, v in self.metrics.items()},
        }

    def __str__(self) -> str:
        code = "the code importable now" if self.current_code else "the recorded code"
        lines = [f"Reproduced {self.ref} (run {self.run_id}) with {code}: {self.verdict}"]
        width = max(len(s.stage) for s in self.stages) if self.stages else 0
        for s in self.stages:
            lines.append(f"  {s.stage:<{width}}  {s.key}  {s.status}: {s.reason}")
        for name, (logged, now) in self.metrics.items():
            same = "same" if logged == now else f"differs by {abs(now - logged):.6g}"
            lines.append(f"  metric {name}: logged {logged:.6g}, now {now:.6g} ({same})")
        if self.environment:
            changes = ", ".join(
                f"{name} {then or 'absent'} -> {now or 'absent'}"
                for name, (then, now) in self.environment.items()
            )
            lines.append(f"  environment changed: {changes}")
        else:
            lines.append("  environment: unchanged (Python, platform and packages)")
        if self.cause:
            lines.append(f"  most likely cause: {self.cause}")
        return "\n".join(lines)


class _CannotRebuild(Exception):
    """A stage cannot be rebuilt; the message says why."""


def reproduce(ref: str, *, current_code: bool = False) -> Reproduction:
    """Rebuild the chain behind ``ref`` from its lineage, refit it and compare.

    Every stage is rebuilt from the recipe recorded when it was fitted: the
    unfitted estimator as it was (classes from a script or a local module
    included), refitted in chain order on the data snapshots of its load runs,
    under the scikit-learn configuration of the fit. Then, stage by stage, its
    output on the snapshot is compared with the original fitted stage's, then the
    final predictions (labels exactly, probabilities and regression values by their
    largest difference), then the logged cross-validated metrics, recomputed the
    same way. A ``reproduce`` run fitted on the reproduced run records the verdict.

    Parameters
    ----------
    ref : str
        A stage run id (usually the final stage's), a model URI (``runs:/<id>/model``,
        ``models:/<model id>``), or a registered model: ``models:/<name>@<alias>``,
        ``models:/<name>/<version>``.
    current_code : bool, default=False
        Rebuild each stage from the code importable now instead of the recorded
        one: each class and function by its module and name, and a stage built by a
        registered logic or algorithm by what is registered under that name now.
        Answers "did our code change alter the model?"

    Returns
    -------
    Reproduction
        ``report.identical``, ``report.stages`` (one per stage, data first),
        ``report.environment`` (what changed), ``report.cause``; ``print(report)``.

    Raises
    ------
    NotFoundError
        If ``ref`` names no stage run or model.

    Examples
    --------
    >>> report = mlpipe.reproduce(pipeline.run_ids_["model"])  # doctest: +SKIP
    >>> report.identical  # doctest: +SKIP
    True
    """
    client = store.client()
    run_id = _run_of(client, ref)
    entries = lineage(run_id)
    loads = [e for e in entries if e.stage == schema.LOAD_STAGE]
    stages = [e for e in entries if e.stage != schema.LOAD_STAGE]
    if not stages:
        raise NotFoundError(f"{ref} is a load run: reproduce a stage fitted on it.")
    recipes: dict[str, dict[str, Any] | str] = {}
    for entry in stages:
        try:
            recipes[entry.run_id] = _recipe(client, entry)
        except _CannotRebuild as error:
            recipes[entry.run_id] = str(error)
    found = [r for r in recipes.values() if isinstance(r, dict)]
    environment = _environment_changes(found)
    results: list[StageResult] = []
    metrics: dict[str, tuple[float, float]] = {}
    changed_code: set[str] = set()
    try:
        data = next((r["data"] for r in found), None)
        X, y = _training_data(loads, data)
        results += [_loaded(e) for e in loads]
    except _CannotRebuild as error:
        results += [_cannot(e, str(error)) for e in loads]
        results += [_cannot(e, "its data cannot be rebuilt") for e in stages]
    else:
        results += _refit(client, stages, recipes, X, y, current_code, metrics, changed_code)
    cause = _cause(results, recipes, environment, changed_code, metrics)
    first = next((r for r in results if r.status == DIFFERS), None)
    results = [
        dataclasses.replace(
            r, reason=f"{cause}; {r.reason}" if r is first else f"its input differs; {r.reason}"
        )
        if r.status == DIFFERS
        else r
        for r in results
    ]
    report = Reproduction(
        ref=ref,
        run_id=run_id,
        current_code=current_code,
        stages=tuple(results),
        environment=environment,
        metrics=metrics,
        cause=cause,
    )
    return dataclasses.replace(report, reproduce_run_id=_log(client, report, stages[-1]))


def _run_of(client: Any, ref: str) -> str:
    """The stage run id that ``ref`` names."""
    text = ref.strip()
    if text.startswith("runs:/"):
        return text.removeprefix("runs:/").split("/")[0]
    if text.startswith("models:/") or ("@" in text and "/" not in text):
        uri = text if text.startswith("models:/") else f"models:/{text}"
        return model_run(uri)[0]
    if _RUN_ID.match(text):
        tags = client.get_run(text).data.tags
        if schema.STAGE not in tags:
            raise NotFoundError(f"Run {text} is not an mlpipe stage run (no {schema.STAGE} tag).")
        fitted = schema.SERIALIZER in tags or schema.REUSED_FROM in tags
        if tags[schema.STAGE] != schema.LOAD_STAGE and not fitted:
            raise NotFoundError(
                f"Run {text} is a {tags[schema.STAGE]} run, not a fitted stage: reproduce "
                f"the run it was made from ({tags.get(schema.UPSTREAM) or 'none'})."
            )
        return text
    raise NotFoundError(
        f"Cannot reproduce {ref!r}: expected a stage run id, runs:/<id>/model, "
        "models:/<model id>, models:/<name>@<alias> or models:/<name>/<version>."
    )


def _recipe(client: Any, entry: LineageEntry) -> dict[str, Any]:
    """The recipe ``entry``'s stage recorded (in the run that fitted it), with its run."""
    run = fitting_run(client, client.get_run(entry.run_id))
    where = f"run {run.info.run_id} ({entry.key})"
    try:
        with quiet():
            text = read_checked(
                run.info.run_id, f"{schema.STAGE_ARTIFACT}/{schema.RECIPE_FILE}", None, ""
            )
    except Exception:
        raise _CannotRebuild(
            f"{where} has no rebuild recipe: it was fitted by mlpipe "
            f"{run.data.tags.get(schema.VERSION, '?')}, before recipes were recorded"
        ) from None
    recipe = dict(json.loads(text))
    if recipe.get("recipe_version") != RECIPE_VERSION:
        raise _CannotRebuild(
            f"{where} recorded recipe version {recipe.get('recipe_version')}, this mlpipe "
            f"reads version {RECIPE_VERSION}"
        )
    recipe["run"] = run
    return recipe


def _training_data(loads: list[LineageEntry], data: dict[str, Any] | None) -> tuple[Any, Any]:
    """The training data as the chain's first stage took it, from the load snapshots."""
    if len(loads) != 1:
        raise _CannotRebuild(
            f"the chain was fitted on a merge of {len(loads)} load runs, and the merge itself "
            "is not recorded"
        )
    (entry,) = loads
    try:
        dataset = Dataset.from_run(entry.run_id)
    except Exception as error:
        raise _CannotRebuild(
            f"the snapshot of load run {entry.run_id} ({entry.key}) cannot be read: {error}"
        ) from None
    frame, target = dataset.frame, dataset.target
    if data is None:
        return prepare(dataset.X, None), dataset.y
    columns, target = data.get("columns"), data.get("target")
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise _CannotRebuild(f"load run {entry.run_id} has no columns {missing}")
        kept = [c for c in frame.columns if c in set(columns) or c == target]
        frame = frame[kept]
    if data.get("fingerprint") and fingerprint(frame) != data["fingerprint"]:
        raise _CannotRebuild(
            f"the chain was fitted on data derived from load run {entry.run_id} "
            f"({entry.key}) in a way not recorded: its snapshot gives fingerprint "
            f"{fingerprint(frame)}, the chain was fitted on {data['fingerprint']}"
        )
    X = frame.drop(columns=[target]) if target in frame.columns else frame
    if columns is not None:
        X = X[columns]
    y = frame[target] if target in frame.columns else None
    if data.get("as") == "ndarray":
        X = X.to_numpy()
    return prepare(X, None), y


def _loaded(entry: LineageEntry) -> StageResult:
    return StageResult(
        entry.stage,
        entry.key,
        entry.run_id,
        IDENTICAL,
        "snapshot read back, fingerprint verified",
    )


def _cannot(entry: LineageEntry, why: str) -> StageResult:
    return StageResult(entry.stage, entry.key, entry.run_id, CANNOT_REBUILD, why)


def _estimator(recipe: dict[str, Any], current_code: bool) -> Any:
    """The unfitted estimator the recipe recorded, or rebuilt from the code importable now."""
    run = recipe["run"]
    if "estimator" not in recipe:
        raise _CannotRebuild(
            f"run {run.info.run_id} recorded no unfitted estimator: "
            f"{recipe.get('no_estimator', 'unknown reason')}"
        )
    stored = recipe["estimator"]
    try:
        with quiet():
            blob = read_checked(
                run.info.run_id,
                f"{schema.STAGE_ARTIFACT}/{stored['file']}",
                run.data.tags.get(schema.RECIPE_DIGEST),
                f"{schema.RECIPE_DIGEST} tag",
            )
        recorded = loads(blob, stored["serializer"])
    except Exception as error:
        raise _CannotRebuild(
            f"the recorded estimator of run {run.info.run_id} cannot be loaded: {error}"
        ) from None
    if not current_code:
        return recorded
    try:
        return rebuild_current(recorded, recipe.get("registry", {}))
    except Exception as error:
        raise _CannotRebuild(
            f"it cannot be rebuilt from the code importable now: {type(error).__name__}: {error}"
        ) from None


def _refit(
    client: Any,
    stages: list[LineageEntry],
    recipes: dict[str, dict[str, Any] | str],
    X: Any,
    y: Any,
    current_code: bool,
    metrics: dict[str, tuple[float, float]],
    changed_code: set[str],
) -> list[StageResult]:
    """Refit the stages in order on ``X, y``; compare each with the original fitted stage.

    With ``current_code``, the first stage that differs is also refitted from its
    recorded code; if that one comes out as the original, its run id goes into
    ``changed_code``.
    """
    results: list[StageResult] = []
    new_in, old_in = X, X
    unfitted: list[tuple[str, Any]] = []
    for position, entry in enumerate(stages):
        last = position == len(stages) - 1
        recipe = recipes[entry.run_id]
        try:
            if isinstance(recipe, str):
                raise _CannotRebuild(recipe)
            if recipe["fit_params"]:
                raise _CannotRebuild(
                    f"it was fitted with fit parameters {recipe['fit_params']}, whose values "
                    "are not recorded"
                )
            est = _estimator(recipe, current_code)
            try:
                original, _, _ = load_step(recipe["run"])
            except Exception as error:
                raise _CannotRebuild(
                    f"the original fitted stage cannot be loaded: {error}"
                ) from None
        except _CannotRebuild as error:
            results.append(_cannot(entry, str(error)))
            results += [
                _cannot(e, f"stage {entry.stage} cannot be rebuilt") for e in stages[position + 1 :]
            ]
            return results
        unfitted.append((entry.stage, clone(est, safe=False)))
        config = recipe["environment"].get("sklearn_config", {})
        now = sklearn.get_config()
        method = recipe["method"] if last else None
        try:
            with sklearn.config_context(**{k: v for k, v in config.items() if k in now}):
                result, old_out, out = _refit_one(entry, original, est, old_in, new_in, y, method)
                if current_code and result.status == DIFFERS and not _differed(results):
                    # Is it the code? The recorded code, refitted on the same input,
                    # tells: if it gives the original output, what changed is the code.
                    recorded = _estimator(recipe, current_code=False)
                    then, _, _ = _refit_one(entry, original, recorded, old_in, new_in, y, method)
                    if then.status == IDENTICAL:
                        changed_code.add(entry.run_id)
            old_in, new_in = old_out, out
        except Exception as error:
            results.append(_cannot(entry, f"its refit failed: {type(error).__name__}: {error}"))
            results += [
                _cannot(e, f"stage {entry.stage} cannot be rebuilt") for e in stages[position + 1 :]
            ]
            return results
        results.append(result)
        if last:
            metrics.update(_metrics(client, entry, recipe, unfitted, est, X, y))
    return results


def _differed(results: list[StageResult]) -> bool:
    return any(r.status == DIFFERS for r in results)


def _refit_one(
    entry: LineageEntry,
    original: Any,
    est: Any,
    old_in: Any,
    new_in: Any,
    y: Any,
    method: str | None,
) -> tuple[StageResult, Any, Any]:
    """Fit ``est`` on ``new_in`` and compare it with ``original`` on ``old_in``.

    Returns the comparison and the outputs each gives the next stage: the original's
    ``transform``, and the refit's ``fit_transform`` output, as the chain was fitted.
    """
    out = fit_step(est, new_in, y, {}, method)
    if method in ("fit", "fit_predict") and hasattr(est, "predict"):
        return _compare_predictions(entry, original, old_in, est, new_in), None, None
    old_out = original.transform(old_in)
    new_out = out if method == "fit_transform" else est.transform(new_in)
    return _compare(entry, old_out, new_out, "outputs"), old_out, out


def _compare_predictions(
    entry: LineageEntry, original: Any, old_in: Any, est: Any, new_in: Any
) -> StageResult:
    then, now = np.asarray(original.predict(old_in)), np.asarray(est.predict(new_in))
    result = _compare(entry, then, now, "predictions")
    if (
        result.status == IDENTICAL
        and hasattr(est, "predict_proba")
        and hasattr(original, "predict_proba")
    ):
        probabilities = _compare(
            entry, original.predict_proba(old_in), est.predict_proba(new_in), "probabilities"
        )
        if probabilities.status != IDENTICAL:
            return probabilities
        return dataclasses.replace(result, reason="same predictions and probabilities")
    return result


def _as_frame(values: Any) -> pd.DataFrame:
    if hasattr(values, "toarray"):  # a sparse matrix
        values = values.toarray()
    if isinstance(values, pd.DataFrame):
        return values.reset_index(drop=True)
    if isinstance(values, pd.Series):
        return values.reset_index(drop=True).to_frame()
    array = np.asarray(values)
    return pd.DataFrame(array.reshape(len(array), -1) if array.ndim != 2 else array)


def _compare(entry: LineageEntry, then: Any, now: Any, what: str) -> StageResult:
    """Compare two outputs: identical when their fingerprints match, else how much changed."""
    old, new = _as_frame(then), _as_frame(now)
    if old.shape != new.shape:
        return StageResult(
            entry.stage,
            entry.key,
            entry.run_id,
            DIFFERS,
            f"its {what} have shape {new.shape}, they had {old.shape}",
        )
    old.columns = new.columns = range(old.shape[1])  # compared by position
    if fingerprint(old) == fingerprint(new):
        return StageResult(entry.stage, entry.key, entry.run_id, IDENTICAL, f"same {what}")
    changed_cells = ~((old == new) | (old.isna() & new.isna()))
    rows = what in ("predictions", "probabilities")
    changed = float(changed_cells.any(axis=1).mean() if rows else changed_cells.to_numpy().mean())
    largest = None
    numeric = [c for c in old.columns if _numeric(old[c]) and _numeric(new[c])]
    if numeric:
        gaps = (old[numeric].astype(float) - new[numeric].astype(float)).abs().to_numpy()
        largest = float(np.nanmax(gaps)) if np.isfinite(gaps).any() else None
    how = f"{what} changed on {changed:.1%} of rows" if rows else f"{changed:.1%} of {what} changed"
    if largest is not None:
        how += f", largest difference {largest:.6g}"
    if changed == 0.0:
        how = f"the {what} differ only in their types"
    return StageResult(entry.stage, entry.key, entry.run_id, DIFFERS, how, changed, largest)


def _numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _metrics(
    client: Any,
    entry: LineageEntry,
    recipe: dict[str, Any],
    unfitted: list[tuple[str, Any]],
    fitted: Any,
    X: Any,
    y: Any,
) -> dict[str, tuple[float, float]]:
    """The final run's logged evaluation against the same evaluation of the rebuilt chain."""
    run = client.get_run(entry.run_id)
    logged = run.data.metrics
    tags = run.data.tags
    if schema.BEST_SCORE in logged and hasattr(fitted, "best_score_"):
        return {schema.BEST_SCORE: (logged[schema.BEST_SCORE], float(fitted.best_score_))}
    evaluation = recipe.get("evaluation")
    if tags.get(schema.EVALUATION) != schema.EVALUATED_BY_CROSS_VALIDATION or not evaluation:
        return {}
    if evaluation.get("unrecorded"):
        return {}
    from mlpipe._evaluation import _CLASSIFIER_SCORING, _REGRESSOR_SCORING

    final = unfitted[-1][1]
    cv = evaluation["cv"]
    if isinstance(cv, dict):
        module, _, name = cv["class"].rpartition(".")
        cv = getattr(importlib.import_module(module), name)(**cv["params"])
    scoring = evaluation["scoring"] or list(
        _CLASSIFIER_SCORING if is_classifier(final) else _REGRESSOR_SCORING
    )
    names = list(scoring) if isinstance(scoring, list | dict) else ["score"]
    splitter = check_cv(cv, y, classifier=is_classifier(final))
    scores = cross_validate(
        Pipeline([(n, clone(e, safe=False)) for n, e in unfitted]),
        X,
        y,
        cv=splitter,
        scoring=scoring,
    )
    found = {}
    for name in names:
        metric = f"{schema.CV_PREFIX}{name}_mean"
        key = (
            "test_score"
            if name == "score" and not isinstance(scoring, list | dict)
            else f"test_{name}"
        )
        if metric in logged and key in scores:
            found[metric] = (logged[metric], float(np.mean(scores[key])))
    return found


def _environment_changes(recipes: list[dict[str, Any]]) -> dict[str, tuple[str | None, str | None]]:
    """What changed since the fit: Python, the platform, and every recorded package."""
    changes: dict[str, tuple[str | None, str | None]] = {}
    for recipe in recipes:
        then = recipe["environment"]
        if then.get("python") != platform.python_version():
            changes["python"] = (then.get("python"), platform.python_version())
        if then.get("platform") != platform.platform():
            changes["platform"] = (then.get("platform"), platform.platform())
        for name, version in then.get("packages", {}).items():
            try:
                now: str | None = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                now = None
            if now != version:
                changes[name] = (version, now)
    return changes


def _cause(
    results: list[StageResult],
    recipes: dict[str, dict[str, Any] | str],
    environment: dict[str, tuple[str | None, str | None]],
    changed_code: set[str],
    metrics: dict[str, tuple[float, float]],
) -> str | None:
    """The most likely cause of the first difference, or of the first stage not rebuilt."""
    first = next((r for r in results if r.status != IDENTICAL), None)
    if first is None:
        moved = [name for name, (logged, now) in metrics.items() if logged != now]
        final = recipes.get(results[-1].run_id) if results else None
        if not moved:
            return None
        if isinstance(final, dict) and final.get("not_seeded"):
            return f"not seeded ({', '.join(final['not_seeded'])} left at None): {moved} moved"
        return f"the evaluation gives other scores ({', '.join(moved)}) on the same fitted chain"
    if first.status == CANNOT_REBUILD:
        return first.reason
    recipe = recipes.get(first.run_id)
    if not isinstance(recipe, dict):
        return None
    if first.run_id in changed_code:
        return "changed code (the recorded code still gives the original result)"
    if recipe.get("not_seeded"):
        return f"not seeded ({', '.join(recipe['not_seeded'])} left at None)"
    mine = set(recipe["environment"].get("packages", {}))
    packages = {k: v for k, v in environment.items() if k in mine}
    if packages:
        changed = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in packages.items())
        return f"changed package ({changed})"
    if "python" in environment:
        return "changed Python ({} -> {})".format(*environment["python"])
    if "platform" in environment:
        return "changed platform ({} -> {})".format(*environment["platform"])
    return "cause not found (the same code, packages, data and seeds gave other results)"


def _log(client: Any, report: Reproduction, final: LineageEntry) -> str:
    """Log the ``reproduce`` run fitted on the reproduced run; return its id."""
    run = client.get_run(final.run_id)
    first = report.first_difference
    tags = {
        schema.REPRODUCE_VERDICT: report.verdict,
        schema.REPRODUCE_CURRENT_CODE: str(report.current_code).lower(),
        schema.NOTE: f"Reproduction of {final.stage} run {final.key}:\n\n```\n{report}\n```",
        **({schema.REPRODUCE_FIRST_DIFFERENCE: first.stage} if first is not None else {}),
    }
    with store.stage_run(
        client,
        stage=schema.REPRODUCE_STAGE,
        type_=final.type,
        project=_project_of(client, run),
        upstream=[(final.stage, final.key, final.run_id)],
        tags=tags,
    ) as logged:
        client.log_dict(logged.run_id, report.to_dict(), schema.REPRODUCE_REPORT)
        return logged.run_id
