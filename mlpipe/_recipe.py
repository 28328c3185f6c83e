"""A stage's rebuild recipe: what refitting it needs, recorded when it is fitted.

The recipe does not depend on the fitted pickle. Each stage run that fits a stage
stores two files next to it, under ``stage/``:

- ``recipe.pkl`` (or ``recipe.skops``): the *unfitted* estimator, a clone taken
  before the fit, saved by the same serializer as the fitted stage, so classes from
  ``__main__`` or a local module travel with it;
- ``recipe.json``: what else the fit depended on: the estimator's parameters, the
  fit parameters' names, the columns and target it was trained on, the versions of
  the packages its code comes from, the Python version and platform, scikit-learn's
  global configuration, which registered logic or algorithm built it, and for the
  final stage how it was evaluated.

:func:`mlpipe.reproduce` reads both to refit the stage. A stage with a
``random_state`` left at None is *not seeded*: its refit may differ. It is flagged at
fit time with a warning naming the parameter and the tag ``mlpipe.not_seeded``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import logging
import platform
import sys
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sklearn
from sklearn.base import clone

from mlpipe import schema
from mlpipe._cache import digest
from mlpipe.model._serialize import dumps, installed_distribution, installed_versions

__all__ = [
    "RECIPE_VERSION",
    "environment",
    "not_seeded",
    "rebuild_current",
    "registered_parts",
    "unfitted_copy",
    "write",
]

logger = logging.getLogger("mlpipe")

# The version of recipe.json's layout; reproduce reads the versions it knows.
RECIPE_VERSION = 1
# What a stage's result depends on beyond the modules its pickle names.
_BASE_PACKAGES = ("numpy", "scipy", "pandas", "scikit-learn")


def unfitted_copy(est: Any) -> tuple[Any, str | None]:
    """A clone of ``est`` taken before its fit, or None and why there is none."""
    try:
        return clone(est, safe=False), None
    except Exception as error:  # a user's object that neither clones nor deep-copies
        return None, f"it could not be cloned before its fit: {error!r}"


def _ignores_random_state(est: Any) -> bool:
    """Whether ``est`` draws no random numbers with its settings, whatever its random_state.

    Only for the common estimators whose documentation says so (LogisticRegression
    and Ridge with a solver that draws nothing, TunedThresholdClassifierCV without a
    fractional cv, DummyClassifier with a strategy that draws nothing); any other
    random_state left at None counts as not seeded.
    """
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import TunedThresholdClassifierCV

    solver = getattr(est, "solver", None)
    if isinstance(est, LogisticRegression):
        return solver not in ("sag", "saga", "liblinear")
    if isinstance(est, Ridge):
        return solver not in ("sag", "saga")
    if isinstance(est, TunedThresholdClassifierCV):
        # Its random_state only draws a train/test split when cv is a fraction.
        return not isinstance(est.cv, float)
    if isinstance(est, DummyClassifier):
        return est.strategy not in ("stratified", "uniform")
    return False


def not_seeded(est: Any) -> list[str]:
    """The parameter paths of ``est`` (nested estimators included) whose random_state is None.

    >>> from sklearn.ensemble import RandomForestClassifier
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> not_seeded(make_pipeline(StandardScaler(), RandomForestClassifier()))
    ['randomforestclassifier__random_state']
    >>> not_seeded(RandomForestClassifier(random_state=0))
    []
    >>> from sklearn.dummy import DummyClassifier
    >>> not_seeded(DummyClassifier()), not_seeded(DummyClassifier(strategy="uniform"))
    ([], ['random_state'])
    """
    found = []
    for path, obj in walk(est):
        params = _params(obj)
        if (
            "random_state" in params
            and params["random_state"] is None
            and not _ignores_random_state(obj)
        ):
            found.append(_join(path, "random_state"))
    return found


def walk(est: Any, path: str = "") -> list[tuple[str, Any]]:
    """``est`` and every estimator inside it, with the parameter path that reaches it."""
    found = [(path, est)]
    for name, value in _params(est).items():
        for child_path, child in _children(path, name, value):
            found.extend(walk(child, child_path))
    return found


def _params(obj: Any) -> dict[str, Any]:
    if not hasattr(obj, "get_params") or isinstance(obj, type):
        return {}
    try:
        return dict(obj.get_params(deep=False))
    except Exception:
        return {}


def _join(path: str, name: str) -> str:
    return f"{path}__{name}" if path else name


def _is_estimator(value: Any) -> bool:
    return hasattr(value, "get_params") and not isinstance(value, type)


def _is_step(item: Any) -> bool:
    """A Pipeline step or ColumnTransformer transformer: ``(name, estimator, ...)``."""
    return (
        isinstance(item, tuple)
        and len(item) >= 2
        and isinstance(item[0], str)
        and _is_estimator(item[1])
    )


def _children(path: str, name: str, value: Any) -> list[tuple[str, Any]]:
    """The estimators inside parameter ``name``, each with its path, as get_params(deep=True)."""
    if _is_estimator(value):
        return [(_join(path, name), value)]
    if isinstance(value, list | tuple):
        return [(_join(path, item[0]), item[1]) for item in value if _is_step(item)]
    return []


def packages(modules: set[str]) -> dict[str, str]:
    """``{distribution: version}`` of the installed distributions providing ``modules``."""
    names = set(_BASE_PACKAGES)
    for module in modules:
        distribution = installed_distribution(module)
        if distribution:
            names.add(distribution)
    return installed_versions(names)


def environment(modules: Iterable[str] = ()) -> dict[str, Any]:
    """Python, platform, packages and scikit-learn's configuration, as recorded or now."""
    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "packages": packages(set(modules)),
        "sklearn_config": {k: v for k, v in sklearn.get_config().items() if _plain(v)},
    }


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _cv_recipe(cv: Any) -> Any:
    """The evaluation's cv as JSON: an int or None as is, a splitter as class and parameters."""
    if cv is None or isinstance(cv, int):
        return cv
    if not hasattr(cv, "split"):  # an iterable of splits: not recorded
        return None
    cls = type(cv)
    try:
        names = [
            p
            for p in inspect.signature(cls.__init__).parameters
            if p != "self" and p not in ("args", "kwargs")
        ]
        params = {p: getattr(cv, p) for p in names}
    except (AttributeError, TypeError, ValueError):
        return None
    if not all(_plain(v) for v in params.values()):
        return None
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "params": params}


def _scoring_recipe(scoring: Any) -> Any:
    if scoring is None or isinstance(scoring, str):
        return scoring
    if isinstance(scoring, list | tuple | set) and all(isinstance(s, str) for s in scoring):
        return sorted(scoring) if isinstance(scoring, set) else list(scoring)
    if isinstance(scoring, dict) and all(isinstance(s, str) for s in scoring.values()):
        return dict(scoring)
    return None


def write(
    folder: Path,
    *,
    unfitted: Any,
    why_no_copy: str | None,
    serializer: str,
    modules: set[str],
    method: str | None,
    fit_params: list[str],
    data: dict[str, Any],
    registry: dict[str, Any],
    evaluation: tuple[Any, Any] | None,
    seedless: list[str],
) -> dict[str, str]:
    """Write the recipe files into ``folder``; return the tags the stage run gets.

    ``evaluation`` is the final stage's ``(cv, scoring)``, None for another stage.
    """
    recipe: dict[str, Any] = {
        "recipe_version": RECIPE_VERSION,
        "method": method,
        "fit_params": sorted(fit_params),
        "data": data,
        "environment": environment(modules),
    }
    tags: dict[str, str] = {}
    if unfitted is not None:
        try:
            blob, used, _ = dumps(unfitted, serializer)
        except Exception as error:
            why_no_copy = f"its unfitted copy could not be saved: {error!r}"
        else:
            name = _file(used)
            (folder / name).write_bytes(blob)
            recipe["estimator"] = {"file": name, "serializer": used}
            tags[schema.RECIPE_DIGEST] = digest(blob)
            try:
                params = unfitted.get_params(deep=True) if _is_estimator(unfitted) else {}
            except Exception:  # a user's get_params: the pickle above is what counts
                params = {}
            recipe["params"] = {k: _describe(v) for k, v in sorted(params.items())}
    if why_no_copy is not None:
        recipe["no_estimator"] = why_no_copy
    if registry:
        recipe["registry"] = registry
    if evaluation is not None:
        cv, scoring = evaluation
        recipe["evaluation"] = {"cv": _cv_recipe(cv), "scoring": _scoring_recipe(scoring)}
        if cv is not None and recipe["evaluation"]["cv"] is None:
            recipe["evaluation"]["unrecorded"] = f"cv={cv!r} cannot be recorded"
        if scoring is not None and recipe["evaluation"]["scoring"] is None:
            recipe["evaluation"]["unrecorded"] = f"scoring={scoring!r} cannot be recorded"
    if seedless:
        recipe["not_seeded"] = seedless
        tags[schema.NOT_SEEDED] = ",".join(seedless)
    (folder / schema.RECIPE_FILE).write_text(json.dumps(recipe, indent=1, default=str))
    return tags


def _file(serializer: str) -> str:
    return schema.RECIPE_SKOPS_FILE if serializer == "skops" else schema.RECIPE_PICKLE


def _describe(value: Any) -> Any:
    """A parameter for people to read: as is when plain, else its repr, at most 300 characters."""
    if _plain(value):
        return value
    text = repr(value)
    return text if len(text) <= 300 else f"{text[:297]}..."


def rebuild_current(obj: Any, registry: dict[str, Any], path: str = "") -> Any:
    """``obj`` rebuilt from the code importable now, with the parameters it has.

    Each estimator (nested ones too) is made again from its class as imported now,
    and each function from the function of the same name; a part that a registered
    logic or algorithm built (``registry``: parameter path to how it was built) is
    built by what is registered under that name now.

    Raises
    ------
    ImportError, AttributeError
        If a class or function is not importable now.
    """
    if path in registry:
        return _build_registered(registry[path])
    if isinstance(obj, types.FunctionType):
        return _current_object(obj)
    if not _is_estimator(obj):
        return obj
    params = {}
    for name, value in _params(obj).items():
        if _is_estimator(value) or isinstance(value, types.FunctionType):
            params[name] = rebuild_current(value, registry, _join(path, name))
        elif isinstance(value, list | tuple) and any(_is_step(item) for item in value):
            params[name] = type(value)(
                (item[0], rebuild_current(item[1], registry, _join(path, item[0])), *item[2:])
                if _is_step(item)
                else item
                for item in value
            )
        else:
            params[name] = value
    return _current_object(type(obj))(**params)


def _current_object(obj: Any) -> Any:
    """The class or function of ``obj``'s module and qualified name, as importable now."""
    module_name, qualname = obj.__module__, obj.__qualname__
    if module_name == "__main__" or "<locals>" in qualname:
        return obj  # nothing to import it from: the recorded one is the only one
    found: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def registered_parts(est: Any) -> dict[str, Any]:
    """How registered logics or algorithms built ``est`` or parts of it, by parameter path."""
    from mlpipe._registry import built_by

    return {path: how for path, obj in walk(est) if (how := built_by(obj)) is not None}


def _build_registered(how: dict[str, Any]) -> Any:
    from mlpipe._registry import ALGORITHMS, LOGICS

    registry = LOGICS if how["kind"] == "logic" else ALGORITHMS
    return registry.build(how["name"], how.get("params") or {}, target_type=how.get("target_type"))
